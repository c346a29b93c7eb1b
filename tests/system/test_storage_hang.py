"""A hung or unreachable database costs no decision: client-side deadlines and the circuit breaker.

- **A hung PostgreSQL**: every process of the test cluster is stopped with SIGSTOP (what a
  frozen VM or a black-holed network looks like: the kernel still acknowledges TCP, so only the
  client can end a wait) and resumed with SIGCONT in a ``finally``. Needs CDS_TEST_POSTGRES_URL
  and the right to signal the server (root, or the server's user); skips loudly otherwise.
- **Refused connections**: a PostgreSQL URL to a loopback port nobody listens on.
- The breaker itself, on a fake clock.

Before these bounds, a call during the freeze waited as long as the freeze lasted (23 s here,
30 s in the reliability test of issue 24) and so did /readyz.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from helpers import POSTGRES_URL, request_fixture
from test_auth import ISSUER, JWKS, JWKS_URL, token
from test_storage import _card, _close, _overridden

from cds_service import create_app
from cds_service.errors import StorageUnavailable
from cds_service.storage.bounds import CircuitBreaker
from cds_service.storage.store import Storage

ORDER_SELECT = "back-pain-order-select"
FIXTURE = "order-select/mcas-adult--succinylcholine.json"
RULE = "mcas.neuromuscular-blocker"
BUDGET_SECONDS = 2.0
READYZ_SECONDS = 1.0

needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="HUNG POSTGRESQL NOT TESTED: CDS_TEST_POSTGRES_URL is not set"
                                    " (CI sets it; see .ci/run)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A schema of its own on the test cluster, dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def _cluster_pids() -> list[int]:
    """The postmaster of the test cluster (the parent of a backend) and all its children."""
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        postmaster = _parent(backend)  # while the backend lives
    return [postmaster] + [pid for pid in _all_pids() if _parent(pid) == postmaster]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1  # ended meanwhile


def _all_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pids.append(int(entry.name))
    return pids


@contextmanager
def frozen_postgres() -> Iterator[None]:
    """Every process of the test cluster stopped for the block; always resumed."""
    try:
        pids = _cluster_pids()
        os.kill(pids[0], 0)
    except (OSError, PermissionError) as exc:
        pytest.skip(f"HUNG POSTGRESQL NOT TESTED: the test cluster's processes cannot be signalled ({exc})")
    stopped: list[int] = []
    # Resumed after 20 s whatever happens: an unbounded wait then ends (and fails its time
    # assertion) instead of hanging the suite with the cluster stopped.
    safety = threading.Timer(20, lambda: _resume(stopped))
    safety.start()
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        yield
    finally:
        safety.cancel()
        _resume(stopped)


def _resume(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _timed(operation) -> tuple[float, object]:
    started = time.monotonic()
    try:
        result: object = operation()
    except Exception as exc:  # noqa: BLE001 - returned for the assertion
        result = exc
    return time.monotonic() - started, result


# --------------------------------------------------------------------------- the breaker

def test_the_breaker_opens_on_a_hang_at_once_and_after_three_refusals_and_retries_one_at_a_time():
    now = [0.0]
    breaker = CircuitBreaker(cool_down=5, failures_to_open=3, clock=lambda: now[0])
    breaker.failed(hung=False)
    breaker.failed(hung=False)
    assert breaker.admit()  # two refusals: still tried
    breaker.failed(hung=False)
    assert not breaker.admit() and breaker.state() == "open"
    now[0] = 5.0
    assert breaker.admit()  # the trial
    assert not breaker.admit()  # only one at a time
    breaker.failed(hung=True)
    assert not breaker.admit() and breaker.seconds_until_retry() == 5.0
    now[0] = 10.0
    assert breaker.admit()
    breaker.succeeded()
    assert breaker.state() == "closed" and breaker.admit() and breaker.admit()
    breaker.failed(hung=True)  # a hang opens it at once
    assert breaker.state() == "open"


def test_a_held_lock_does_not_open_the_breaker(tmp_path):
    """A lock wait that gives up is the database answering: the next call tries again."""
    from test_storage_faults import write_lock

    url = f"sqlite:///{tmp_path / 'locked.sqlite3'}"
    store = Storage(url)
    store.migrate()
    try:
        with write_lock(url):
            for _ in range(5):
                assert store.record_cards(ORDER_SELECT, "hook", [_card(RULE)]) is False
        assert store.breaker.state() == "closed"
        assert store.record_cards(ORDER_SELECT, "hook", [_card(RULE)]) is True
    finally:
        _close(store)


# --------------------------------------------------------------------------- a frozen PostgreSQL

@needs_postgres
def test_storage_operations_end_by_their_deadline_on_a_frozen_postgresql(pg_url):
    store = Storage(pg_url)
    store.migrate()
    store.breaker.cool_down = 0.5
    try:
        assert store.writable()  # a connection is open: the freeze catches it mid-conversation
        with frozen_postgres():
            took, result = _timed(lambda: store.recent_overrides("patient-key", _an_hour_ago()))
            assert took < 1.0 and isinstance(result, Exception)
            took, said = _timed(store.readiness)
            assert took < READYZ_SECONDS and str(said).startswith("not writable")
            took, refused = _timed(lambda: store.record_feedback(ORDER_SELECT, [_overridden(_card(RULE))]))
            assert took < 2.0 and isinstance(refused, StorageUnavailable)
            assert int(refused.headers()["Retry-After"]) > 0
            took, recorded = _timed(lambda: store.record_cards(ORDER_SELECT, "hook", [_card(RULE)]))
            assert took < 1.0 and recorded is False
            time.sleep(0.6)  # the breaker's cool-down: one trial, bounded by its deadline, reopens it
            took, said = _timed(store.readiness)
            assert took < READYZ_SECONDS and str(said).startswith("not writable")
        deadline = time.monotonic() + 10
        while not store.writable() and time.monotonic() < deadline:  # heals once resumed
            time.sleep(0.2)
        assert store.record_cards(ORDER_SELECT, "hook", [_card(RULE)]) is True
        assert store.breaker.state() == "closed"
    finally:
        _close(store)


@needs_postgres
def test_hook_calls_answer_with_cards_while_postgresql_is_frozen(pg_url, app_config):
    app = create_app({**app_config, "DATABASE_URL": pg_url, "AUTH_REQUIRED": True,
                      "TRUSTED_ISSUERS": {ISSUER: {"jwks_uri": JWKS_URL, **JWKS}}})
    client = app.test_client()
    call, feedback = f"/cds-services/{ORDER_SELECT}", f"/cds-services/{ORDER_SELECT}/feedback"
    bearer = lambda path: {"Authorization": f"Bearer {token(f'http://localhost{path}')}"}  # noqa: E731
    assert client.post(call, json=request_fixture(FIXTURE), headers=bearer(call)).status_code == 200
    try:
        with frozen_postgres():
            for _ in range(3):  # the replay check, the override lookup and the card record all bounded
                took, response = _timed(lambda: client.post(call, json=request_fixture(FIXTURE), headers=bearer(call)))
                assert took < BUDGET_SECONDS
                assert response.status_code == 200  # type: ignore[union-attr]
                assert [c["source"]["topic"]["code"] for c in response.get_json()["cards"]] == [RULE]  # type: ignore[union-attr]
            took, ready = _timed(lambda: client.get("/readyz"))
            assert took < READYZ_SECONDS
            assert ready.status_code == 200 and ready.get_json()["storage"].startswith("not writable")  # type: ignore[union-attr]
            item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}
            took, answer = _timed(lambda: client.post(feedback, json={"feedback": [item]}, headers=bearer(feedback)))
            assert took < BUDGET_SECONDS
            assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0  # type: ignore[union-attr]
    finally:
        _close(app.extensions["cds"].storage)


# --------------------------------------------------------------------------- refused connections

def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://cds:cds@127.0.0.1:{port}/cds"  # nobody listens there


def test_refused_connections_cost_a_call_nothing_once_the_breaker_is_open():
    pytest.importorskip("psycopg")
    store = Storage(_closed_port_url())
    for _ in range(3):  # three refusals in a row open it
        assert store.record_cards(ORDER_SELECT, "hook", [_card(RULE)]) is False
    assert store.breaker.state() == "open"
    took, said = _timed(store.readiness)
    assert took < 0.05 and str(said).startswith("not writable (the database failed just now")
    took, refused = _timed(lambda: store.record_feedback(ORDER_SELECT, [_overridden(_card(RULE))]))
    assert took < 0.05 and isinstance(refused, StorageUnavailable)
    assert int(refused.headers()["Retry-After"]) >= 5


def _an_hour_ago():
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) - timedelta(hours=1)


def test_a_server_that_accepts_but_never_answers_costs_at_most_the_deadline():
    """The kernel completes the handshake of a listening socket nobody serves (a hung postmaster):
    libpq would wait its 2 s minimum connect_timeout; the operation's deadline ends it sooner."""
    pytest.importorskip("psycopg")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        store = Storage(f"postgresql://cds:cds@127.0.0.1:{silent.getsockname()[1]}/cds")
        took, said = _timed(store.readiness)
        assert took < READYZ_SECONDS and str(said).startswith("not writable (the database did not answer")
        took, recorded = _timed(lambda: store.record_cards(ORDER_SELECT, "hook", [_card(RULE)]))
        assert took < 0.05 and recorded is False  # the breaker is open: not tried again for a while
