"""cds_service.core.decision: one call's whole rule path without IO: the override window holds back
a covered warning but never a critical card, the site's silent and off rules are honoured, a
DSTU2/STU3 call gets one card saying nothing was checked, and missing data is said, not silent."""
from __future__ import annotations

from corecalls import CHART_OPEN, MORPHINE, SUCCINYLCHOLINE, body, call
from coreknowledge import NOW, knowledge
from helpers import rule_ids

from cds_service.core.cards import CHECKS_NOT_RUN_TOPIC, FHIR_VERSION_TOPIC
from cds_service.core.decision import decide
from cds_service.core.site import SitePolicy

OPIOID = "mcas.histamine-releasing-opioid"
BLOCKER = "mcas.neuromuscular-blocker"


def _decide(request_body, **kwargs):
    service, request = call(request_body)
    return decide(service, request, request.prefetch, knowledge(), NOW, **kwargs)


def test_the_cards_and_what_storage_keeps_agree():
    decision = _decide(body(MORPHINE))
    assert rule_ids(decision.cards) == [OPIOID]
    assert [c.rule_id for c in decision.issued] == rule_ids(decision.cards)
    assert [c.uuid for c in decision.issued] == [c["uuid"] for c in decision.cards]
    assert decision.skipped == [] and decision.failed == [] and decision.not_run == []
    assert [f.rule.id for f in decision.findings] == [OPIOID]


def test_the_same_call_twice_gives_the_same_cards_with_new_ids():
    one, two = _decide(body(MORPHINE)), _decide(body(MORPHINE))
    assert rule_ids(one.cards) == rule_ids(two.cards)
    assert {c["uuid"] for c in one.cards}.isdisjoint(c["uuid"] for c in two.cards)


def test_an_override_with_a_reason_holds_back_the_same_warning_and_says_so():
    key = _decide(body(MORPHINE)).issued[0].item_keys[0]
    decision = _decide(body(MORPHINE), overridden={(OPIOID, key)})
    assert decision.cards == [] and decision.issued == []
    assert decision.suppressed == [OPIOID] and decision.held_back == [(OPIOID, key)]


def test_an_override_at_a_lower_dose_does_not_hold_back_a_higher_one():
    key = _decide(body(MORPHINE)).issued[0].item_keys[0]  # "7052|oral|15"
    drug, route, dose = key.split("|")
    lower = f"{drug}|{route}|{float(dose) / 2:g}"
    assert rule_ids(_decide(body(MORPHINE), overridden={(OPIOID, lower)}).cards) == [OPIOID]
    assert rule_ids(_decide(body(MORPHINE), overridden={("mcas.other-rule", key)}).cards) == [OPIOID]


def test_a_critical_card_is_never_held_back_by_an_override():
    key = _decide(body(SUCCINYLCHOLINE)).issued[0].item_keys[0]
    decision = _decide(body(SUCCINYLCHOLINE), overridden={(BLOCKER, key)})
    assert rule_ids(decision.cards) == [BLOCKER] and decision.suppressed == []


def test_a_silent_rule_is_evaluated_and_kept_but_never_answered():
    decision = _decide(body(MORPHINE), site=SitePolicy(modes={OPIOID: "silent"}))
    assert decision.cards == []
    assert [(s.rule_id, s.indicator) for s in decision.silent] == [(OPIOID, "warning")]
    assert decision.silent[0].item_key == _decide(body(MORPHINE)).issued[0].item_keys[0]


def test_an_off_rule_is_not_evaluated_and_other_rules_still_answer():
    decision = _decide(body(MORPHINE), site=SitePolicy(modes={OPIOID: "off"}))
    assert decision.cards == [] and decision.silent == []
    assert rule_ids(_decide(body(SUCCINYLCHOLINE), site=SitePolicy(modes={OPIOID: "off"})).cards) == [BLOCKER]


def test_dstu2_data_gets_one_card_saying_nothing_was_checked():
    request_body = body(MORPHINE)
    request_body["context"]["draftOrders"]["entry"][0]["resource"]["resourceType"] = "MedicationOrder"
    decision = _decide(request_body)
    assert rule_ids(decision.cards) == [FHIR_VERSION_TOPIC]
    assert decision.notices == [FHIR_VERSION_TOPIC] and decision.issued[0].rule_id == FHIR_VERSION_TOPIC


def test_missing_data_for_an_open_module_ends_with_a_checks_not_run_card():
    request_body = body(CHART_OPEN)
    full = _decide(request_body)
    del request_body["prefetch"]["medications"]
    decision = _decide(request_body, unavailable={"medications": "the FHIR server timed out"})
    assert CHECKS_NOT_RUN_TOPIC not in rule_ids(full.cards)
    assert rule_ids(decision.cards)[-1] == CHECKS_NOT_RUN_TOPIC
    assert "medications" in decision.not_run and decision.notices == [CHECKS_NOT_RUN_TOPIC]
    assert "the FHIR server timed out" in decision.cards[-1]["detail"]
    assert set(decision.skipped) <= {r.id for m in knowledge().modules.values() for r in m.rules}


def test_every_card_names_the_knowledge_release_and_links_to_its_rule_page():
    decision = _decide(body(CHART_OPEN), rules_url="https://cds.example/rules")
    release = knowledge().release
    for card in decision.cards:
        assert release in card["extension"].values()
        assert card["source"]["url"].startswith("https://cds.example/rules")
