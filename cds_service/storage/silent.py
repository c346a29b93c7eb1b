"""Go-live records: silent findings ("would have shown"), each card's knowledge release, and
the number of hook calls per week (migration 006).

Written with the issued cards, once the answer is sent, best effort like them: a failure is
logged and counted (``cds_storage_failures_total{operation="record_silent"}``) and never costs
a call. Read by ``cds-service feedback report`` (silent firings per week and per 1,000 calls,
override rates per release). Uses ``Storage``'s connections and transactions; only storage
modules talk to the database.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable

from cds_service.core.issued import (
    IssuedCard,
    SilentFinding,  # noqa: F401 - re-exported for callers
)
from cds_service.storage.backends import PRUNE, Operation
from cds_service.storage.values import iso

if TYPE_CHECKING:
    from cds_service.storage.database import Database as Storage

RECORD = Operation("record_silent", durable=False, wait_ms=200, deadline_ms=700)
PRUNE_BATCH = 1000


def iso_week(when: datetime) -> str:
    year, week, _ = when.astimezone(timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def record_call(storage: Storage, service_id: str, hook_instance: str, release: str, issued: Iterable[IssuedCard],
                silent: Iterable[SilentFinding], patient_key: str | None = None, at: datetime | None = None) -> bool:
    """Count the call, and keep its cards' release and its silent findings; False when it could not."""
    at = at or datetime.now(timezone.utc)
    when = iso(at)
    findings = [(str(uuid.uuid4()), f.rule_id, f.item_key, f.indicator, service_id, hook_instance, patient_key,
                 release, when) for f in silent]
    try:
        with storage.transaction(RECORD) as tx:
            storage.execute(tx, "INSERT INTO call_count VALUES (?, ?, ?, 1) ON CONFLICT (week, service_id, "
                             "knowledge_release) DO UPDATE SET calls = call_count.calls + 1",
                             (iso_week(at), service_id, release))
            storage.executemany(tx, "INSERT INTO card_release VALUES (?, ?) ON CONFLICT DO NOTHING",
                                 [(c.uuid, release) for c in issued])
            storage.executemany(tx, "INSERT INTO silent_finding VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", findings)
        return True
    except storage.errors as exc:
        storage.failed(RECORD, exc)
        return False


def history(storage: Storage, since: str | None = None, until: str | None = None) -> dict[str, list[Any]]:
    """For reports, within [since, until) (ISO 8601 UTC as stored): silent findings as (rule_id,
    found_at, knowledge_release); calls as (week, knowledge_release, calls); each issued card's
    release as (card_uuid, knowledge_release); issued cards as (rule_id, issued_at, card_uuid)."""
    conn = storage._connection()
    low, high = since or "", until or "\uffff"
    silent = storage.execute(conn, "SELECT rule_id, found_at, knowledge_release FROM silent_finding "
                              "WHERE found_at >= ? AND found_at < ? ORDER BY found_at", (low, high)).fetchall()
    calls = conn.execute("SELECT week, knowledge_release, SUM(calls) FROM call_count "
                         "GROUP BY week, knowledge_release ORDER BY week").fetchall()
    releases = conn.execute("SELECT card_uuid, knowledge_release FROM card_release").fetchall()
    issued = storage.execute(conn, "SELECT DISTINCT r.rule_id, c.issued_at, c.card_uuid FROM issued_card c "
                              "JOIN card_rule r ON r.card_uuid = c.card_uuid WHERE c.issued_at >= ? AND "
                              "c.issued_at < ? ORDER BY c.issued_at", (low, high)).fetchall()
    return {"silent": [tuple(r) for r in silent], "calls": [tuple(r) for r in calls],
            "releases": [tuple(r) for r in releases], "issued": [tuple(r) for r in issued]}


def prune(storage: Storage, now: datetime, keep_days: float) -> dict[str, int]:
    """Delete silent findings older than ``keep_days`` (the issued cards' retention), and the
    releases of cards pruned; called by the storage's ``Pruner`` after the issued cards."""
    before = iso(now - timedelta(days=keep_days))
    deleted = {"silent_finding": 0, "card_release": 0}
    jobs = [("silent_finding", "SELECT finding_id FROM silent_finding WHERE found_at < ? LIMIT ?",
             "DELETE FROM silent_finding WHERE finding_id = ?", (before,)),
            ("card_release", "SELECT card_uuid FROM card_release r WHERE NOT EXISTS "
                             "(SELECT 1 FROM issued_card c WHERE c.card_uuid = r.card_uuid) LIMIT ?",
             "DELETE FROM card_release WHERE card_uuid = ?", ())]
    for table, select, delete, params in jobs:
        while True:
            with storage.transaction(PRUNE) as tx:
                keys = [tuple(r) for r in storage.execute(tx, select, (*params, PRUNE_BATCH)).fetchall()]
                storage.executemany(tx, delete, keys)
            deleted[table] += len(keys)
            if len(keys) < PRUNE_BATCH:
                break
    return deleted
