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
from helpers import FIXTURES, NOW, SERVICES

from cds_service.knowledge.cases import card_key, compare, expected_rules, pairing_problems


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    """One app for the cases without stored feedback, as served() in case_cards does: a call
    leaves only issued cards behind, which change no later answer. A case that seeds feedback
    gets an app and a database of its own."""
    from cds_service import create_app

    return create_app({"TESTING": True, "AUTH_REQUIRED": False, "CLOCK": lambda: NOW, "OPEN_FHIR_SERVERS": [],
                       "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('cases') / 'shared.sqlite3'}",
                       "PATIENT_KEY_SECRET": "test-only-patient-key-secret"})


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(request, shared_app, case):
    app = request.getfixturevalue("app") if case.get("feedback") else shared_app
    call = build_request(case)
    seed_feedback(app, call, case.get("feedback", []))
    response = app.test_client().post(f"/cds-services/{SERVICES[call['hook']]}", json=call)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_conformant(body)
    differences = compare(case, body["cards"])
    if differences:
        got = Counter(card_key(c) for c in body["cards"])
        want = Counter((e["rule"], e["indicator"], tuple(e.get("merged_rules", ()))) for e in case["expect"])
        differences.append(explain_case(app, case, got, want))
    assert differences == [], "\n".join(differences)


def test_every_rule_has_a_positive_and_a_negative_case(shared_app):
    assert pairing_problems(shared_app.extensions["cds"].knowledge, CASES, FIXTURES, NOW) == []


@pytest.mark.parametrize("case", [c for c in CASES if c["rule"] not in expected_rules(c)],
                         ids=lambda c: c["id"])
def test_a_negative_case_tests_the_rule_or_names_the_gate(shared_app, case):
    """A negative case on another hook, or for a patient outside the rule's module, tests a gate,
    not the rule: it must say so (tests_gate: hook | module), and what it says must be true."""
    kind = negative_kind(shared_app.extensions["cds"].knowledge, case)
    assert kind == case.get("tests_gate", "rule"), f"{case['id']} ({case['rule']}): {GATE_WORDS[kind]}"
