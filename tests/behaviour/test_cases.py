"""Every rule's paired cases, run over HTTP (tests/cases/*.yaml), and the meta-test
that fails when a rule lacks a positive or a negative case. The comparison and the pairing
check are cds_service/knowledge/cases.py's, which `cds-service knowledge check` and
`knowledge test RULE` run too."""
from __future__ import annotations

from collections import Counter

import pytest
from case_cards import CASES, seed_feedback
from casebuilder import GATE_WORDS, build_request, explain_case, negative_kind
from conformance import assert_conformant
from helpers import FIXTURES, NOW

from cds_service.knowledge.cases import card_key, compare, expected_rules, pairing_problems


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(app, hooks, case):
    request = build_request(case)
    seed_feedback(app, request, case.get("feedback", []))
    response = hooks.call(request)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_conformant(body)
    differences = compare(case, body["cards"])
    if differences:
        got = Counter(card_key(c) for c in body["cards"])
        want = Counter((e["rule"], e["indicator"], tuple(e.get("merged_rules", ()))) for e in case["expect"])
        differences.append(explain_case(app, case, got, want))
    assert differences == [], "\n".join(differences)


def test_every_rule_has_a_positive_and_a_negative_case(app):
    assert pairing_problems(app.extensions["cds"].knowledge, CASES, FIXTURES, NOW) == []


@pytest.mark.parametrize("case", [c for c in CASES if c["rule"] not in expected_rules(c)],
                         ids=lambda c: c["id"])
def test_a_negative_case_tests_the_rule_or_names_the_gate(app, case):
    """A negative case on another hook, or for a patient outside the rule's module, tests a gate,
    not the rule: it must say so (tests_gate: hook | module), and what it says must be true."""
    kind = negative_kind(app.extensions["cds"].knowledge, case)
    assert kind == case.get("tests_gate", "rule"), f"{case['id']} ({case['rule']}): {GATE_WORDS[kind]}"
