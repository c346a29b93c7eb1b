"""Shared fixtures, in flaskr's style (the suite's rooms: tests/unit one module at a time in process,
tests/behaviour the service through Flask's test client as an EHR calls it, tests/system real
processes, servers and browsers, marked ``system``): an app per test with its own SQLite file,
a client, a CLI runner, the FHIR fixtures, and a pinned clock."""
from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import NOW, POSTGRES_URL, SERVICES
from hypothesis import settings

# Test modules of one room import helpers of another's (test_auth's tokens, test_storage's records).
sys.path[:0] = [str(Path(__file__).parent / room) for room in ("unit", "behaviour", "system")]

from cds_service import create_app  # noqa: E402

# CI runs the property-based tests on a fixed seed so that a failure is reproducible;
# locally each run explores new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


class ClosingClient(FlaskClient):
    """A test client that closes each response as a server does once the answer is sent, and waits
    for the work the view leaves for after the answer (storing the issued cards, pruning: on the
    storage's background thread), so that it has run when the call returns. Werkzeug's client
    closes only buffered responses."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        response = super().open(*args, **kwargs)
        runtime = getattr(self.application, "extensions", {}).get("cds")
        if kwargs["buffered"] and runtime is not None:  # that work runs on the background thread
            assert runtime.storage.background.wait_idle(), "the work after the answer did not finish"
        return response


Flask.test_client_class = ClosingClient  # every app of the test session, however it was made


def _knowledge_built_once() -> None:
    """Each app of the session gets the knowledge compiled once per folder state (the compiled
    knowledge is immutable), instead of compiling it again for each of the ~1,000 apps the suite
    makes. A folder whose files change (the authoring tests edit copies) is compiled again."""
    import cds_service.web.app as factory

    compile_folder = factory.load_knowledge
    compiled: dict[tuple[Path, tuple[tuple[str, int, int], ...]], Any] = {}

    def load_knowledge(directory: Path) -> Any:
        folder = Path(directory).resolve()
        state = tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                             for p in folder.rglob("*") if p.is_file())) if folder.is_dir() else ()
        key = (folder, state)
        if key not in compiled:
            compiled[key] = compile_folder(directory)
        return compiled[key]

    factory.load_knowledge = load_knowledge


_knowledge_built_once()


def _files_state(folder: Path, pattern: str) -> tuple[tuple[str, int, int], ...]:
    return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob(pattern) if p.is_file()))


def _cases_read_once() -> None:
    """Each case folder is parsed once per state of its files (the YAML parse is most of a
    ``knowledge check``: ~0.5 s), instead of again by every check the authoring tests run on the
    same folder; every caller gets its own copy. A folder whose files change (the authoring tests
    edit copies) is read again, and a folder with problems raises each time."""
    import copy

    import cds_service.knowledge.cases as cases_module
    import cds_service.knowledge.checks as checks_module

    read = cases_module.read_cases
    parsed: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def read_cases(directory: Path, fixtures: Path | None = None) -> list[dict[str, Any]]:
        folder = Path(directory).resolve()
        personas = Path(fixtures).resolve() / "patients" if fixtures is not None else None
        key = (folder, _files_state(folder, "*.yaml"), personas,
               _files_state(personas, "*.json") if personas is not None else ())
        if key not in parsed:
            parsed[key] = read(directory, fixtures)
        return copy.deepcopy(parsed[key])

    cases_module.read_cases = read_cases
    checks_module.read_cases = read_cases


_cases_read_once()




def _with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of each backend: SQLite always, PostgreSQL when
    CDS_TEST_POSTGRES_URL is set (a schema of its own, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'storage.sqlite3'}"
        return
    if not POSTGRES_URL:
        pytest.skip("CDS_TEST_POSTGRES_URL is not set (CI sets it; see .ci/run)")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _with_search_path(POSTGRES_URL, schema)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def app_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "TESTING": True,
        "AUTH_REQUIRED": False,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'test.sqlite3'}",
        "CLOCK": lambda: NOW,
        "OPEN_FHIR_SERVERS": [],
        "PATIENT_KEY_SECRET": "test-only-patient-key-secret",
    }


@pytest.fixture
def app(app_config: dict[str, Any]):
    return create_app(app_config)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Hooks:
    """Posts hook requests the way an EHR does."""

    def __init__(self, client) -> None:
        self.client = client

    def call(self, body: dict[str, Any], service_id: str | None = None, **kwargs: Any):
        service_id = service_id or SERVICES[body["hook"]]
        return self.client.post(f"/cds-services/{service_id}", json=body, **kwargs)

    def cards(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.call(body)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["cards"]


@pytest.fixture
def hooks(client) -> Hooks:
    return Hooks(client)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        from pythonjsonlogger.json import JsonFormatter

        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def service_log():
    """Every line the service logs during the test, formatted as the service formats it."""
    handler = _Collect()
    logger = logging.getLogger("cds_service")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Every test under tests/system is marked ``system`` (``-m "not system"`` runs the rest)."""
    for item in items:
        if "system" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.system)
