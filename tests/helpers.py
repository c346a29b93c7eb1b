"""Test helpers shared by the test modules (tests import these, never conftest):
fixture files, the pinned clock, the service ids, card rule ids, and FHIR
searchsets built from a persona's resources."""
from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
# A PostgreSQL server for the storage tests; .ci/run starts one and sets this.
POSTGRES_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "")
SERVICES = {
    "patient-view": "back-pain-patient-view",
    "order-select": "back-pain-order-select",
    "order-sign": "back-pain-order-sign",
}


def load_fixture(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text("utf-8"))


def request_fixture(relative: str) -> dict[str, Any]:
    return copy.deepcopy(load_fixture(f"requests/{relative}"))


def rule_ids(cards: list[dict[str, Any]]) -> list[str]:
    return [card["source"]["topic"]["code"] for card in cards]


def persona(name: str, resource_type: str) -> list[dict[str, Any]]:
    """The resources of one type in a fixture patient's record (fhir_fixtures/patients/)."""
    bundle = load_fixture(f"patients/{name}.json")
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A FHIR search answer holding ``resources``, as a FHIR server sends it."""
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources]}


@contextlib.contextmanager
def serving(server: Any) -> Iterator[Any]:
    """A stdlib HTTP server (a test's FHIR server) answering in a thread; shut down on exit.
    A server with a ``stop`` event has it set first, so handlers that wait on it return."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        if hasattr(server, "stop"):
            server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
