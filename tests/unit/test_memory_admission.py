"""Memory bounded by design (issue 24, item 4): admission by estimated parsed size per worker.

A body shaped like no FHIR record (millions of empty objects or tiny strings: 24 times its
size once parsed) is refused with a 413 before it is parsed; when the worker's parsing budget
is full a call waits briefly, then gets a 503 with Retry-After; a call's share is given back
once it is answered. The worst case over real processes is tests/test_memory_bound.py.
"""
from __future__ import annotations

import threading
import time

import pytest
from helpers import request_fixture, rule_ids

from cds_service import create_app, memory
from cds_service.web import admission

ORDER_SELECT = "back-pain-order-select"
MIB = 1024 * 1024


def _padded(filler: bytes, size: int) -> bytes:
    """The succinylcholine order with ``size`` bytes of ``filler`` items in an extra member."""
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    import orjson
    raw = orjson.dumps(body)
    items = filler * ((size - len(raw)) // len(filler))
    return raw[:-1] + b',"extension":{"filler":[' + items.rstrip(b",") + b"]}}"


@pytest.mark.parametrize("filler", [b"{},", b"[],", b'"ab",', b'{"a":1},'], ids=["objects", "arrays", "strings", "small-dicts"])
def test_a_body_of_millions_of_tiny_items_is_refused_before_parsing(client, filler):
    raw = _padded(filler, 7 * MIB)
    started = time.perf_counter()
    response = client.post(f"/cds-services/{ORDER_SELECT}", data=raw, content_type="application/json")
    assert response.status_code == 413, response.get_data(as_text=True)[:300]
    assert "more than a FHIR record has" in response.get_json()["issue"][0]["diagnostics"]
    assert time.perf_counter() - started < 1.0  # counted, not parsed (parsing alone takes longer)


def test_a_large_realistic_body_is_still_answered(client):
    raw = _padded(b'{"url":"http://example.org/x","valueString":"a note about the record"},', 7 * MIB)
    response = client.post(f"/cds-services/{ORDER_SELECT}", data=raw, content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert "mcas.neuromuscular-blocker" in rule_ids(response.get_json()["cards"])


def test_a_full_budget_makes_a_call_wait_then_503_with_retry_after(app_config):
    app = create_app({**app_config, "PARSE_BUDGET_BYTES": 4 * MIB})
    client = app.test_client()
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    with app.app_context():
        budget = admission.budget()
        hog = budget.admit(4 * MIB, wait_seconds=0)  # another call holding the whole budget
    started = time.perf_counter()
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=body)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert admission.WAIT_SECONDS <= time.perf_counter() - started < admission.WAIT_SECONDS + 1.0
    threading.Timer(0.1, hog.release).start()  # the other call ends while this one waits
    assert client.post(f"/cds-services/{ORDER_SELECT}", json=body).status_code == 200


def test_every_call_gives_its_share_back(client, app):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    assert client.post(f"/cds-services/{ORDER_SELECT}", json=body).status_code == 200
    assert client.post(f"/cds-services/{ORDER_SELECT}", json={"hook": "order-select"}).status_code == 400
    with app.app_context():
        assert admission.budget().used == 0


def test_a_call_larger_than_the_whole_budget_is_admitted_alone_not_never():
    budget = memory.Budget(10)
    alone = budget.admit(50, wait_seconds=0)
    with pytest.raises(memory.Busy):
        budget.admit(1, wait_seconds=0.05)
    alone.release()
    budget.admit(1, wait_seconds=0).release()
    assert budget.used == 0


def test_a_fetch_that_outlives_its_call_is_not_charged():
    budget = memory.Budget(100)
    ticket = budget.admit(10, wait_seconds=0)
    ticket.release()
    assert ticket.charge(50) and budget.used == 0


def test_a_fhir_answer_shaped_like_no_record_makes_the_key_unavailable(app_config, service_log):
    from fakefhir import Exchange, FakeFhir

    def tiny_objects(exchange: Exchange) -> None:
        exchange.send(200, b'{"resourceType":"Bundle","type":"searchset","entry":[' + b"{}," * MIB + b"{}]}")

    with FakeFhir(tiny_objects) as fhir:
        client = create_app({**app_config, "OPEN_FHIR_SERVERS": [fhir.url()]}).test_client()
        body = request_fixture("order-select/mcas-adult--succinylcholine.json")
        del body["prefetch"]["conditions"]
        body["fhirServer"] = fhir.url()
        response = client.post(f"/cds-services/{ORDER_SELECT}", json=body)
        assert fhir.asked  # fetched, then refused unparsed
    assert response.status_code == 412  # the conditions are required
    assert "conditions" in response.get_json()["issue"][0]["diagnostics"]
    # refused by its shape before parsing, not after parsing a million objects
    assert any("the FHIR answer is refused" in line and "more than a FHIR record has" in line for line in service_log)
