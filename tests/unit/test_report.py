"""``cds-service feedback report`` (issue 12 item 6): per rule over a period, issued/accepted/
overridden, override rate, top reasons, ISO-week trend, rules flagged for review; text, CSV,
JSON and a chart."""
from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from helpers import request_fixture

from cds_service import create_app
from cds_service.cli import main
from cds_service.storage.report import build_report

OPIOID = "mcas.histamine-releasing-opioid"
BLOCKER = "mcas.neuromuscular-blocker"


def _history() -> dict:
    """Ten opioid cards (two weeks), 7 overridden of 8 answered; four blocker cards, 1 of 3 overridden."""
    issued = [(OPIOID, f"2026-11-{d:02d}T10:00:00.000Z") for d in (2, 3, 4, 5, 6, 9, 10, 11, 12, 13)]
    issued += [(BLOCKER, "2026-11-10T10:00:00.000Z")] * 4
    feedback = [(OPIOID, f"o{i}", "overridden", f"2026-11-{2 + i:02d}T11:00:00+01:00", "tolerated-before",
                 "Tolerated this before without a reaction") for i in range(5)]
    feedback += [(OPIOID, "o5", "overridden", "2026-11-10T11:00:00Z", "palliative-care", "Palliative or end-of-life care"),
                 (OPIOID, "o6", "overridden", "2026-11-11T11:00:00Z", None, None),
                 (OPIOID, "o6", "overridden", "2026-11-11T11:00:00Z", None, None),  # sent twice: counted once
                 (OPIOID, "o7", "accepted", "2026-11-12T11:00:00Z", None, None),
                 (BLOCKER, "b0", "accepted", "2026-11-10T11:00:00Z", None, None),
                 (BLOCKER, "b1", "accepted", "2026-11-10T11:00:00Z", None, None),
                 (BLOCKER, "b2", "overridden", "2026-11-10T11:00:00Z", "urgent-situation", "Emergency"),
                 (OPIOID, "late", "overridden", "2026-12-01T00:00:00Z", "tolerated-before", "x")]
    return {"issued": issued, "feedback": feedback}


def test_counts_rate_reasons_weeks_and_flags():
    report = build_report(_history(), datetime(2026, 11, 1, tzinfo=timezone.utc),
                          datetime(2026, 12, 1, tzinfo=timezone.utc), flag_above=0.5, min_feedback=5)
    opioid, blocker = report.rules
    assert (opioid.rule, opioid.issued, opioid.accepted, opioid.overridden) == (OPIOID, 10, 1, 7)
    assert opioid.override_rate == 0.875 and opioid.flagged
    assert opioid.top_reasons[0] == {"code": "tolerated-before", "display": "Tolerated this before without a reaction",
                                     "count": 5}
    assert {r["code"] for r in opioid.top_reasons} == {"tolerated-before", "palliative-care", "(none given)"}
    assert list(opioid.weeks) == ["2026-W45", "2026-W46"]
    assert (opioid.weeks["2026-W45"].issued, opioid.weeks["2026-W45"].overridden) == (5, 5)
    assert (blocker.override_rate, blocker.flagged) == (0.333, False)
    assert [r.rule for r in report.flagged] == [OPIOID]


def test_too_little_feedback_is_not_flagged():
    report = build_report(_history(), flag_above=0.5, min_feedback=20)
    assert report.flagged == []


def test_the_period_bounds_both_issued_cards_and_feedback():
    report = build_report(_history(), datetime(2026, 11, 9, tzinfo=timezone.utc), datetime(2026, 11, 11, tzinfo=timezone.utc))
    opioid = next(r for r in report.rules if r.rule == OPIOID)
    assert (opioid.issued, opioid.accepted, opioid.overridden) == (2, 0, 1)


@pytest.fixture
def database(app_config, monkeypatch):
    """A service database with real cards and feedback, made over HTTP; the CLI reads it."""
    app = create_app({**app_config, "OVERRIDE_WINDOW_DAYS": 0})  # the same card six times, overrides or not
    client = app.test_client()
    body = request_fixture("order-select/mcas-adult--morphine-injection.json")
    for i in range(6):
        (card,) = client.post("/cds-services/back-pain-order-select", json=body).get_json()["cards"]
        outcome = {"outcome": "accepted", "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]} if i == 0 else {
            "outcome": "overridden", "overrideReason": {"reason": {
                "system": "https://cds-back-pain.example.org/fhir/CodeSystem/override-reason", "code": "tolerated-before",
                "display": "Tolerated this before without a reaction"}}}
        feedback = {"feedback": [{"card": card["uuid"], "outcomeTimestamp": "2026-11-23T12:00:00Z", **outcome}]}
        assert client.post("/cds-services/back-pain-order-select/feedback", json=feedback).status_code == 200
    monkeypatch.setenv("CDS_DATABASE_URL", app_config["DATABASE_URL"])


def _report(*args: str):
    return CliRunner().invoke(main, ["feedback", "report", "--since", "2026-11-01", *args])


def test_text_report_from_the_service_database(database):
    result = _report()
    assert result.exit_code == 0, result.output
    # the calls were counted (go-live, issue 23): silent findings and rates per 1,000 calls beside them
    assert f"{OPIOID}       6         1           5            83%          0       0            1000.0                0.0  << REVIEW" \
        in result.output
    assert "top override reasons: Tolerated this before without a reaction (5)" in result.output
    assert "2026-W48" in result.output


def test_csv_and_json(database):
    rows = list(csv.DictReader(io.StringIO(_report("--format", "csv").output)))
    total = next(r for r in rows if r["rule"] == OPIOID and r["week"] == "all")
    assert (total["issued"], total["overridden"], total["override_rate"], total["flagged"]) == ("6", "5", "0.833", "True")
    body = json.loads(_report("--format", "json", "--flag-above", "0.9").output)
    assert body["flagged"] == [] and body["rules"][0]["override_rate"] == 0.833


def test_chart_is_an_svg_naming_the_flagged_rule(database, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (the 'report' extra) is not installed")
    path = tmp_path / "report.svg"
    result = _report("--chart", str(path))
    assert result.exit_code == 0, result.output
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    text = path.read_text()
    assert OPIOID in text and "REVIEW" in text


def test_an_empty_period_says_so(database):
    result = CliRunner().invoke(main, ["feedback", "report", "--since", "2030-01-01"])
    assert result.exit_code == 0 and "No card was issued" in result.output


def test_a_chart_file_must_be_svg_or_png(database, tmp_path):
    result = _report("--chart", str(tmp_path / "report.pdf"))
    assert result.exit_code == 2 and ".svg or .png" in result.output


def test_the_chart_shows_quiet_weeks_too_across_a_new_year():
    from cds_service.storage.report import _every_week

    assert _every_week({"2026-W52", "2027-W01"}) == ["2026-W52", "2026-W53", "2027-W01"]
    assert _every_week({"2026-W45", "2026-W47"}) == ["2026-W45", "2026-W46", "2026-W47"]
