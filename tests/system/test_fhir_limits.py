"""Byte caps on FHIR reads, over a real loopback FHIR server (issue 13).

The shared fake FHIR server (``fakefhir.FakeFhir``) on 127.0.0.1 answers every FHIR request with one
kind of oversized body: an endless stream (800 MB offered, no Content-Length),
a declared Content-Length of 800 MB, a gzip bomb (1 MiB on the wire, 1 GiB
decoded), or search pages that are each fine but together exceed the call's
cap. The service is called through the Flask test client (status, cards, log
lines) and, for the memory bound, in a fresh process (fhir_memory_probe.py)
whose peak resident memory (VmHWM) is read after the call. Nothing in the
service is mocked.

Bound: a worker's peak stays under MEMORY_BOUND_MIB while every prefetch key
of a patient-view call is fetched in parallel from such a server, and the
answer comes within the call budget (2 s, the default).
"""
from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from fakefhir import Exchange, FakeFhir
from helpers import persona, request_fixture, rule_ids, searchset

from cds_service import create_app

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dummy-access-token-for-limit-tests"
PATIENT_VIEW = "back-pain-patient-view"
ORDER_SELECT = "back-pain-order-select"
MIB = 1024 * 1024
OFFERED = 800 * 1000 * 1000  # what the streaming server would send if nobody hung up
BOMB_DECODED = 1024 * MIB
MEMORY_BOUND_MIB = 200
BUDGET_BOUND_SECONDS = 2.0  # CALL_BUDGET_SECONDS' default: the answer must come within it
SUMMARY_FILE = Path("/tmp/cds-fhir-limits-summary.json")


def gzip_bomb(decoded: int) -> bytes:
    """A valid gzip member of ``decoded`` spaces (JSON whitespace), about 1 KiB per MiB.

    Each MiB is compressed after a full flush, so every block after the first is the same
    bytes and the bomb is built without compressing a GiB; the trailer's CRC is computed."""
    chunk = b" " * MIB
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(decoded // MIB):
        crc = zlib.crc32(chunk, crc)
    end = compressor.flush(zlib.Z_FINISH)[:-8] + crc.to_bytes(4, "little") + (decoded % 2**32).to_bytes(4, "little")
    return first + block * (decoded // MIB - 1) + end


def _padded_page(base: str, page: int, pages: int) -> dict[str, Any]:
    """A Condition searchset page of about 200 kB: the persona's conditions and padding text."""
    bundle = searchset(persona("mcas-adult", "Condition"))
    bundle["meta"] = {"tag": [{"display": "x" * 200_000}]}
    if page < pages:
        bundle["link"] = [{"relation": "next", "url": f"{base}/Condition?page={page + 1}"}]
    return bundle


def _oversized(exchange: Exchange) -> None:
    """The kind of oversized answer the server is set to (``_LimitServer.mode``)."""
    server: _LimitServer = exchange.server  # type: ignore[assignment]
    mode = server.mode
    if mode in ("stream", "declared"):
        _stream(exchange, declared=mode == "declared")
    elif mode == "bomb":
        exchange.send(200, server.bomb, {"Content-Encoding": "gzip"})
    elif mode == "gzip":
        exchange.send(200, zlib.compress(json.dumps(searchset(persona("mcas-adult", exchange.kind))).encode(),
                                         wbits=31), {"Content-Encoding": "gzip"})
    elif mode == "pages":
        page = int(exchange.path.partition("page=")[2] or 1)
        with server.lock:
            server.last_page = max(server.last_page, page)  # before sending: no race with the reader
        exchange.json(200, _padded_page(server.url(), page, pages=20))


def _stream(exchange: Exchange, declared: bool) -> None:
    """A searchset that never ends: entries until OFFERED bytes or until the client hangs up."""
    exchange.send_response(200)
    exchange.send_header("Content-Type", "application/fhir+json")
    if declared:
        exchange.send_header("Content-Length", str(OFFERED))
    else:
        exchange.send_header("Connection", "close")  # the body ends when the connection does
    exchange.end_headers()
    exchange.write(b'{"resourceType": "Bundle", "type": "searchset", "entry": [')
    entry = b'{"resource": {"resourceType": "Condition", "id": "c"}},' * 1000
    while exchange.server.sent < OFFERED and not exchange.server.stop.is_set():
        exchange.write(entry)


class _LimitServer(FakeFhir):
    """The shared fake FHIR server, set to one kind of oversized answer at a time."""

    def __init__(self) -> None:
        super().__init__(_oversized)
        self.mode = "stream"
        self.last_page = 0
        self.bomb = gzip_bomb(BOMB_DECODED)

    def serve(self, mode: str) -> str:
        self.mode, self.sent, self.last_page = mode, 0, 0
        return self.url()


@pytest.fixture(scope="module")
def fhir_server():
    with _LimitServer() as server:
        yield server


@pytest.fixture(scope="module")
def summary():
    measured: dict[str, Any] = {}
    yield measured
    if measured:
        SUMMARY_FILE.write_text(json.dumps({"bound_mib": MEMORY_BOUND_MIB, "calls": measured}, indent=2), "utf-8")
        print(f"\nFHIR byte caps: {json.dumps(measured)}; details in {SUMMARY_FILE}")


def _app(app_config, fhir_server, **config: Any):
    return create_app({**app_config, "LOG_LEVEL": "INFO",
                       "ISSUER_FHIR_SERVERS": {"https://ehr.example.org": [fhir_server.url()]}, **config})


def _body(fixture: str, server: str, drop: tuple[str, ...]) -> dict[str, Any]:
    body = request_fixture(fixture)
    for key in drop:
        body["prefetch"].pop(key, None)
    body["fhirServer"] = server
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    return body


def _failures(service_log: list[str]) -> list[str]:
    return [json.loads(line)["error"] for line in service_log if '"prefetch fetch failed"' in line]


@pytest.mark.parametrize("mode, says", [
    ("stream", "a FHIR response exceeds 4194304 bytes; the rest is not read"),
    ("declared", "a FHIR response declared 800000000 bytes, over the cap of 4194304"),
    ("bomb", "a FHIR response exceeds 4194304 bytes; the rest is not read"),
])
def test_an_oversized_answer_for_required_data_is_a_412_and_the_read_stops_at_the_cap(
        app_config, fhir_server, service_log, mode, says):
    client = _app(app_config, fhir_server).test_client()
    fixture = "order-select/mcas-adult--succinylcholine.json"
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=_body(fixture, fhir_server.serve(mode), ("conditions",)))
    assert response.status_code == 412, response.get_json()
    assert "conditions" in response.get_json()["issue"][0]["diagnostics"]
    assert _failures(service_log) == [says]  # logged: the key and the cap, no data
    assert not any("Condition" in line or TOKEN in line for line in service_log)
    assert fhir_server.sent < 64 * MIB, "the service should hang up long before the server is done"


def test_a_gzip_bomb_for_optional_data_leaves_the_cards_of_the_rest(app_config, fhir_server, service_log):
    client = _app(app_config, fhir_server).test_client()
    fixture = "patient-view/mcas-ms-older-adult--chart-open.json"
    without = client.post(f"/cds-services/{PATIENT_VIEW}", json={**request_fixture(fixture), "prefetch": {
        k: v for k, v in request_fixture(fixture)["prefetch"].items() if k != "medications"}})
    expected = rule_ids(without.get_json()["cards"])
    assert expected, "the fixture should give cards without medications"
    response = client.post(f"/cds-services/{PATIENT_VIEW}", json=_body(fixture, fhir_server.serve("bomb"), ("medications",)))
    assert response.status_code == 200, response.get_json()
    assert rule_ids(response.get_json()["cards"]) == expected
    assert _failures(service_log) == ["a FHIR response exceeds 4194304 bytes; the rest is not read"]


def test_a_gzip_answer_within_the_cap_is_decoded_and_used(app_config, fhir_server):
    client = _app(app_config, fhir_server).test_client()
    fixture = "order-select/mcas-adult--succinylcholine.json"
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=_body(fixture, fhir_server.serve("gzip"), ("conditions",)))
    assert response.status_code == 200, response.get_json()
    assert "mcas.neuromuscular-blocker" in rule_ids(response.get_json()["cards"])


def test_pages_that_together_exceed_the_call_cap_make_the_key_unavailable(app_config, fhir_server, service_log):
    """Each 200 kB page is under the response cap; the call's cap (1 MB here) is met on the sixth."""
    client = _app(app_config, fhir_server, FHIR_MAX_CALL_BYTES=1_000_000, FHIR_MAX_PAGES=50).test_client()
    fixture = "order-select/mcas-adult--succinylcholine.json"
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=_body(fixture, fhir_server.serve("pages"), ("conditions",)))
    assert response.status_code == 412, response.get_json()
    assert _failures(service_log) == ["the FHIR responses of this call exceed 1000000 bytes; the rest is not read"]
    assert fhir_server.sent < 2_000_000


def test_pages_within_the_call_cap_are_all_read(app_config, fhir_server):
    client = _app(app_config, fhir_server, FHIR_MAX_PAGES=50).test_client()
    fixture = "order-select/mcas-adult--succinylcholine.json"
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=_body(fixture, fhir_server.serve("pages"), ("conditions",)))
    assert response.status_code == 200, response.get_json()
    assert "mcas.neuromuscular-blocker" in rule_ids(response.get_json()["cards"])
    assert fhir_server.last_page == 20  # every page asked for (a partial search is never used as complete)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stream", "bomb"])
def test_a_worker_reading_oversized_answers_stays_within_its_memory_bound(fhir_server, summary, mode):
    """Every key of a patient-view call (four, in parallel) meets the same oversized answer."""
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "fhir_memory_probe.py"), fhir_server.serve(mode)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    summary[mode] = {**measured, "server_sent_mib": round(fhir_server.sent / MIB, 1)}
    assert measured["status"] == 412  # patient-view's required data could not be had
    assert measured["peak_mib"] < MEMORY_BOUND_MIB, measured
    assert measured["seconds"] < BUDGET_BOUND_SECONDS, measured
