"""cds_service.core.conditions.medications: the order's drug, route, dose and course against a rule's
limits, the patient's active medications, and the other orders drafted together."""
from __future__ import annotations

from datetime import timedelta

import pytest
from coreknowledge import NOW, facts_of, holds
from hypothesis import given, settings
from hypothesis import strategies as st

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


def _order(code="892582", text="morphine sulfate 15 MG Oral Tablet", status="draft", oid="d1", pills=1.0,
           per_day=4, days=None, route=None, start=None):
    resource = {"resourceType": "MedicationRequest", "id": oid, "status": status, "intent": "order",
                "subject": {"reference": "Patient/p"},
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}] if code else [], "text": text},
                "dosageInstruction": [{"timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                                       "doseAndRate": [{"doseQuantity": {"value": pills, "system": UCUM, "code": "{pill}"}}]}]}
    if days is not None:
        resource["dispenseRequest"] = {"expectedSupplyDuration": {"value": days, "unit": "days", "code": "d", "system": UCUM}}
    if route is not None:
        resource["dosageInstruction"][0]["route"] = {"coding": [{"system": "http://snomed.info/sct", "code": route}]}
    if start is not None:
        resource["authoredOn"] = (NOW - timedelta(days=start)).date().isoformat()
    return resource


def _draft(*drafts, **data):
    facts = facts_of("order-sign", drafts=drafts, **{"medications": [], **data})
    return facts, facts.draft_medications[0]


def test_medication_holds_for_the_order_in_the_set_and_not_for_another():
    facts, morphine = _draft(_order())
    assert holds({"medication": "mcas-histamine-releasing-opioids"}, facts, morphine)
    assert not holds({"medication": "nsaids-non-aspirin"}, facts, morphine)
    assert not holds({"medication": "mcas-histamine-releasing-opioids"}, facts, None)  # a patient-level look


def test_an_uncoded_order_matches_by_name_and_the_card_says_so():
    from coreknowledge import condition

    facts, order = _draft(_order(code=None, text="morphine 15 mg tablet"))
    evidence = condition({"medication": "mcas-histamine-releasing-opioids"})(facts, order)
    assert evidence is not None and evidence[0].by_name


@settings(max_examples=25, deadline=None)
@given(pills=st.integers(min_value=1, max_value=4), per_day=st.integers(min_value=1, max_value=6),
       limit=st.sampled_from([15, 30, 60, 90]))
def test_dose_limits_compare_strictly_above(pills, per_day, limit):
    facts, order = _draft(_order(pills=pills, per_day=per_day))  # 15 mg a pill
    assert holds({"single_dose_mg_over": limit}, facts, order) == (15 * pills > limit)
    assert holds({"daily_dose_mg_over": limit}, facts, order) == (15 * pills * per_day > limit)


def test_an_unreadable_dose_is_flagged_and_never_over_a_limit():
    order = _order()
    order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {"value": 2, "system": "http://snomed.info/sct",
                                                                        "code": "999999"}
    facts, item = _draft(order)
    assert holds({"dose_unread": True}, facts, item)
    assert not holds({"daily_dose_mg_over": 0}, facts, item)


@pytest.mark.parametrize("days, over", [(3, False), (7, False), (8, True), (None, False)])
def test_a_planned_course_over_the_limit(days, over):
    facts, order = _draft(_order(days=days))
    assert holds({"course_days_over": 7}, facts, order) == over


def test_route_holds_for_its_routes_and_an_unstated_route_may_be_systemic():
    facts, oral = _draft(_order(route="26643006"))
    assert holds({"route": ["oral"]}, facts, oral) and not holds({"route": ["parenteral"]}, facts, oral)
    facts, unknown = _draft(_order(code=None, text="opioid"))
    from coreknowledge import condition

    evidence = condition({"route": ["parenteral"]})(facts, unknown)
    assert evidence is not None and "Route not stated" in evidence[0].text


def test_active_medication_reads_the_medication_list_and_how_long_it_has_been_taken():
    active = _order(code="197807", text="ibuprofen 800 MG Oral Tablet", status="active", oid="a1", start=100)
    facts = facts_of("patient-view", medications=[active])
    assert holds({"active_medication": "nsaids-non-aspirin"}, facts)
    assert holds({"active_medication": {"valueset": "nsaids-non-aspirin", "for_days_at_least": 90}}, facts)
    assert not holds({"active_medication": {"valueset": "nsaids-non-aspirin", "for_days_at_least": 120}}, facts)
    assert not holds({"active_medication": {"valueset": "nsaids-non-aspirin", "routes": ["topical"]}}, facts)
    stopped = {**active, "status": "stopped"}
    assert not holds({"active_medication": "nsaids-non-aspirin"}, facts_of("patient-view", medications=[stopped]))


def test_draft_medication_looks_at_the_other_orders_of_the_request_only():
    ibuprofen = _order(code="197807", text="ibuprofen 800 MG Oral Tablet", oid="d2")
    facts = facts_of("order-sign", drafts=(_order(), ibuprofen), medications=[])
    morphine, nsaid = facts.draft_medications
    assert holds({"draft_medication": "nsaids-non-aspirin"}, facts, morphine)
    assert not holds({"draft_medication": "nsaids-non-aspirin"}, facts, nsaid)  # not the item itself
    assert holds({"drafted_with": {"medication": "mcas-histamine-releasing-opioids"}}, facts, nsaid)
