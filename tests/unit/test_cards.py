"""cds_service.core.cards: findings become CDS Hooks 2.0 cards a clinician can trust: a short summary
that names the drug and keeps the risk, the rule as topic, override reasons on warnings, EHR text
made inert, created orders valid FHIR R4, and one record per card for storage."""
from __future__ import annotations

import copy
import gc
import re
import weakref

import pytest
from corecalls import CHART_OPEN, MORPHINE, SUCCINYLCHOLINE, body, facts
from coreknowledge import knowledge
from hypothesis import given
from hypothesis import strategies as st

from cds_service.core.cards import (
    CHECKS_NOT_RUN_TOPIC,
    FHIR_VERSION_TOPIC,
    KNOWLEDGE_RELEASE,
    MERGED_RULES,
    SUMMARY_LIMIT,
    build_cards,
    checks_not_run_card,
    dosage_instruction,
    escape,
    fhir_version_card,
    item_key,
    shorten,
    suggested_resource,
)
from cds_service.core.engine import evaluate
from cds_service.core.fhir import validate_resource
from cds_service.core.screen import Dosage

REASONS = "https://example.org/override-reasons"


def _cards(request_body, release="2026.12.0+sha256.x"):
    k = knowledge()
    call_facts = facts(request_body)
    service = k.services[{"patient-view": "back-pain-patient-view", "order-select": "back-pain-order-select",
                          "order-sign": "back-pain-order-sign"}[request_body["hook"]]]
    outcome = evaluate(list(service.modules), call_facts)
    cards, issued = build_cards(outcome.cards, call_facts, k.terminology, REASONS, "https://cds.example/rules",
                                release, k.screen)
    return outcome, cards, issued


@pytest.mark.parametrize("fixture", [MORPHINE, SUCCINYLCHOLINE, CHART_OPEN])
def test_every_card_keeps_the_cds_hooks_contract(fixture):
    outcome, cards, issued = _cards(body(fixture))
    assert cards and len(cards) == len(outcome.cards) == len(issued)
    assert len({c["uuid"] for c in cards}) == len(cards)
    for card, group, record in zip(cards, outcome.cards, issued, strict=True):
        assert len(card["summary"]) <= SUMMARY_LIMIT
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["topic"]["code"] == group[0].rule.id == record.rule_id
        assert record.uuid == card["uuid"]
        assert record.suggestion_uuids == tuple(s["uuid"] for s in card.get("suggestions", []))
        assert card["extension"][KNOWLEDGE_RELEASE] == "2026.12.0+sha256.x"
        if card["indicator"] != "info":
            assert card["overrideReasons"] and all(r["system"] == REASONS for r in card["overrideReasons"])
        assert all(value not in ("", [], {}, None) for value in card.values())  # empty members left out
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if "resource" in action:
                    validate_resource(action["resource"])


def test_a_merged_card_lists_every_rule_and_its_lead_is_the_topic():
    outcome, cards, issued = _cards(body(CHART_OPEN))
    merged = [(c, g, r) for c, g, r in zip(cards, outcome.cards, issued, strict=True) if len(g) > 1]
    assert merged
    for card, group, record in merged:
        assert card["extension"][MERGED_RULES] == [f.rule.id for f in group] == list(record.rule_ids)
        assert card["summary"].endswith(f"(+{len(group) - 1} more below)")


def test_a_long_drug_name_is_shortened_but_never_the_risk():
    request_body = body(MORPHINE)
    medication = request_body["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"]
    medication["text"] = medication["coding"][0]["display"] = "morphine sulfate " + "extended formulation " * 12
    _, cards, _ = _cards(request_body)
    summary = cards[0]["summary"]
    assert len(summary) <= SUMMARY_LIMIT
    assert summary.startswith("morphine") and "releases histamine" in summary


def test_ehr_text_reaches_the_card_inert():
    request_body = body(MORPHINE)
    medication = request_body["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"]
    medication["text"] = medication["coding"][0]["display"] = "morphine <img src=x onerror=alert(1)> [click](http://evil)"
    _, cards, _ = _cards(request_body)
    text = cards[0]["summary"] + cards[0]["detail"]
    assert "<img" not in text and "&lt;img" in text  # shown as text, never as a tag
    assert "[click](" not in text.replace("\\[", "").replace("\\]", "") and "\\[click\\](http://evil)" in text


@given(st.text(max_size=200))
def test_escaped_text_has_no_tag_no_control_character_and_no_bare_markdown(text):
    out = escape(text)
    assert "<" not in out and ">" not in out
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)
    assert not re.search(r"(?<!\\)(?:\\\\)*[\[\]`*_]", out.replace("\\\\", ""))


@given(st.text(max_size=300), st.integers(min_value=2, max_value=200))
def test_shorten_fits_the_limit_and_leaves_short_text_alone(text, limit):
    out = shorten(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    else:
        assert out.endswith("…")


def test_the_item_key_of_a_medication_is_its_ingredients_route_and_dose():
    outcome, _, _ = _cards(body(MORPHINE))
    finding = outcome.cards[0][0]
    assert item_key(finding, knowledge().terminology) == "7052|oral|15"  # 1 pill of the 15 mg tablet, by mouth


def test_a_patient_level_finding_is_remembered_by_the_empty_item():
    outcome, _, issued = _cards(body(CHART_OPEN))
    assert all(key == "" for record in issued for key in record.item_keys)
    assert all(f.item is None for g in outcome.cards for f in g)


def test_a_labels_starting_dose_becomes_a_valid_fhir_dosage_the_dose_reader_reads_back():
    from cds_service.core.dosing import read

    dosage = Dosage("1,000 mg every 6 hours as needed", (1000, "mg"), "26643006", every=(6, "h"), as_needed=True,
                    max_per_day=(3000, "mg"))
    instruction = dosage_instruction(dosage)
    validate_resource({"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
                       "subject": {"reference": "Patient/p"}, "medicationCodeableConcept": {"text": "x"},
                       "dosageInstruction": [instruction]})
    dose = read({"dosageInstruction": [instruction]}, None)
    assert dose.single_dose_mg == 1000 and dose.daily_dose_mg == 4000  # round trip through dosing
    assert instruction["route"]["coding"][0]["display"] == "Oral route"


def test_the_fhir_version_card_warns_that_nothing_was_checked():
    card = fhir_version_card("MedicationOrder <b>", REASONS, "r1")
    assert card["indicator"] == "warning" and card["source"]["topic"]["code"] == FHIR_VERSION_TOPIC
    assert "none of its checks ran" in card["detail"] and "<b>" not in card["detail"]
    assert card["extension"][KNOWLEDGE_RELEASE] == "r1"
    assert "extension" not in fhir_version_card("x", REASONS)


def test_the_checks_not_run_card_names_the_checks_and_the_data_in_words():
    rules = [r for m in knowledge().modules.values() for r in m.rules][:3]
    card = checks_not_run_card([(rules[0], frozenset({"medications"})), (rules[1], frozenset({"allergies"})),
                                (rules[2], frozenset({"medications"}))], {"medications": "the FHIR server timed out"},
                               REASONS)
    assert card["source"]["topic"]["code"] == CHECKS_NOT_RUN_TOPIC and card["indicator"] == "info"
    assert card["summary"].startswith("3 checks did not run")
    assert "medication orders: the FHIR server timed out" in card["detail"]
    assert "allergy list: not available for this call" in card["detail"]
    assert all(escape(r.title) in card["detail"] for r in rules)
    assert len(card["summary"]) <= SUMMARY_LIMIT


def test_the_suggested_resource_cache_lets_a_replaced_knowledge_go():
    """After a reload (SIGHUP) the knowledge built before must be collectable: the cache of built
    suggested resources held every knowledge's terminology it had seen, for the life of the process."""
    k = knowledge()
    action = next(a for module in k.modules.values() for rule in module.rules for s in rule.suggestions
                  for a in s.actions if a.kind == "create_medication")
    before = copy.copy(k.terminology)  # another knowledge's, as a reload builds
    gone = weakref.ref(before)
    assert suggested_resource(action, "p", before)["subject"] == {"reference": "Patient/p"}
    assert suggested_resource(action, "q", k.terminology)["subject"] == {"reference": "Patient/q"}
    del before
    gc.collect()
    assert gone() is None
