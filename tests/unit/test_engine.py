"""Engine behaviour a clinician would notice: a broken rule does not hide the others,
missing data skips rules instead of guessing, patient-view ordering."""
from __future__ import annotations

import dataclasses

from casebuilder import build_request
from helpers import NOW, request_fixture, rule_ids

from cds_service.core.conditions import Predicate
from cds_service.core.engine import evaluate
from cds_service.core.facts import build_facts


def _explode(facts, item):
    raise ZeroDivisionError("boom")


def _setup(app, case):
    knowledge = app.extensions["cds"].knowledge
    request = build_request(case)
    facts = build_facts(request["hook"], request["context"], request["prefetch"], knowledge.terminology, NOW)
    return knowledge, facts


SIGN = {"hook": "order-sign", "patient": "mcas-adult", "drafts": [
    {"medication": {"rxcui": "892582", "text": "morphine sulfate 15 MG Oral Tablet"}},
    {"medication": {"rxcui": "1594589", "text": "succinylcholine chloride 20 MG/ML Injectable Solution"}}]}


def test_a_rule_that_raises_is_logged_by_id_and_the_other_cards_still_go_out(app, service_log):
    knowledge, facts = _setup(app, SIGN)
    mcas = knowledge.modules["mcas"]
    broken = tuple(dataclasses.replace(r, when=Predicate(_explode, r.when.needs, r.when.valuesets))
                   if r.id == "mcas.histamine-releasing-opioid" else r for r in mcas.rules)
    outcome = evaluate([dataclasses.replace(mcas, rules=broken)], facts)
    assert [f.rule.id for f in outcome.findings] == ["mcas.neuromuscular-blocker"]
    assert outcome.failed == ["mcas.histamine-releasing-opioid"]
    log = "\n".join(service_log)
    assert '"rule_id": "mcas.histamine-releasing-opioid"' in log and "ZeroDivisionError" in log


def test_rules_whose_data_is_missing_are_skipped_not_guessed(app):
    knowledge, facts = _setup(app, {"hook": "patient-view", "patient": "mcas-adult"})
    facts = dataclasses.replace(facts, available=facts.available - {"medications"})
    outcome = evaluate(list(knowledge.modules.values()), facts)
    assert "mcas.epinephrine-autoinjector" in outcome.skipped
    assert "mcas.epinephrine-autoinjector" not in [f.rule.id for f in outcome.findings]


def test_patient_view_puts_warnings_first_and_merges_each_modules_info_findings(app):
    knowledge, facts = _setup(app, {"hook": "patient-view", "patient": "mcas-ms-older-adult"})
    outcome = evaluate(list(knowledge.modules.values()), facts)
    indicators = [group[0].indicator for group in outcome.cards]
    assert indicators == sorted(indicators, key=["critical", "warning", "info"].index)
    for module in ("mcas", "ms-lbp"):
        info = [g for g in outcome.cards if g[0].indicator == "info" and g[0].rule.module == module]
        assert len(info) <= 1  # one card for all of a module's info findings
    merged = next(g for g in outcome.cards if len(g) > 1)  # the older adult has several mcas info findings
    assert {f.indicator for f in merged} == {"info"} and len({f.rule.module for f in merged}) == 1
    assert all(len(g) == 1 for g in outcome.cards if g[0].indicator != "info")
    assert sum(len(g) for g in outcome.cards) == len(outcome.findings)


def test_decide_gives_from_a_fixture_the_cards_the_endpoint_gives(app, hooks):
    from cds_service.core.decision import decide
    from cds_service.core.hooks import parse_hook_request

    knowledge = app.extensions["cds"].knowledge
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    service = knowledge.services["back-pain-order-select"]
    request = parse_hook_request(body, service.hook)
    decision = decide(service, request, request.prefetch, knowledge, NOW, rules_url="https://cds.example/rules")
    assert rule_ids(decision.cards) == rule_ids(hooks.cards(body)) != []
    assert [c.rule_id for c in decision.issued] == rule_ids(decision.cards)
    assert decision.skipped == [] and decision.failed == []


def test_a_record_that_cannot_be_read_fails_the_call_rather_than_dropping_the_rules_that_asked(client, monkeypatch):
    """The record is read when a rule first asks for it; a reader that fails is a bug in reading
    the chart, and no card computed without that part can be trusted: the call gets a clear 500,
    never a 200 that silently lacks the cards of the rules that asked."""
    import cds_service.core.facts as facts_module

    def broken(res):
        raise KeyError("bug in a reader")

    monkeypatch.setattr(facts_module, "_condition", broken)
    body = build_request({"hook": "patient-view", "patient": "mcas-adult"})
    response = client.post("/cds-services/back-pain-patient-view", json=body)
    assert response.status_code == 500
    assert response.get_json()["resourceType"] == "OperationOutcome"
