"""``cds-service evaluate`` (issue 12 item 5): the knowledge author's inner loop. Cards as a
clinician reads them, which rule fired and why; exit 0 no card, 1 a card, 2 bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import FIXTURES

from cds_service.cli import main

NOW = ["--now", "2026-11-23T12:00:00Z"]  # the date the fixtures were written for


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, ["evaluate", *map(str, args)])


def test_a_card_is_printed_with_its_rule_and_evidence_and_exits_1(run):
    result = run(FIXTURES / "requests/order-select/mcas-adult--morphine-injection.json", *NOW)
    assert result.exit_code == 1, result.output
    out = result.output
    assert "back-pain-order-select (order-select): 1 card" in out
    assert "[WARNING] morphine injection: releases histamine" in out
    assert "rule: mcas.histamine-releasing-opioid (Morphine or codeine in mast cell disease)" in out
    assert "    - Condition: Idiopathic mast cell activation syndrome, ICD-10-CM D89.42" in out
    assert "suggestion: Replace with fentanyl injection (parenteral order) (recommended)" in out
    assert "    delete: Remove the draft order for 1 ML morphine sulfate 4 MG/ML Injection" in out
    assert "override reasons: Tolerated this before without a reaction" in out


def test_no_card_exits_0(run):
    result = run(FIXTURES / "requests/order-select/no-condition-adult--morphine.json", *NOW)
    assert result.exit_code == 0, result.output
    assert "0 cards" in result.output


def test_a_bundle_a_hook_and_drafts(run):
    result = run("--bundle", FIXTURES / "patients/mcas-adult.json", "--hook", "order-sign",
                 "--draft", FIXTURES / "requests/order-select/mcas-adult--succinylcholine.json",
                 "--draft", FIXTURES / "requests/order-select/mcas-adult--morphine.json", *NOW, "--json")
    assert result.exit_code == 1, result.output
    body = json.loads(result.output)
    assert [f["rule"] for f in body["fired"]] == ["mcas.neuromuscular-blocker", "mcas.histamine-releasing-opioid"]
    assert [c["indicator"] for c in body["cards"]] == ["critical", "warning"]
    assert any("succinylcholine" in e for e in body["fired"][0]["evidence"])


def test_patient_view_from_a_bundle_ignores_drafts(run):
    result = run("--bundle", FIXTURES / "patients/no-condition-adult.json", "--hook", "patient-view", *NOW)
    assert result.exit_code == 0, result.output


def test_the_date_matters_and_can_be_pinned(run):
    """Age 65 is a threshold: the older-adult persona (born 1955) is 71 either way, so check the
    date reaches the rules through the card text instead."""
    result = run(FIXTURES / "requests/patient-view/mcas-ms-older-adult--chart-open.json", *NOW)
    assert result.exit_code == 1 and "at age 71" in result.output


@pytest.mark.parametrize("args, message", [
    ((), "give a hook request file, or --bundle with --hook"),
    (("--bundle", FIXTURES / "patients/mcas-adult.json"), "--bundle needs --hook"),
    ((FIXTURES / "README.md",), "is not valid JSON"),
    ((FIXTURES / "patients/mcas-adult.json",), "$.hook: a hook request names its hook"),
    ((FIXTURES / "requests/order-select/mcas-adult--morphine.json", "--now", "yesterday"), "not an ISO 8601"),
])
def test_bad_input_exits_2_with_a_message(run, args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_request_without_its_required_data_exits_2(run, tmp_path):
    body = json.loads((FIXTURES / "requests/order-select/mcas-adult--morphine.json").read_text())
    del body["prefetch"]["conditions"]
    path = tmp_path / "no-conditions.json"
    path.write_text(json.dumps(body))
    result = run(path, *NOW)
    assert result.exit_code == 2 and "required data could not be obtained: conditions" in result.output


def test_as_a_subprocess_the_exit_status_says_whether_a_card_was_issued():
    command = [sys.executable, "-m", "cds_service", "evaluate", *NOW, "--json"]
    card = subprocess.run([*command, str(FIXTURES / "requests/order-select/mcas-adult--succinylcholine.json")],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    silent = subprocess.run([*command, str(FIXTURES / "requests/order-select/no-condition-adult--succinylcholine.json")],
                            capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert (card.returncode, silent.returncode) == (1, 0), card.stderr + silent.stderr
    assert json.loads(card.stdout)["fired"][0]["rule"] == "mcas.neuromuscular-blocker"
    assert json.loads(silent.stdout)["cards"] == []


def test_a_bundle_carries_statements_into_the_offline_call_as_the_live_service_reads_them(app):
    """An auto-injector the patient reports (MedicationStatement) counts as present in the live
    service; the offline evaluation of a Bundle (and so the preview console) must agree."""
    from helpers import NOW, rule_ids

    from cds_service.knowledge.evaluate import evaluate_request, request_from_bundle

    knowledge = app.extensions["cds"].knowledge
    bundle = json.loads((FIXTURES / "patients/mcas-adult.json").read_text())
    before = rule_ids(evaluate_request(knowledge, request_from_bundle(bundle, "patient-view", []), NOW, "").cards)
    assert "mcas.epinephrine-autoinjector" in before
    statement = {"resourceType": "MedicationStatement", "id": "carried", "status": "active",
                 "subject": {"reference": "Patient/mcas-adult"},
                 "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                           "code": "727347"}],
                                               "text": "NDA019430 0.3 ML epinephrine 1 MG/ML Auto-Injector [Epipen]"}}
    bundle["entry"].append({"fullUrl": "http://127.0.0.1:8081/MedicationStatement/carried", "resource": statement})
    after = rule_ids(evaluate_request(knowledge, request_from_bundle(bundle, "patient-view", []), NOW, "").cards)
    assert "mcas.epinephrine-autoinjector" not in after
