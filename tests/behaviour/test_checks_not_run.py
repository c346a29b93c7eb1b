"""A clinician is told when checks did not run (issue 24, item 3).

When a module's gate holds (the patient has MCAS or MS) and some of its rules were skipped
because their data could not be had (not sent, and the FHIR server failing), the answer carries
ONE info card (``service.checks-not-run``) naming the checks and why; never on an ordinary
chart (everything sent), never for a patient the modules are not about, never two. Each call
with that card is counted in ``cds_checks_not_run_total`` by the key that was lacking.
"""
from __future__ import annotations

import socket
import struct

import pytest
from fakefhir import RawFhir, head
from helpers import request_fixture, rule_ids
from test_metrics import metric_value

from cds_service import create_app

PATIENT_VIEW = "back-pain-patient-view"
NOT_RUN = "service.checks-not-run"
ONLY = ("patient", "conditions")  # what the review's EHR sent; the FHIR server failed for the rest


def _reset(conn: socket.socket, server: RawFhir) -> None:
    conn.sendall(head(Content_Length="5000"))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.fixture
def failing():
    with RawFhir(_reset) as server:
        yield server


@pytest.fixture
def client(app_config, failing):
    return create_app({**app_config, "LOG_LEVEL": "ERROR",
                       "ISSUER_FHIR_SERVERS": {"https://ehr.example.org": [failing.url()]}}).test_client()


def _call(client, server: RawFhir, fixture: str, keep: tuple[str, ...] | None = ONLY):
    body = request_fixture(f"patient-view/{fixture}")
    if keep is not None:
        body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k in keep}
    body["fhirServer"] = server.url()
    body["fhirAuthorization"] = {"access_token": "dummy", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    response = client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["cards"]


def test_an_mcas_chart_missing_data_behind_a_failing_server_says_which_checks_did_not_run(client, failing):
    cards = _call(client, failing, "mcas-adult--chart-open.json")
    assert rule_ids(cards).count(NOT_RUN) == 1
    card = next(c for c in cards if rule_ids([c]) == [NOT_RUN])
    assert card["indicator"] == "info"
    assert "did not run" in card["summary"] and len(card["summary"]) < 140
    assert "medication orders" in card["detail"] and "could not be read" in card["detail"]
    assert "all clear" in card["detail"]
    assert failing.requests >= 1


def test_the_same_chart_sent_whole_has_no_such_card(client, failing):
    assert NOT_RUN not in rule_ids(_call(client, failing, "mcas-adult--chart-open.json", keep=None))


def test_a_patient_the_modules_are_not_about_gets_no_such_card(client, failing):
    assert NOT_RUN not in rule_ids(_call(client, failing, "no-condition-adult--chart-open.json"))


def test_two_modules_missing_data_still_give_one_card(client, failing):
    cards = _call(client, failing, "mcas-ms-older-adult--chart-open.json")
    assert rule_ids(cards).count(NOT_RUN) == 1


def test_data_not_sent_and_no_server_to_ask_is_said_so(client, failing):
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k in ONLY}
    cards = client.post(f"/cds-services/{PATIENT_VIEW}", json=body).get_json()["cards"]
    card = next(c for c in cards if rule_ids([c]) == [NOT_RUN])
    assert "not sent by the EHR" in card["detail"]


def test_calls_with_checks_not_run_are_counted_by_the_key_lacking(client, failing):
    before = metric_value(client, "cds_checks_not_run_total", service=PATIENT_VIEW, prefetch_key="medications")
    _call(client, failing, "mcas-adult--chart-open.json")
    _call(client, failing, "mcas-adult--chart-open.json", keep=None)  # whole: not counted
    after = metric_value(client, "cds_checks_not_run_total", service=PATIENT_VIEW, prefetch_key="medications")
    assert after == before + 1
