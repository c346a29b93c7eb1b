"""Storage faults never cost a decision: real faults, nothing mocked.

- **A held write lock.** SQLite: another process holds ``BEGIN EXCLUSIVE``
  (in WAL mode every writer waits, readers go on); PostgreSQL: another session
  holds ``LOCK TABLE ... IN EXCLUSIVE MODE``. Hook calls answer with their
  cards within the call budget (the card record waits at most 200 ms, then is
  given up, logged and counted); feedback answers 503 with ``Retry-After``;
  ``/readyz`` stays 200 and says the storage is not writable (the instance still
  decides); the JWT replay check still refuses a replay.
- **A database that cannot be written.** The SQLite file is made immutable
  with ``chattr +i``: the tests run as root, and root ignores file modes
  (``chmod 0444`` would not stop a single write); as another user ``chmod
  0444`` is used instead. A connection opened on such a file is read-only for
  good, which is what kept the service failing after the file was writable
  again. The real server (``cds-service serve``, gunicorn, 2 workers) is
  used, since its workers open their connections after the fault.
- **A full disk.** The database lives on its own small tmpfs (mounted for the
  test; root only) that a filler file fills to the last byte; removing the
  filler clears the fault.
- **A broken connection** (SQLite: opened while the file was immutable;
  PostgreSQL: the server ends the session with ``pg_terminate_backend``) heals:
  the 60 writes after the fault is cleared all succeed.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests
from helpers import request_fixture
from processes import Service
from test_auth import ISSUER, JWKS, JWKS_URL, token
from test_metrics import metric_value
from test_storage import _card, _close, _overridden

from cds_service import create_app
from cds_service.errors import StorageUnavailable, StorageUnusable
from cds_service.storage.store import Storage

ORDER_SELECT = "back-pain-order-select"
FIXTURE = "order-select/mcas-adult--succinylcholine.json"
RULE = "mcas.neuromuscular-blocker"
BUDGET_SECONDS = 2.0  # the service's call budget: a bound on hanging, not a performance target
LOCK_SECONDS = 60.0  # a bound only: the lock is held for the block, however long a loaded machine takes


@contextmanager
def write_lock(url: str, seconds: float = LOCK_SECONDS) -> Iterator[None]:
    """Another process (SQLite) or session (PostgreSQL) holds the write lock for the block."""
    if url.startswith("sqlite:///"):
        holder = subprocess.Popen([sys.executable, "-c", (
            "import select, sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
            "select.select([sys.stdin], [], [], float(sys.argv[2])); c.execute('ROLLBACK')\n"),
            url[len("sqlite:///"):], str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            yield
        finally:
            holder.kill()
            holder.communicate(timeout=10)  # reaped, its pipe closed
        return
    import psycopg

    with psycopg.connect(url) as session:  # a transaction: the lock is held until it ends
        session.execute("LOCK TABLE issued_card, issued_suggestion, feedback, jwt_replay IN EXCLUSIVE MODE")
        yield
        session.rollback()


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """The SQLite file cannot be opened for writing for the block (see the module's docstring)."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"READ-ONLY DATABASE NOT TESTED: chattr +i failed on {path} ({made.stderr.strip()}); as root"
                        " no other way makes a file unwritable (file modes do not apply to root)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    path.chmod(0o444)
    try:
        yield
    finally:
        path.chmod(0o644)


@contextmanager
def small_disk(folder: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` for the block."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"FULL DISK NOT TESTED: a tmpfs cannot be mounted here ({mounted.stderr.strip()}; needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Take every free byte of the file system ``folder`` is on; remove the file to give them back."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:  # ENOSPC: full; then the last partial block
        try:
            while True:
                os.write(fd, b"\0" * 512)
        except OSError:
            pass
    finally:
        os.close(fd)
    return filler


def _storage(url: str) -> Storage:
    store = Storage(url)
    store.migrate()
    return store


# --------------------------------------------------------------------------- storage, both backends

def test_a_held_write_lock_costs_no_card_and_refuses_feedback_with_503(database_url):
    store = _storage(database_url)
    try:
        assert store.remember_jti(ISSUER, "before-the-lock", time.time() + 300)
        with write_lock(database_url):
            started = time.monotonic()
            assert store.record_cards(ORDER_SELECT, "hook-1", [_card(RULE)]) is False  # given up, not raised
            assert time.monotonic() - started < 5.0  # gave up after its 200 ms wait, not the old 10 s and more
            with pytest.raises(StorageUnavailable) as refused:
                store.record_feedback(ORDER_SELECT, [_overridden(_card(RULE))])
            assert refused.value.status == 503 and refused.value.headers()["Retry-After"].isdigit()
            assert not store.writable()
            # the replay cache: a replay of a stored id is still refused (read from the database),
            # a new id is let through and remembered in this process
            assert store.remember_jti(ISSUER, "before-the-lock", time.time() + 300) is False
            assert store.remember_jti(ISSUER, "during-the-lock", time.time() + 300) is True
            assert store.remember_jti(ISSUER, "during-the-lock", time.time() + 300) is False
        assert store.writable()
        card = _card(RULE)
        assert store.record_cards(ORDER_SELECT, "hook-2", [card]) is True
        assert store.record_feedback(ORDER_SELECT, [_overridden(card)]) == [(RULE, "overridden")]
        assert store.row_counts()["issued_card"] == 1  # only the card recorded after the lock
    finally:
        _close(store)


def test_replay_check_can_fail_closed(database_url):
    store = Storage(database_url, replay_fail_closed=True)
    store.migrate()
    try:
        with write_lock(database_url):
            with pytest.raises(StorageUnavailable):
                store.remember_jti(ISSUER, "during-the-lock", time.time() + 300)
    finally:
        _close(store)


def test_a_broken_connection_heals(database_url, tmp_path):
    store = _storage(database_url)
    try:
        if database_url.startswith("sqlite:///"):
            fresh = Storage(database_url)  # its first connection is opened while the file is immutable
            with unwritable(Path(database_url[len("sqlite:///"):])):
                assert fresh.record_cards(ORDER_SELECT, "hook-0", [_card(RULE)]) is False
            store, fresh = fresh, store
            _close(fresh)
        else:
            import psycopg

            with store.reading() as conn:  # the one pooled connection: the next operation takes it
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert store.record_cards(ORDER_SELECT, "hook-0", [_card(RULE)]) is False  # the session is gone
        healed = [store.record_cards(ORDER_SELECT, f"hook-{n}", [_card(RULE)]) for n in range(1, 61)]
        assert healed.count(True) == 60
        assert store.row_counts()["issued_card"] == 60
        assert store.writable()
    finally:
        _close(store)


def test_opening_refuses_a_database_that_takes_no_writes(database_url):
    """SQLite: an immutable file; PostgreSQL: sessions that are read-only (as on a standby)."""
    _close(_storage(database_url))  # made and migrated while writable
    if database_url.startswith("sqlite:///"):
        path = Path(database_url[len("sqlite:///"):])
        with unwritable(path), pytest.raises(StorageUnusable) as refused:
            Storage(database_url).open_for_service()
        assert f"SQLite file {path} cannot be written (SQLITE_READONLY" in str(refused.value)
    else:
        read_only = database_url + "%20-cdefault_transaction_read_only%3Don"  # appended to options=
        store = Storage(read_only)
        with pytest.raises(StorageUnusable) as refused:
            store.open_for_service()
        _close(store)
        assert "cannot be written (ReadOnlySqlTransaction (SQLSTATE 25006)" in str(refused.value)
        assert "cds_test:" not in str(refused.value)  # no password in the message


def test_start_up_refuses_an_unwritable_database_naming_it(tmp_path, app_config):
    path = tmp_path / "test.sqlite3"
    create_app(app_config)  # creates and migrates the file
    with unwritable(path):
        with pytest.raises(StorageUnusable) as refused:
            create_app(app_config)
    message = str(refused.value)
    assert str(path) in message and "SQLITE_READONLY" in message and "cannot be written" in message


# --------------------------------------------------------------------------- the service, in-process

@pytest.fixture
def secure_app(app_config):
    return create_app({**app_config, "AUTH_REQUIRED": True, "TRUSTED_ISSUERS": {ISSUER: {"jwks_uri": JWKS_URL, **JWKS}}})


def _bearer(path: str, jti: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(f'http://localhost{path}', jti=jti)}"}


def test_hook_calls_answer_with_cards_while_the_database_is_locked(secure_app, app_config):
    client = secure_app.test_client()
    call, feedback = f"/cds-services/{ORDER_SELECT}", f"/cds-services/{ORDER_SELECT}/feedback"
    failures_before = metric_value(client, "cds_storage_failures_total", operation="record_cards")
    with write_lock(app_config["DATABASE_URL"]):
        for _ in range(3):
            started = time.monotonic()
            response = client.post(call, json=request_fixture(FIXTURE), headers=_bearer(call))
            assert time.monotonic() - started < BUDGET_SECONDS
            assert response.status_code == 200, response.get_json()
            assert [c["source"]["topic"]["code"] for c in response.get_json()["cards"]] == [RULE]
        replayed = _bearer(call, jti=str(uuid.uuid4()))
        assert client.post(call, json=request_fixture(FIXTURE), headers=replayed).status_code == 200
        assert client.post(call, json=request_fixture(FIXTURE), headers=replayed).status_code == 401
        item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}
        answer = client.post(feedback, json={"feedback": [item]}, headers=_bearer(feedback))
        assert answer.status_code == 503
        assert int(answer.headers["Retry-After"]) > 0
        assert answer.get_json()["resourceType"] == "OperationOutcome"
        assert answer.get_json()["issue"][0]["code"] == "transient"
        started = time.monotonic()
        ready = client.get("/readyz")  # still ready: hook calls answer with cards; the body says why
        assert time.monotonic() - started < 1.0
        assert ready.status_code == 200 and ready.get_json()["storage"].startswith("not writable")
    assert metric_value(client, "cds_storage_failures_total", operation="record_cards") >= failures_before + 4
    assert client.post(feedback, json={"feedback": [item]}, headers=_bearer(feedback)).status_code == 200
    assert client.get("/readyz").get_json()["storage"] == "writable"


def test_a_full_disk_costs_no_decision_and_the_service_heals(tmp_path, app_config):
    with small_disk(tmp_path / "small") as disk:
        app = create_app({**app_config, "DATABASE_URL": f"sqlite:///{disk / 'cds.sqlite3'}"})
        client = app.test_client()
        call, feedback = f"/cds-services/{ORDER_SELECT}", f"/cds-services/{ORDER_SELECT}/feedback"
        item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}
        failures_before = metric_value(client, "cds_storage_failures_total", operation="record_cards")
        filler = fill(disk)
        said = client.get("/readyz").get_json()["storage"]  # its probe rolls back: the free space is asked
        assert said.startswith("not writable (the disk holding the database has"), said
        during = [client.post(call, json=request_fixture(FIXTURE)) for _ in range(10)]
        assert [(r.status_code, len(r.get_json()["cards"])) for r in during] == [(200, 1)] * 10
        refused = client.post(feedback, json={"feedback": [item]})
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
        assert metric_value(client, "cds_storage_failures_total", operation="record_cards") >= failures_before + 10
        filler.unlink()
        healed = [client.post(call, json=request_fixture(FIXTURE)).status_code for _ in range(60)]
        assert healed == [200] * 60
        assert client.post(feedback, json={"feedback": [item]}).status_code == 200
        assert client.get("/readyz").get_json()["storage"] == "writable"
        assert app.extensions["cds"].storage.row_counts()["issued_card"] == 60  # only those after the fault
        _close(app.extensions["cds"].storage)


# --------------------------------------------------------------------------- the real server

def _serve(tmp_path: Path, database: Path, name: str) -> Service:
    """``cds-service serve`` on the database, not waited for (a test decides what ready means)."""
    return Service(tmp_path, name, "--workers", "2", env={"CDS_DATABASE_URL": f"sqlite:///{database}"})


def _wait_up(service: Service) -> None:
    """Up as soon as it answers /healthz, which opens no database connection (/readyz would)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and service.process.poll() is None:
        try:
            requests.get(f"{service.base}/healthz", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    pytest.fail(f"server did not start: {service.log()[-2000:]}")


def _hook(base: str) -> tuple[int, list[str]]:
    response = requests.post(f"{base}/cds-services/{ORDER_SELECT}", json=request_fixture(FIXTURE), timeout=10)
    cards = response.json().get("cards", []) if response.status_code == 200 else []
    return response.status_code, [c["source"]["topic"]["code"] for c in cards]


def _feedback(base: str) -> requests.Response:
    item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}
    return requests.post(f"{base}/cds-services/{ORDER_SELECT}/feedback", json={"feedback": [item]}, timeout=10)


@pytest.mark.slow
def test_served_on_a_database_that_turns_read_only_and_back(tmp_path):
    database = tmp_path / "cds.sqlite3"
    service = _serve(tmp_path, database, "read-only")
    base = service.base
    try:
        _wait_up(service)
        with unwritable(database):  # before any worker opened its connection
            during = [_hook(base) for _ in range(20)]
            refused = _feedback(base)
            ready = requests.get(f"{base}/readyz", timeout=10)
        assert during == [(200, [RULE])] * 20
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert ready.status_code == 200 and ready.json()["storage"].startswith("not writable")
        healed = [_hook(base) for _ in range(60)]
        assert healed == [(200, [RULE])] * 60
        assert _feedback(base).status_code == 200
        assert requests.get(f"{base}/readyz", timeout=10).json()["storage"] == "writable"
    finally:
        service.stop()
    with sqlite3.connect(database) as conn:
        recorded = conn.execute("SELECT COUNT(*) FROM issued_card").fetchone()[0]
    conn.close()
    # Every card issued once healed is recorded, and no more than were issued. Those issued while
    # read-only were answered and are recorded best effort: refused then, except the last ones whose
    # records were still being gathered (group commit, per worker) when the file became writable.
    assert 60 <= recorded <= 80, recorded


@pytest.mark.slow
def test_serve_refuses_to_start_on_an_unwritable_database(tmp_path):
    database = tmp_path / "cds.sqlite3"
    Storage(f"sqlite:///{database}").migrate()
    with unwritable(database):
        service = _serve(tmp_path, database, "refused")
        try:
            service.process.wait(timeout=60)
        finally:
            service.stop()
    text = service.log()
    assert service.process.returncode == 1
    assert "cannot be written (SQLITE_READONLY" in text and str(database) in text
    assert "Traceback" not in text
