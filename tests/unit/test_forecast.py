"""The alert-burden forecast (issue 23) on a small Bulk Data export built from public Synthea R4
patients (bench/synthea_export.py; source and licence in bench/data/synthea/README.md)."""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import NOW, rule_ids

from cds_service.cli import main
from cds_service.knowledge.evaluate import request_from_bundle
from cds_service.knowledge.forecast import by_rule, run_forecast

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import synthea_export  # noqa: E402

KNOWLEDGE = ROOT / "knowledge"
# Patients with a card per rule on the eight-patient export: the four Synthea charts as published
# give none (no MCAS, no MS); the four personas padded with Synthea orders give these.
EXPECTED = {
    "mcas.anti-mediator-therapy": {"shown": 2},
    "mcas.baseline-tryptase": {"shown": 2},
    "mcas.bone-health": {"shown": 1},
    "mcas.epinephrine-autoinjector": {"shown": 2},
    "mcas.first-gen-antihistamine-elderly": {"shown": 1},
    "mcas.leukotriene-modifier": {"shown": 1},
    "mcas.nsaid-caution": {"shown": 1},
    "ms-lbp.management-plan": {"shown": 2},
}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    synthea_export.write_export(folder, 8)
    return folder


@pytest.fixture(scope="module")
def forecast(export):
    return run_forecast(export, KNOWLEDGE, None, NOW, jobs=1)


def test_per_rule_counts_on_the_synthea_export(forecast):
    assert by_rule(forecast.rows()) == EXPECTED
    assert forecast.summary() == {"patients": 8, "failed_patients": 0, "unread_patients": 0, "chart_opens": 8,
                                  "orders": 370, "cards_per_chart_open": {"0": 5, "1": 1, "2": 1, "4": 1}}
    nsaid = next(r for r in forecast.rows() if r["rule"] == "mcas.nsaid-caution")
    assert (nsaid["order_cards"], nsaid["per_1000_orders"]) == (1, 2.7)


def test_the_export_is_not_sorted_by_patient(export):
    subjects = [json.loads(line)["subject"]["reference"] for line in (export / "Condition.ndjson").read_text().splitlines()]
    assert subjects[:3] == ["Patient/p0000", "Patient/p0001", "Patient/p0002"]


def test_the_forecast_decides_as_the_live_service_does(export, client, forecast):
    """No drift: a patient's chart open over HTTP gives the cards the forecast counted for it."""
    resources = [json.loads(line) for f in sorted(export.glob("*.ndjson")) for line in f.read_text().splitlines()
                 if json.loads(line).get("id") == "p0006" or json.loads(line).get("subject", {}).get("reference") == "Patient/p0006"]
    body = request_from_bundle({"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]},
                               "patient-view", [])
    cards = client.post("/cds-services/back-pain-patient-view", json=body).get_json()["cards"]
    alone = run_forecast(_one_patient(export, "p0006"), KNOWLEDGE, None, NOW, jobs=1)
    assert len(cards) == max(int(k) for k in alone.summary()["cards_per_chart_open"])
    shown = {r["rule"] for r in alone.rows() if r["chart_open_cards"]}
    merged = {r for c in cards for r in c.get("extension", {}).get(
        "https://cds-back-pain.example.org/cds-hooks/extension/merged-rules", [])} | set(rule_ids(cards))
    assert shown == merged and shown


def _one_patient(export: Path, patient: str) -> Path:
    folder = export.parent / f"one-{patient}"
    folder.mkdir(exist_ok=True)
    for f in export.glob("*.ndjson"):
        keep = [line for line in f.read_text().splitlines(keepends=True) if f'"{patient}"' in line or f"Patient/{patient}\"" in line]
        (folder / f.name).write_text("".join(keep))
    return folder


def test_a_silent_rule_is_counted_apart_and_changes_nothing_else(export, forecast, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("rules:\n  mcas.epinephrine-autoinjector:\n    mode: silent\n  mcas.bone-health:\n    mode: 'off'\n")
    quiet = run_forecast(export, KNOWLEDGE, str(site), NOW, jobs=1)
    expected = {k: v for k, v in EXPECTED.items() if k != "mcas.bone-health"}
    expected["mcas.epinephrine-autoinjector"] = {"silent": 2}
    assert by_rule(quiet.rows()) == expected
    assert sum(quiet.summary()["cards_per_chart_open"].values()) == 8


def test_a_folder_of_bundles_gives_the_same_forecast(export, forecast, tmp_path):
    for n in range(8):
        patient = f"p{n:04d}"
        resources = [json.loads(line) for f in sorted(export.glob("*.ndjson")) for line in f.read_text().splitlines()
                     if f'{patient}"' in line]
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
        data = json.dumps(bundle).encode()
        (tmp_path / f"{patient}.json.gz").write_bytes(gzip.compress(data)) if n % 2 else \
            (tmp_path / f"{patient}.json").write_bytes(data)
    assert run_forecast(tmp_path, KNOWLEDGE, None, NOW, jobs=1).rows() == forecast.rows()


def test_two_processes_give_the_same_forecast(export, forecast):
    assert run_forecast(export, KNOWLEDGE, None, NOW, jobs=2).rows() == forecast.rows()


def test_the_command_prints_text_csv_json_and_a_chart(export, tmp_path):
    runner = CliRunner()
    args = ["forecast", str(export), "--jobs", "1", "--now", "2026-11-23T12:00:00Z", "--quiet"]
    text = runner.invoke(main, args)
    assert text.exit_code == 0, text.output
    assert "mcas.nsaid-caution" in text.output and "8 patients, 8 chart opens, 370 orders" in text.output
    rows = runner.invoke(main, [*args, "--format", "csv"]).output.splitlines()
    assert rows[0].startswith("rule,mode,patients") and len(rows) == 1 + len(EXPECTED)
    body = json.loads(runner.invoke(main, [*args, "--format", "json"]).output)
    assert body["patients"] == 8
    chart = tmp_path / "forecast.svg"
    with_bar = runner.invoke(main, [*args[:-1], "--chart", str(chart)])  # the progress bar on stderr; one run
    assert with_bar.exit_code == 0 and "8 patients" in with_bar.stdout
    assert "<svg" in chart.read_text() and "mcas.nsaid-caution" in chart.read_text()


def test_a_folder_without_an_export_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["forecast", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "no *.ndjson files" in result.output


def test_a_record_the_service_refuses_is_not_counted_as_no_card(tmp_path):
    (tmp_path / "Condition.ndjson").write_text('{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/x"}}\n')
    result = run_forecast(tmp_path, KNOWLEDGE, None, NOW, jobs=1)
    assert result.summary()["failed_patients"] == 1 and result.summary()["cards_per_chart_open"] == {}


def test_a_service_request_is_replayed_as_an_order(export, forecast, tmp_path):
    """Add one lumbar MRI order (CPT 72148) to the MS persona (p0005): one more order, and the
    imaging rule now fires for that patient on that order; nothing else changes."""
    folder = tmp_path / "with-mri"
    folder.mkdir()
    for f in export.glob("*.ndjson"):
        (folder / f.name).write_bytes(f.read_bytes())
    mri = {"resourceType": "ServiceRequest", "id": "mri-1", "status": "active", "intent": "order",
           "subject": {"reference": "Patient/p0005"},
           "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72148",
                                "display": "MRI lumbar spine without contrast"}]}}
    (folder / "ServiceRequest.ndjson").write_text(json.dumps(mri) + "\n")
    more = run_forecast(folder, KNOWLEDGE, None, NOW, jobs=1)
    assert more.summary()["orders"] == forecast.summary()["orders"] + 1
    rows = {r["rule"]: r for r in more.rows()}
    assert rows["ms-lbp.imaging-without-red-flags"]["order_cards"] == 1
    assert rows["ms-lbp.imaging-without-red-flags"]["top_items"] == [{"item": "72148", "count": 1}]
    assert {k: v for k, v in by_rule(more.rows()).items() if k != "ms-lbp.imaging-without-red-flags"} == EXPECTED
