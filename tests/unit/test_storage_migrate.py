"""Alembic takes over a database the migration runner before it made (``schema_version`` holding
versions 1..N, the scripts in ``runner_migrations/`` as that runner applied them): stamped at the
matching revision, upgraded, every row kept; concurrent start-ups on it migrate one at a time.
SQLite always, PostgreSQL when CDS_TEST_POSTGRES_URL is set."""
from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_storage import _close, _rows, _tables, _versions, all_at_once

from cds_service.core.issued import IssuedCard
from cds_service.storage import migrate
from cds_service.storage.store import Storage

RUNNER_SCRIPTS = sorted((Path(__file__).parent / "runner_migrations").glob("*.sql"))
CARD = "0b8e6f3e-6a43-4c3b-9d7e-3f1f6f0c2a11"


def _runner(url: str, up_to: int) -> None:
    """What the runner before Alembic did: each script split on ";", recorded in schema_version,
    all in one transaction."""
    if url.startswith("sqlite:///"):
        conn: Any = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        mark = "?"
    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        mark = "%s"
    try:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        for script in RUNNER_SCRIPTS[:up_to]:
            for statement in script.read_text("utf-8").split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"INSERT INTO schema_version VALUES ({mark}, {mark})",
                         (int(script.name[:3]), "2026-11-01T00:00:00.000Z"))
        # rows of a service that ran on it
        conn.execute(f"INSERT INTO issued_card (card_uuid, rule_id, service_id, hook_instance, issued_at) "
                     f"VALUES ({mark}, 'mcas.neuromuscular-blocker', 'back-pain-order-select', 'h', "
                     f"'2026-11-02T00:00:00.000Z')", (CARD,))
        conn.execute(f"INSERT INTO card_rule VALUES ({mark}, 'mcas.neuromuscular-blocker', '')", (CARD,))
        conn.execute(f"INSERT INTO feedback VALUES ({mark}, 'back-pain-order-select', 'overridden', "
                     f"'2026-11-02T00:01:00Z', NULL, 's', 'patient-declined', NULL, NULL, '2026-11-02T00:01:00.000Z')",
                     (CARD,))
        conn.execute("INSERT INTO jwt_replay VALUES ('https://ehr.example.org', 'jti-old', 9999999999)")
        conn.execute("COMMIT")
    finally:
        conn.close()


def _kept(store: Storage, up_to: int) -> None:
    assert _rows(store, "SELECT card_uuid, rule_id FROM issued_card") == [(CARD, "mcas.neuromuscular-blocker")]
    assert store.stats()["mcas.neuromuscular-blocker"] == {
        "issued": 1, "accepted": 0, "overridden": 1, "override_reasons": {"patient-declined": 1}}
    assert store.row_counts()["jwt_replay"] == 1
    assert _versions(store) == [migrate.head()]
    # the runner's own record is left as it was (no longer written)
    assert [row[0] for row in _rows(store, "SELECT version FROM schema_version ORDER BY version")] == \
        list(range(1, up_to + 1))


@pytest.mark.parametrize("up_to", [6, 4])
def test_a_database_made_by_the_old_runner_is_taken_over_with_its_rows(database_url, up_to):
    _runner(database_url, up_to)
    store = Storage(database_url)
    try:
        store.open_for_service()  # stamped at revision 00<up_to>, then the rest applied
        _kept(store, up_to)
        assert {"silent_finding", "card_release", "call_count", "held_back_card"} <= _tables(store)
        card = IssuedCard(str(uuid.uuid4()), ("mcas.opioid-histamine",), (), ("7052",))
        assert store.record_cards("back-pain-order-select", "h2", [card], patient_key="k" * 64,
                                  held_back=[("mcas.opioid-histamine", "7052")])
        assert store.row_counts()["issued_card"] == 2 and store.row_counts()["held_back_card"] == 1
    finally:
        _close(store)
    again = Storage(database_url)  # a restart: nothing to do, nothing lost
    try:
        again.open_for_service()
        assert again.row_counts()["issued_card"] == 2 and _versions(again) == [migrate.head()]
    finally:
        _close(again)


def test_concurrent_start_ups_on_an_old_database_all_succeed(database_url):
    _runner(database_url, 6)
    all_at_once([Storage(database_url) for _ in range(6)], Storage.open_for_service, seconds=60)
    check = Storage(database_url)
    try:
        _kept(check, 6)
    finally:
        _close(check)
