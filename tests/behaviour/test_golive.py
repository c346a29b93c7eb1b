"""Go-live (issue 23): the site overlay, silent rules end to end, and the knowledge release on
every card, over HTTP and through the report."""
from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from casebuilder import build_request
from helpers import NOW, rule_ids

from cds_service import create_app
from cds_service.core.cards import KNOWLEDGE_RELEASE
from cds_service.errors import KnowledgeError
from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.site import load_site
from cds_service.settings import knowledge_dir
from cds_service.storage import silent
from cds_service.storage.report import build_report, by_release

RULE = "mcas.histamine-releasing-opioid"
MORPHINE = {"rxcui": "892582", "text": "morphine sulfate 15 MG Oral Tablet", "dose": [1, "{pill}"], "per_day": 4}  # a readable dose: an override can silence it
SUCCINYLCHOLINE = {"rxcui": "1594589", "text": "succinylcholine chloride 20 MG/ML Injectable Solution"}


def _select(drug):
    return build_request({"hook": "order-select", "patient": "mcas-adult", "drafts": [{"medication": drug}]})


def _site(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def knowledge():
    return load_knowledge(knowledge_dir(None))


@pytest.fixture
def silent_app(app_config, tmp_path):
    site = _site(tmp_path, f"rules:\n  {RULE}:\n    mode: silent\n    note: Silent from 2026-12-01 (P&T)\n")
    return create_app({**app_config, "SITE_CONFIG": site, "DATABASE_URL": f"sqlite:///{tmp_path / 'silent.sqlite3'}"})


def _rows(app, sql):
    path = app.config["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


# ------------------------------------------------------------------ silent mode over HTTP

def test_a_silent_rule_shows_no_card_but_its_finding_is_stored_and_reported(silent_app, app):
    active = app.test_client().post("/cds-services/back-pain-order-select", json=_select(MORPHINE)).get_json()
    assert RULE in rule_ids(active["cards"])  # the same call with the rule active: a card

    response = silent_app.test_client().post("/cds-services/back-pain-order-select", json=_select(MORPHINE))
    assert response.status_code == 200
    assert RULE not in rule_ids(response.get_json()["cards"])
    ((rule, item, indicator, patient),) = _rows(silent_app, "SELECT rule_id, item_key, indicator, patient_key "
                                                            "FROM silent_finding")
    real = _rows(app, f"SELECT r.item_key, c.patient_key FROM card_rule r JOIN issued_card c USING (card_uuid) "
                      f"WHERE r.rule_id = '{RULE}'")
    assert (rule, indicator) == (RULE, "warning")
    assert [(item, patient)] == real  # the same item and patient key as the card it would have been

    store = silent_app.extensions["cds"].storage
    report = build_report(store.card_history(), golive=silent.history(store))
    (entry,) = [r for r in report.rules if r.rule == RULE]
    assert (entry.issued, entry.silent, report.calls) == (0, 1, 1)
    assert entry.silent_per_1000_calls == 1000.0


def test_a_silent_rule_cannot_hide_or_merge_into_a_shown_card(silent_app, app):
    body = build_request({"hook": "patient-view", "patient": "mcas-adult"})
    shown = app.test_client().post("/cds-services/back-pain-patient-view", json=body).get_json()["cards"]
    quiet = silent_app.test_client().post("/cds-services/back-pain-patient-view", json=body).get_json()["cards"]

    def rules(cards):
        return [r for c in cards for r in c.get("extension", {}).get(
            "https://cds-back-pain.example.org/cds-hooks/extension/merged-rules", [c["source"]["topic"]["code"]])]

    assert [r for r in rules(shown) if r != RULE] == rules(quiet)  # everything else still shown, in order


def test_an_off_rule_is_neither_shown_nor_recorded(app_config, tmp_path):
    off = create_app({**app_config, "SITE_CONFIG": _site(tmp_path, f"rules:\n  {RULE}:\n    mode: off\n"),
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'off.sqlite3'}"})
    cards = off.test_client().post("/cds-services/back-pain-order-select", json=_select(MORPHINE)).get_json()["cards"]
    assert RULE not in rule_ids(cards)
    assert _rows(off, "SELECT COUNT(*) FROM silent_finding") == [(0,)]


def test_the_rule_page_and_readyz_show_the_site_mode_and_the_release(silent_app, knowledge):
    client = silent_app.test_client()
    page = client.get(f"/rules/{RULE}").get_json()
    assert page["site"]["mode"] == "silent" and page["site"]["note"] == "Silent from 2026-12-01 (P&T)"
    assert page["knowledge_release"] == knowledge.release
    html = client.get(f"/rules/{RULE}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "silent" in html and "Silent from 2026-12-01 (P&amp;T)" in html
    other = client.get("/rules/mcas.neuromuscular-blocker").get_json()
    assert other["site"]["mode"] == "active"
    assert client.get("/readyz").get_json()["knowledge_release"] == knowledge.release


# ------------------------------------------------------------------ the release on every card

def test_every_card_carries_the_release_and_the_stored_card_too(hooks, app, knowledge):
    cards = hooks.cards(_select(SUCCINYLCHOLINE))
    assert cards and all(c["extension"][KNOWLEDGE_RELEASE] == knowledge.release for c in cards)
    assert knowledge.release.startswith("2026.12.0+sha256.")
    stored = _rows(app, "SELECT knowledge_release FROM card_release")
    assert stored == [(knowledge.release,)] * len(cards)


def test_a_changed_file_changes_the_release(tmp_path, knowledge):
    import shutil

    copy = tmp_path / "knowledge"
    shutil.copytree(knowledge.directory, copy)
    assert load_knowledge(copy).release == knowledge.release  # same bytes, same release
    with (copy / "guidelines.yaml").open("a") as f:
        f.write("\n# a local edit\n")
    assert load_knowledge(copy).release.split("+")[1] != knowledge.release.split("+")[1]
    (copy / "release.yaml").write_text("version: [1]\n")
    with pytest.raises(KnowledgeError, match="release.yaml: version"):
        load_knowledge(copy)


def test_by_version_compares_override_rates_across_releases():
    history = {"issued": [(RULE, "2026-11-01T00:00:00.000Z", "a"), (RULE, "2026-11-20T00:00:00.000Z", "b"),
                          (RULE, "2026-11-21T00:00:00.000Z", "c")],
               "feedback": [(RULE, "a", "overridden", "2026-11-01T01:00:00Z", "x", "X"),
                            (RULE, "b", "accepted", "2026-11-20T01:00:00Z", None, None),
                            (RULE, "c", "overridden", "2026-11-21T01:00:00Z", "x", "X")]}
    rows = by_release(history, [("a", "1.0+sha256.1"), ("b", "1.1+sha256.2"), ("c", "1.1+sha256.2")])
    totals = {r.release: r.override_rate for r in rows if r.rule == "(all rules)"}
    assert totals == {"1.0+sha256.1": 1.0, "1.1+sha256.2": 0.5}
    assert [r.release for r in rows][0] == "1.0+sha256.1"  # oldest release first


def test_the_report_cli_shows_silent_columns_and_by_version(silent_app, tmp_path):
    silent_app.test_client().post("/cds-services/back-pain-order-select", json=_select(MORPHINE))
    runner = silent_app.test_cli_runner()
    from cds_service.cli import main

    env = {"CDS_DATABASE_URL": silent_app.config["DATABASE_URL"], "CDS_SITE_CONFIG": silent_app.config["SITE_CONFIG"],
           "CDS_PATIENT_KEY_SECRET": "x"}
    out = runner.invoke(main, ["feedback", "report", "--format", "json"], env=env)
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert {r["rule"]: r["silent"] for r in body["rules"]}[RULE] == 1 and body["calls"] == 1
    versions = runner.invoke(main, ["feedback", "report", "--by-version", "--format", "csv"], env=env)
    assert versions.exit_code == 0 and versions.output.startswith("release,rule,issued")
    chart = tmp_path / "report.svg"
    drawn = runner.invoke(main, ["feedback", "report", "--chart", str(chart)], env=env)
    assert drawn.exit_code == 0 and "silent (would have shown)" in chart.read_text()


# ------------------------------------------------------------------ the overlay's checks

@pytest.mark.parametrize("text, where", [
    ("rules:\n  mcas.no-such-rule:\n    mode: silent\n", "rules.mcas.no-such-rule: rule mcas.no-such-rule: no such rule"),
    (f"rules:\n  {RULE}:\n    mode: quiet\n", f"rules.{RULE}.mode: rule {RULE}: mode is one of"),
    ("rules:\n  mcas.neuromuscular-blocker:\n    indicator: warning\n",
     "rules.mcas.neuromuscular-blocker.indicator: rule mcas.neuromuscular-blocker: a site may not lower a critical"),
    (f"rules:\n  {RULE}:\n    override_window_days: -1\n", f"rules.{RULE}.override_window_days: rule {RULE}"),
    (f"rules:\n  {RULE}:\n    moed: silent\n", f"rules.{RULE}.moed: rule {RULE}: unknown key (did you mean 'mode'?)"),
    ("rulez: {}\n", "rulez: unknown key"),
])
def test_a_wrong_overlay_names_file_key_and_rule_and_stops_start_up(tmp_path, knowledge, app_config, text, where):
    path = _site(tmp_path, text)
    with pytest.raises(KnowledgeError) as raised:
        load_site(path, knowledge)
    assert f"{path}: {where}" in str(raised.value)
    with pytest.raises(KnowledgeError):
        create_app({**app_config, "SITE_CONFIG": path})


def test_knowledge_check_checks_the_overlay(tmp_path):
    from click.testing import CliRunner

    from cds_service.cli import main

    bad = _site(tmp_path, "rules:\n  mcas.nope:\n    mode: off\n")
    result = CliRunner().invoke(main, ["knowledge", "check", "--site", bad])
    assert result.exit_code == 1 and "rules.mcas.nope" in result.output
    good = _site(tmp_path, f"rules:\n  {RULE}:\n    mode: silent\n")
    result = CliRunner().invoke(main, ["knowledge", "check"], env={"CDS_SITE_CONFIG": good})
    assert result.exit_code == 0 and json.loads(result.output)["site"]["modes"] == {RULE: "silent"}


def test_a_site_override_window_is_per_rule(app_config, tmp_path):
    """The default window is 30 days; the site gives this rule 7: an override 10 days old no longer hides it."""
    site = _site(tmp_path, f"rules:\n  {RULE}:\n    override_window_days: 7\n")
    for path, shown in ((None, False), (site, True)):
        app = create_app({**app_config, "SITE_CONFIG": path,
                          "DATABASE_URL": f"sqlite:///{tmp_path / ('a' if path else 'b')}.sqlite3"})
        client = app.test_client()
        request = build_request({"hook": "order-sign", "patient": "mcas-adult", "drafts": [{"medication": MORPHINE}]})
        (card,) = client.post("/cds-services/back-pain-order-sign", json=request).get_json()["cards"]
        item = {"card": card["uuid"], "outcome": "overridden",
                "outcomeTimestamp": (NOW - timedelta(days=10)).isoformat().replace("+00:00", "Z"),
                "overrideReason": {"reason": {"system": card["overrideReasons"][0]["system"], "code": "tolerated-before"}}}
        assert client.post("/cds-services/back-pain-order-sign/feedback", json={"feedback": [item]}).status_code == 200
        again = client.post("/cds-services/back-pain-order-sign", json=request).get_json()["cards"]
        assert (RULE in rule_ids(again)) is shown


def test_silent_findings_go_with_the_issued_card_retention(silent_app):
    from datetime import datetime, timezone

    store = silent_app.extensions["cds"].storage
    silent.record_call(store, "back-pain-order-select", "h", "r", [], [silent.SilentFinding(RULE, "", "warning")],
                       at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    silent.record_call(store, "back-pain-order-select", "h", "r", [], [silent.SilentFinding(RULE, "", "warning")])
    assert store.prune()["silent_finding"] == 1  # the one older than 90 days
    assert _rows(silent_app, "SELECT COUNT(*) FROM silent_finding") == [(1,)]


def test_silent_storage_on_each_backend(database_url):
    """record_call, history and prune on SQLite, and on PostgreSQL when CI provides one."""
    from datetime import datetime, timezone

    from cds_service.core.cards import IssuedCard
    from cds_service.storage.store import Storage

    store = Storage(database_url)
    store.open_for_service()
    card = IssuedCard("11111111-1111-1111-1111-111111111111", (RULE,), (), ("7052",))
    store.record_cards("back-pain-order-select", "h", [card], patient_key="pk")
    old = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for at in (old, None, None):
        assert silent.record_call(store, "back-pain-order-select", "h", "1.0+sha256.a", [card],
                                  [silent.SilentFinding("mcas.nsaid-caution", "7258", "info")], "pk", at)
    found = silent.history(store)
    assert [(w, n) for w, _, n in found["calls"]] == [("2026-W01", 1), (silent.iso_week(datetime.now(timezone.utc)), 2)]
    assert found["releases"] == [(card.uuid, "1.0+sha256.a")] and len(found["silent"]) == 3
    assert store.prune()["silent_finding"] == 1
