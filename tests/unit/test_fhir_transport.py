"""Every way a FHIR connection can break makes that key unavailable, never a 500 (issue 24, item 2).

A raw TCP server on 127.0.0.1 (``fakefhir.RawFhir``) answers each FHIR read with bytes no
well-behaved HTTP server sends: a stall in the middle of the body, a close before the declared
length, a gzip body that is not gzip, broken chunked framing, a TCP reset. The transport is
called directly (``transport.read`` must raise only ``FetchFailed``), then the whole service
through the Flask test client: with the conditions prefetched, the MCAS succinylcholine
critical card must still come; with the conditions missing, a 412 with an OperationOutcome.
"""
from __future__ import annotations

import socket
import struct
import time

import pytest
from fakefhir import RawFhir, head, wait_or_stop
from helpers import request_fixture, rule_ids

from cds_service import create_app
from cds_service.fhirfetch.transport import ByteCount, FetchFailed, SessionTransport, read

TOKEN = "dummy-access-token-for-transport-tests"
ORDER_SELECT = "back-pain-order-select"
FIXTURE = "order-select/mcas-adult--succinylcholine.json"
BUDGET_SECONDS = 1.0
BOUND_SECONDS = 1.6  # the budget, and room for a slow shared machine; a stall lasts 5 s
START = b'{"resourceType": "Bundle", "type": "searchset", "entry": ['


def _stall(conn: socket.socket, server: RawFhir) -> None:
    conn.sendall(head(Content_Length="5000") + START)
    wait_or_stop(server, 5.0)


def _short(conn: socket.socket, server: RawFhir) -> None:
    conn.sendall(head(Content_Length="5000") + START)  # then closed, 4950 bytes short


def _bad_gzip(conn: socket.socket, server: RawFhir) -> None:
    garbage = b"\x1f\x8b\x08\x00this is not deflate data at all" * 20
    conn.sendall(head(Content_Length=str(len(garbage)), Content_Encoding="gzip") + garbage)


def _bad_chunking(conn: socket.socket, server: RawFhir) -> None:
    conn.sendall(head(Transfer_Encoding="chunked") + b"10\r\n" + START[:16] + b"\r\nzz\r\nnot a chunk\r\n")


def _reset(conn: socket.socket, server: RawFhir) -> None:
    conn.sendall(head(Content_Length="5000") + START)
    time.sleep(0.05)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST


BREAKS = {"stall": _stall, "short": _short, "bad-gzip": _bad_gzip, "bad-chunking": _bad_chunking, "reset": _reset}


@pytest.fixture(params=list(BREAKS))
def broken(request):
    with RawFhir(BREAKS[request.param]) as server:
        yield server


def test_the_transport_turns_a_broken_answer_into_fetch_failed(broken):
    deadline = time.monotonic() + BUDGET_SECONDS
    started = time.monotonic()
    with pytest.raises(FetchFailed):
        read(SessionTransport(), broken.url() + "/Condition?patient=p", {}, timeout=BUDGET_SECONDS,
             public_only=False, deadline=deadline, max_bytes=1 << 20, count=ByteCount(1 << 24).add)
    assert time.monotonic() - started < BOUND_SECONDS
    assert broken.requests >= 1  # the server was reached: the failure is its answer's


def _client(app_config, server: RawFhir):
    # a read timeout shorter than the budget: the stall ends in a read error, not at the deadline
    return create_app({**app_config, "CALL_BUDGET_SECONDS": BUDGET_SECONDS, "FHIR_TIMEOUT_SECONDS": 0.4, "LOG_LEVEL": "ERROR",
                       "ISSUER_FHIR_SERVERS": {"https://ehr.example.org": [server.url()]}}).test_client()


def _body(server: RawFhir, drop: str):
    body = request_fixture(FIXTURE)
    body["prefetch"].pop(drop)
    body["fhirServer"] = server.url()
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    return body


def test_the_critical_card_still_comes_from_prefetched_data_when_the_server_breaks(app_config, broken):
    client = _client(app_config, broken)
    started = time.monotonic()
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=_body(broken, "medications"))
    assert response.status_code == 200, response.get_json()
    assert time.monotonic() - started < BOUND_SECONDS
    cards = response.get_json()["cards"]
    assert "mcas.neuromuscular-blocker" in rule_ids(cards)
    assert next(c for c in cards if rule_ids([c]) == ["mcas.neuromuscular-blocker"])["indicator"] == "critical"
    assert broken.requests >= 1


def test_required_data_behind_a_broken_server_is_a_412(app_config, broken):
    response = _client(app_config, broken).post(f"/cds-services/{ORDER_SELECT}", json=_body(broken, "conditions"))
    assert response.status_code == 412, response.get_json()
    assert response.get_json()["resourceType"] == "OperationOutcome"
