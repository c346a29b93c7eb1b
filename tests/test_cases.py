"""Every rule's paired cases, run over HTTP (tests/cases/*.yaml), and the meta-test
that fails when a rule lacks a positive or a negative case."""
from __future__ import annotations

from collections import Counter

import pytest

from casebuilder import GATE_WORDS, build_request, explain_case, negative_kind, no_such_rule
from case_cards import CASES, seed_feedback
from cds_service.core.cards import MERGED_RULES
from conformance import assert_conformant


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(app, hooks, case):
    request = build_request(case)
    seed_feedback(app, request, case.get("feedback", []))
    response = hooks.call(request)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_conformant(body)
    got = Counter(card_key(c) for c in body["cards"])
    want = Counter((e["rule"], e["indicator"], tuple(e.get("merged_rules", ()))) for e in case["expect"])
    assert got == want, f"{case['description']}: got {sorted(got)}\n{explain_case(app, case, got, want)}"
    for expectation in case["expect"]:
        card = next(c for c in body["cards"] if c["source"]["topic"]["code"] == expectation["rule"])
        for fragment in expectation.get("summary_contains", []):
            assert fragment.lower() in card["summary"].lower(), card["summary"]
        for fragment in expectation.get("detail_contains", []):
            assert fragment.lower() in card["detail"].lower(), card["detail"]
        for fragment in expectation.get("detail_excludes", []):
            assert fragment.lower() not in card["detail"].lower(), card["detail"]
        if "suggestions" in expectation:
            assert [s["label"] for s in card.get("suggestions", [])] == expectation["suggestions"]


def card_key(card):
    """What a case expects of a card: its rule id, indicator and, for a merged card, every rule
    merged into it in order (``merged_rules``; the first is the card's own rule id)."""
    return card["source"]["topic"]["code"], card["indicator"], tuple(card.get("extension", {}).get(MERGED_RULES, ()))


def expected_rules(case) -> set[str]:
    """Every rule a case expects a card from, merged info cards included."""
    return {r for e in case["expect"] for r in (e["rule"], *e.get("merged_rules", ()))}


def test_every_rule_has_a_positive_and_a_negative_case(app):
    knowledge = app.extensions["cds"].knowledge
    rules = {rule.id for module in knowledge.modules.values() for rule in module.rules}
    named = {case["rule"] for case in CASES} | {r for case in CASES for r in expected_rules(case)}
    assert [no_such_rule(r, rules) for r in sorted(named - rules)] == [], "cases name rules that do not exist"
    positive = {r for case in CASES for r in expected_rules(case)}
    negative = {case["rule"] for case in CASES
                if case["rule"] not in expected_rules(case) and negative_kind(knowledge, case) == "rule"}
    assert sorted(rules - positive) == [], "rules without a positive case"
    assert sorted(rules - negative) == [], "rules without a negative case on a hook it listens to, in its module"


@pytest.mark.parametrize("case", [c for c in CASES if c["rule"] not in expected_rules(c)],
                         ids=lambda c: c["id"])
def test_a_negative_case_tests_the_rule_or_names_the_gate(app, case):
    """A negative case on another hook, or for a patient outside the rule's module, tests a gate,
    not the rule: it must say so (tests_gate: hook | module), and what it says must be true."""
    kind = negative_kind(app.extensions["cds"].knowledge, case)
    assert kind == case.get("tests_gate", "rule"), f"{case['id']} ({case['rule']}): {GATE_WORDS[kind]}"
