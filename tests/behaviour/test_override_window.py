"""The override window over HTTP (issue 8, R10; issue 19, must have 4): a warning overridden with
a reason for a patient is not shown again for the same rule, drug and route at the same or a lower
dose within the window; a plain Dismiss, another patient, another drug, a higher dose, an
unreadable dose, an older override or a storage fault shows it. The cards held back are counted
by the feedback report. And feedback on a merged card counts for every rule in it."""
from __future__ import annotations

import copy
import sqlite3
from datetime import timedelta

from casebuilder import build_request
from helpers import NOW, rule_ids

from cds_service.core.cards import MERGED_RULES

RULE = "mcas.histamine-releasing-opioid"
MORPHINE = {"rxcui": "892582", "text": "morphine sulfate 15 MG Oral Tablet", "dose": [1, "{pill}"], "per_day": 4}
MORPHINE_30 = {**MORPHINE, "dose": [2, "{pill}"]}
CODEINE = {"rxcui": "993781", "text": "acetaminophen 300 MG / codeine phosphate 30 MG Oral Tablet"}


def _sign(drug, patient_id=None):
    request = build_request({"hook": "order-sign", "patient": "mcas-adult", "drafts": [{"medication": drug}]})
    if patient_id:  # the same record under another patient id (another patient, as storage sees it)
        request = copy.deepcopy(request)
        request["context"]["patientId"] = patient_id
    return request


def _override(client, card, days_ago=1, reason="tolerated-before"):
    item = {"card": card["uuid"], "outcome": "overridden",
            "outcomeTimestamp": (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")}
    if reason:  # none: a plain Dismiss
        item["overrideReason"] = {"reason": {"system": card["overrideReasons"][0]["system"], "code": reason}}
    assert client.post("/cds-services/back-pain-order-sign/feedback", json={"feedback": [item]}).status_code == 200


def _overridden_morphine_card(hooks, client, days_ago=1, reason="tolerated-before", drug=MORPHINE):
    (card,) = hooks.cards(_sign(drug))
    assert card["source"]["topic"]["code"] == RULE
    _override(client, card, days_ago, reason)


def test_an_overridden_card_is_not_shown_again_to_the_same_patient_for_the_same_drug(hooks, client):
    _overridden_morphine_card(hooks, client)
    assert hooks.cards(_sign(MORPHINE)) == []


def test_a_plain_dismiss_silences_nothing(hooks, client):
    _overridden_morphine_card(hooks, client, reason=None)
    assert rule_ids(hooks.cards(_sign(MORPHINE))) == [RULE]


def test_an_override_covers_the_same_or_a_lower_dose_never_a_higher_one(hooks, client):
    _overridden_morphine_card(hooks, client)  # 15 mg
    assert rule_ids(hooks.cards(_sign(MORPHINE_30))) == [RULE]
    _overridden_morphine_card(hooks, client, drug=MORPHINE_30)
    assert hooks.cards(_sign(MORPHINE_30)) == [] and hooks.cards(_sign(MORPHINE)) == []


def test_an_order_whose_dose_cannot_be_read_is_never_silenced(hooks, client):
    _overridden_morphine_card(hooks, client)
    undosed = {"rxcui": "892582", "text": "morphine sulfate 15 MG Oral Tablet"}
    assert rule_ids(hooks.cards(_sign(undosed))) == [RULE]


def test_the_feedback_report_counts_the_cards_held_back(hooks, client, app):
    from cds_service.storage.report import build_report

    _overridden_morphine_card(hooks, client)
    for _ in range(3):
        assert hooks.cards(_sign(MORPHINE)) == []
    report = build_report(app.extensions["cds"].storage.card_history())
    (entry,) = [r for r in report.rules if r.rule == RULE]
    assert (entry.issued, entry.overridden, entry.held_back) == (1, 1, 3)


def test_a_critical_card_is_shown_again_after_an_override(hooks, client):
    # a critical finding may be new since the override (a red flag, a degranulating blocker)
    succinylcholine = {"rxcui": "1594589", "text": "succinylcholine chloride 20 MG/ML Injectable Solution"}
    (card,) = hooks.cards(_sign(succinylcholine))
    assert card["indicator"] == "critical"
    _override(client, card)
    assert rule_ids(hooks.cards(_sign(succinylcholine))) == ["mcas.neuromuscular-blocker"]


def test_another_patient_still_gets_the_card(hooks, client):
    _overridden_morphine_card(hooks, client)
    assert rule_ids(hooks.cards(_sign(MORPHINE, patient_id="another-patient"))) == [RULE]


def test_another_drug_under_the_same_rule_still_gets_the_card(hooks, client):
    _overridden_morphine_card(hooks, client)
    assert rule_ids(hooks.cards(_sign(CODEINE))) == [RULE]


def test_an_override_older_than_the_window_no_longer_silences(hooks, client):
    _overridden_morphine_card(hooks, client, days_ago=31)
    assert rule_ids(hooks.cards(_sign(MORPHINE))) == [RULE]


def test_an_acceptance_does_not_silence(hooks, client):
    (card,) = hooks.cards(_sign(MORPHINE))
    item = {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": NOW.isoformat()}
    client.post("/cds-services/back-pain-order-sign/feedback", json={"feedback": [item]})
    assert rule_ids(hooks.cards(_sign(MORPHINE))) == [RULE]


def test_a_storage_fault_on_the_lookup_shows_the_cards(hooks, client, app, monkeypatch, service_log):
    _overridden_morphine_card(hooks, client)

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(app.extensions["cds"].storage, "recent_overrides", broken)
    assert rule_ids(hooks.cards(_sign(MORPHINE))) == [RULE]
    assert any("override lookup failed" in line for line in service_log)


def test_window_zero_switches_it_off(app_config, client):
    from cds_service import create_app

    app = create_app({**app_config, "OVERRIDE_WINDOW_DAYS": 0})
    assert app.extensions["cds"].override_window is None


def test_storage_keeps_a_keyed_hash_not_the_patient_id(hooks, app):
    hooks.cards(_sign(MORPHINE))
    storage = app.extensions["cds"].storage
    with storage.reading() as conn:
        rows = conn.exec_driver_sql("SELECT patient_key FROM issued_card").fetchall()
    assert len(rows) == 1 and len(rows[0][0]) == 64 and "mcas-adult" not in rows[0][0]


def test_feedback_on_a_merged_card_counts_for_every_rule_in_it(hooks, client, app):
    request = build_request({"hook": "patient-view", "patient": "mcas-adult"})
    cards = hooks.cards(request)
    merged = next(c for c in cards if MERGED_RULES in c.get("extension", {}))
    rules = merged["extension"][MERGED_RULES]
    assert len(rules) >= 2
    item = {"card": merged["uuid"], "outcome": "accepted", "outcomeTimestamp": NOW.isoformat(),
            "acceptedSuggestions": [{"id": merged["suggestions"][0]["uuid"]}]}
    client.post("/cds-services/back-pain-patient-view/feedback", json={"feedback": [item]})
    stats = app.extensions["cds"].storage.stats()
    for rule in rules:
        assert stats[rule]["issued"] == 1 and stats[rule]["accepted"] == 1, rule
