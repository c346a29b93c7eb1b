"""cds_service.core.conditions.procedures: a draft service request by code, by category, or by name
when it carries no code we know (never when negated), and the reason given on an order."""
from __future__ import annotations

import pytest
from coreknowledge import facts_of, holds

CPT = "http://www.ama-assn.org/go/cpt"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
NAMED = {"procedure_named": {"phrases": ["bed rest", "bedrest"]}}


def _request(code=None, text="MRI lumbar spine without contrast", reason=None, reason_text=None, category=None):
    resource = {"resourceType": "ServiceRequest", "id": "s1", "status": "draft", "intent": "order",
                "subject": {"reference": "Patient/p"},
                "code": {"coding": [{"system": CPT, "code": code}] if code else [], "text": text}}
    if reason or reason_text:
        resource["reasonCode"] = [{"coding": [{"system": ICD10CM, "code": reason}] if reason else [],
                                   **({"text": reason_text} if reason_text else {})}]
    if category:
        resource["category"] = [{"coding": [{"system": SNOMED, "code": category}]}]
    return resource


def _item(resource):
    facts = facts_of("order-sign", drafts=(resource,))
    return facts, facts.all_drafts[0]


def test_procedure_holds_for_a_code_in_the_set_and_only_for_service_requests():
    facts, mri = _item(_request("72148"))
    assert holds({"procedure": "lumbar-spine-imaging"}, facts, mri)
    assert not holds({"procedure": "spine-surgery"}, facts, mri)
    assert not holds({"procedure": "lumbar-spine-imaging"}, facts, None)


@pytest.mark.parametrize("text, named", [("Bed rest 3 days", True), ("strict BEDREST", True),
                                         ("no bed rest", False), ("avoid strict bedrest", False),
                                         ("bedrestless", False)])
def test_procedure_named_finds_whole_phrases_not_negated(text, named):
    facts, order = _item(_request(text=text))
    assert holds(NAMED, facts, order) == named


def test_procedure_named_is_a_last_resort_a_known_code_decides():
    facts, coded = _item(_request("72148", text="MRI, then bed rest"))
    assert not holds(NAMED, facts, coded)


def test_procedure_category_reads_system_and_code():
    facts, surgery = _item(_request(text="laminectomy", category="387713003"))
    assert holds({"procedure_category": [f"{SNOMED}|387713003"]}, facts, surgery)
    assert not holds({"procedure_category": [f"{SNOMED}|103693007"]}, facts, surgery)


def test_a_reason_in_the_set_holds_and_no_reason_only_when_none_is_given():
    facts, with_code = _item(_request("72148", reason="M54.50"))
    assert holds({"reason": "low-back-pain"}, facts, with_code)
    assert not holds({"no_reason": True}, facts, with_code)
    facts, in_words = _item(_request("72148", reason_text="back pain for 2 weeks"))
    assert not holds({"no_reason": True}, facts, in_words)  # a reason in words is still a reason
    facts, without = _item(_request("72148"))
    assert holds({"no_reason": True}, facts, without)


def test_order_says_reads_every_text_on_the_order():
    facts, order = _item(_request("72148", reason_text="red flags: cauda equina suspected"))
    assert holds({"order_says": {"phrases": ["cauda equina"]}}, facts, order)
    assert not holds({"order_says": {"phrases": ["epidural"]}}, facts, order)
