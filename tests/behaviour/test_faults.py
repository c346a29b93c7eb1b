"""Resilience: a real misbehaving FHIR server.

The shared fake FHIR server (``fakefhir.FakeFhir``) on 127.0.0.1 answers every FHIR request with one
fault; nothing in the service is mocked or patched. For each fault the
service is called through the Flask test client with ``fhirServer`` pointing
at it, a dummy bearer token, and a prefetch that misses either the required
key (``conditions``) or only an optional one (``medications``). Whatever the
FHIR server does, the answer must come within the call budget, be 412 with an
OperationOutcome when required data could not be had, 200 with the cards the
available data supports when only optional data is missing, and never 500.

The faults injected and the slowest answer are printed at the end of the
module (visible with ``-s``) and written to /tmp/cds-faults-summary.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fakefhir import Exchange, FakeFhir, free_port
from helpers import persona, request_fixture, rule_ids, searchset

from cds_service import create_app

BUDGET_SECONDS = 1.0
BOUND_SECONDS = 1.5  # a bound on hanging, not a performance target
SLOW_SECONDS = 3.0  # the slow server sleeps longer than the whole budget
TOKEN = "dummy-access-token-for-fault-tests"
SUMMARY_FILE = Path("/tmp/cds-faults-summary.json")
PATIENT_VIEW = "back-pain-patient-view"
ORDER_SELECT = "back-pain-order-select"

FAULTS = {
    "slow": "sleeps 3 s before answering (longer than the 1 s budget)",
    "trickle": "sends headers, then one body byte every 0.2 s for 3 s",
    "5xx": "503 with an OperationOutcome body",
    "401": "401 with WWW-Authenticate: Bearer error=invalid_token",
    "refused": "connection refused (nothing listens on the port)",
    "invalid-json": "200 application/fhir+json with a truncated JSON body",
    "deep-json": "200 with JSON nested 100000 levels deep",
    "not-a-bundle": "200 with an OperationOutcome where a search Bundle belongs",
    "endless-pages": "a searchset whose next link points to itself, forever",
    "endless-chain": "a searchset whose next link always points to one more page (50 ms each)",
    "wrong-type": "a searchset Bundle of Patient resources for every search",
}


def _fault(exchange: Exchange) -> None:
    """The fault the server is set to (``_FaultServer.mode``), for every GET."""
    server: _FaultServer = exchange.server  # type: ignore[assignment]
    mode = server.mode
    base = f"http://127.0.0.1:{server.server_address[1]}"
    if mode == "slow":
        if server.stop.wait(SLOW_SECONDS):
            return
        exchange.json(200, searchset([]))
    elif mode == "trickle":
        exchange.send_response(200)
        exchange.send_header("Content-Type", "application/fhir+json")
        exchange.send_header("Content-Length", "1000")
        exchange.end_headers()
        for _ in range(15):
            if server.stop.wait(0.2):
                return
            exchange.write(b" ")
    elif mode == "5xx":
        exchange.json(503, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient"}]})
    elif mode == "401":
        exchange.json(401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]},
                      {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    elif mode == "invalid-json":
        exchange.send(200, b'{"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resou')
    elif mode == "deep-json":
        exchange.send(200, b"[" * 100_000 + b"]" * 100_000)
    elif mode == "not-a-bundle":
        exchange.json(200, {"resourceType": "OperationOutcome", "issue": [{"severity": "information",
                                                                            "code": "informational"}]})
    elif mode == "endless-pages":
        bundle = searchset(_matches(exchange))
        bundle["link"] = [{"relation": "self", "url": base + exchange.path},
                          {"relation": "next", "url": base + exchange.path}]
        exchange.json(200, bundle)
    elif mode == "endless-chain":
        if server.stop.wait(0.05):
            return
        page = server.pages = server.pages + 1
        bundle = searchset(_matches(exchange))
        bundle["link"] = [{"relation": "next", "url": f"{base}/{exchange.path.split('?')[0].strip('/')}?page={page}"}]
        exchange.json(200, bundle)
    elif mode == "healthy":
        exchange.json(200, searchset(_matches(exchange)))
    elif mode == "wrong-type":
        exchange.json(200, searchset(persona("mcas-ms-older-adult", "Patient")))
    else:  # pragma: no cover - a typo in a test
        exchange.json(500, {"resourceType": "OperationOutcome"})


def _matches(exchange: Exchange) -> list[dict[str, Any]]:
    """What a sane server would answer, so only the paging is at fault."""
    return persona("mcas-ms-older-adult", exchange.kind)


class _FaultServer(FakeFhir):
    """The shared fake FHIR server, with the fault to inject set between calls."""

    def __init__(self) -> None:
        super().__init__(_fault)
        self.mode = "5xx"
        self.pages = 0


@pytest.fixture(scope="module")
def fhir_server():
    with _FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def summary():
    answers: list[dict[str, Any]] = []
    yield answers
    if not answers:
        return
    slowest = max(answers, key=lambda a: a["seconds"])
    report = {
        "budget_seconds": BUDGET_SECONDS,
        "bound_seconds": BOUND_SECONDS,
        "faults": FAULTS,
        "calls": len(answers),
        "slowest": slowest,
        "answers": answers,
    }
    SUMMARY_FILE.write_text(json.dumps(report, indent=2), "utf-8")
    print(f"\nFHIR faults injected: {len(FAULTS)} ({', '.join(FAULTS)}); {len(answers)} service calls;"
          f" slowest answer {slowest['seconds']:.3f} s ({slowest['fault']}, {slowest['missing']} missing,"
          f" status {slowest['status']}); budget {BUDGET_SECONDS} s, bound {BOUND_SECONDS} s;"
          f" details in {SUMMARY_FILE}")


@pytest.fixture(scope="module")
def closed_port() -> int:
    return free_port()


@pytest.fixture
def client(app_config, fhir_server, closed_port):
    # loopback FHIR servers are read only when listed (an unlisted host must resolve to a public address)
    servers = [f"http://127.0.0.1:{port}/fhir" for port in (fhir_server.server_address[1], closed_port)]
    servers.append(f"http://127.0.0.1:{fhir_server.server_address[1]}/other-fhir")
    return create_app({**app_config, "CALL_BUDGET_SECONDS": BUDGET_SECONDS, "LOG_LEVEL": "ERROR",
                       "ISSUER_FHIR_SERVERS": {"https://ehr.example.org": servers}}).test_client()


def _body(fixture: str, server_url: str | None, drop: str) -> dict[str, Any]:
    body = request_fixture(fixture)
    del body["prefetch"][drop]
    if server_url:
        body["fhirServer"] = server_url
        body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cds-back-pain"}
    return body


def _call(client, service: str, body: dict[str, Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    response = client.post(f"/cds-services/{service}", json=body)
    return response, time.perf_counter() - started


def _server_url(fhir_server: _FaultServer, fault: str, closed_port: int) -> str:
    if fault == "refused":
        return f"http://127.0.0.1:{closed_port}/fhir"
    fhir_server.mode = fault
    fhir_server.pages = 0
    return f"http://127.0.0.1:{fhir_server.server_address[1]}/fhir"


@pytest.mark.parametrize("fault", list(FAULTS))
def test_required_data_behind_a_faulty_fhir_server_is_a_prompt_412(client, fhir_server, closed_port, summary,
                                                                   fault):
    fixture = "order-select/mcas-adult--succinylcholine.json"
    seen = len(fhir_server.asked)
    response, elapsed = _call(client, ORDER_SELECT, _body(fixture, _server_url(fhir_server, fault, closed_port), "conditions"))
    summary.append({"fault": fault, "missing": "conditions", "status": response.status_code,
                    "seconds": round(elapsed, 3)})
    assert response.status_code != 500, response.get_json()
    assert elapsed < BOUND_SECONDS, f"{fault}: answered after {elapsed:.2f} s"
    assert response.status_code == 412, response.get_json()
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "conditions" in outcome["issue"][0]["diagnostics"]
    assert TOKEN not in response.get_data(as_text=True)
    if fault != "refused":  # the fault was really met: the service did ask
        assert len(fhir_server.asked) > seen


@pytest.mark.parametrize("fault", list(FAULTS))
def test_optional_data_behind_a_faulty_fhir_server_still_gives_the_other_cards(client, fhir_server, closed_port,
                                                                              summary, fault):
    fixture = "patient-view/mcas-ms-older-adult--chart-open.json"
    expected, _ = _call(client, PATIENT_VIEW, _body(fixture, None, "medications"))  # no FHIR access at all
    assert expected.status_code == 200
    expected_ids = rule_ids(expected.get_json()["cards"])
    assert expected_ids, "the fixture should give cards without medications"
    response, elapsed = _call(client, PATIENT_VIEW, _body(fixture, _server_url(fhir_server, fault, closed_port), "medications"))
    summary.append({"fault": fault, "missing": "medications", "status": response.status_code,
                    "seconds": round(elapsed, 3)})
    assert response.status_code != 500, response.get_json()
    assert elapsed < BOUND_SECONDS, f"{fault}: answered after {elapsed:.2f} s"
    assert response.status_code == 200, response.get_json()
    # exactly what the data that is there supports: rules reading medications are skipped, not guessed
    assert rule_ids(response.get_json()["cards"]) == expected_ids


def test_stuck_fetches_do_not_starve_later_calls(client, fhir_server):
    """Fetches that outlive their call (a trickling server) must not block the next calls' fetches.

    Two calls that miss every prefetch key leave ten fetches talking to a
    trickling server; a third call right after, to a healthy server (another
    base URL: the trickling one's bulkhead is full by design), must still get
    its data (the fetch pool has eight threads per process).
    """
    fixture = "order-select/mcas-adult--succinylcholine.json"
    for _ in range(2):
        body = _body(fixture, _server_url(fhir_server, "trickle", 0), "conditions")
        body["prefetch"].clear()
        response, elapsed = _call(client, ORDER_SELECT, body)
        assert response.status_code == 412 and elapsed < BOUND_SECONDS
    body = _body(fixture, _server_url(fhir_server, "healthy", 0).replace("/fhir", "/other-fhir"), "conditions")
    response, elapsed = _call(client, ORDER_SELECT, body)
    assert elapsed < BOUND_SECONDS
    assert response.status_code == 200, response.get_json()
    assert "mcas.neuromuscular-blocker" in rule_ids(response.get_json()["cards"])
