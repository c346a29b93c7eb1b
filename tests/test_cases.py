"""Every rule's paired cases, run over HTTP (tests/cases/*.yaml), and the meta-test
that fails when a rule lacks a positive or a negative case."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from casebuilder import build_request
from conformance import assert_conformant

CASES_DIR = Path(__file__).parent / "cases"
CASES = [case for path in sorted(CASES_DIR.glob("*.yaml")) for case in yaml.safe_load(path.read_text())["cases"]]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(hooks, case):
    response = hooks.call(build_request(case))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_conformant(body)
    got = Counter((c["source"]["topic"]["code"], c["indicator"]) for c in body["cards"])
    want = Counter((e["rule"], e["indicator"]) for e in case["expect"])
    assert got == want, f"{case['description']}: got {sorted(got)}"
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


def test_every_rule_has_a_positive_and_a_negative_case(app):
    rules = {rule.id for module in app.extensions["cds"].knowledge.modules.values() for rule in module.rules}
    positive = {e["rule"] for case in CASES for e in case["expect"]}
    negative = {case["rule"] for case in CASES if case["rule"] not in {e["rule"] for e in case["expect"]}}
    assert sorted(rules - positive) == [], "rules without a positive case"
    assert sorted(rules - negative) == [], "rules without a negative case"
    assert {case["rule"] for case in CASES} <= rules, "cases for rules that do not exist"
