"""Feedback and its attribution to rules."""
from __future__ import annotations

import json

import pytest
from helpers import request_fixture

FEEDBACK = "/cds-services/back-pain-order-select/feedback"
WHEN = "2026-11-23T12:01:02.345Z"


def _issue_card(hooks):
    (card,) = hooks.cards(request_fixture("order-select/mcas-adult--succinylcholine.json"))
    return card


def test_accept_and_override_are_stored_once_and_attributed_to_the_rule(client, hooks, app):
    card = _issue_card(hooks)
    accepted = {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": WHEN,
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}
    overridden = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": WHEN,
                  "overrideReason": {"reason": {"code": "urgent-situation",
                                                "system": card["overrideReasons"][0]["system"]}}}
    for _ in range(2):  # a repeated POST must not count twice
        response = client.post(FEEDBACK, json={"feedback": [accepted, overridden]})
        assert response.status_code == 200
        assert response.get_json() == {}
    stats = app.extensions["cds"].storage.stats()["mcas.neuromuscular-blocker"]
    assert stats == {"issued": 1, "accepted": 1, "overridden": 1,
                     "override_reasons": {"urgent-situation": 1}}


def test_feedback_stats_command_prints_per_rule_json(client, hooks, app, runner, monkeypatch):
    card = _issue_card(hooks)
    client.post(FEEDBACK, json={"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": WHEN}]})
    monkeypatch.setenv("CDS_DATABASE_URL", app.config["DATABASE_URL"])
    from cds_service.cli import main

    result = runner.invoke(main, ["feedback", "stats"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["mcas.neuromuscular-blocker"]["overridden"] == 1


@pytest.mark.parametrize("item", [
    {"card": "not-a-uuid", "outcome": "accepted", "outcomeTimestamp": WHEN, "acceptedSuggestions": [{"id": "x"}]},
    {"card": "0b0a7c5e-6b4e-4b7f-9d6e-2f1f1f1f1f1f", "outcome": "ignored", "outcomeTimestamp": WHEN},
    {"card": "0b0a7c5e-6b4e-4b7f-9d6e-2f1f1f1f1f1f", "outcome": "accepted", "outcomeTimestamp": WHEN},
    {"card": "0b0a7c5e-6b4e-4b7f-9d6e-2f1f1f1f1f1f", "outcome": "overridden", "outcomeTimestamp": WHEN,
     "overrideReason": {}},
    {"card": "0b0a7c5e-6b4e-4b7f-9d6e-2f1f1f1f1f1f", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
])
def test_malformed_feedback_is_400(client, item):
    response = client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_sandbox_style_override_reason_without_display_is_accepted(client, hooks):
    card = _issue_card(hooks)
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": WHEN,
            "overrideReason": {"reason": {"code": "tolerated-before", "system": "https://x.example/cs"}}}
    assert client.post(FEEDBACK, json={"feedback": [item]}).status_code == 200


def test_feedback_for_unknown_service_is_404(client):
    response = client.post("/cds-services/nope/feedback", json={"feedback": []})
    assert response.status_code == 404


def test_issued_cards_are_stored_once_the_answer_is_sent(hooks, app):
    """The card record is written after the answer leaves (the server closes the response), on the
    background thread, so neither the clinician nor the next call waits for the database; it is
    there for the feedback that follows."""
    storage = app.extensions["cds"].storage
    response = hooks.call(request_fixture("order-select/mcas-adult--succinylcholine.json"), buffered=False)
    (card,) = response.get_json()["cards"]
    assert "mcas.neuromuscular-blocker" not in storage.stats()  # answered, not yet closed
    response.close()  # what the WSGI server does once the answer is sent
    assert storage.background.wait_idle()  # then the process's background thread writes it
    assert storage.stats()["mcas.neuromuscular-blocker"]["issued"] == 1
