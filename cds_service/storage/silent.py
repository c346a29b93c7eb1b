"""Go-live records: silent findings ("would have shown"), each card's knowledge release, and
the number of hook calls per week (migration 006).

Written with the issued cards, once the answer is sent, in the same transaction
(``issued.IssuedCards.record``), best effort like them: a failure is logged and counted
(``cds_storage_failures_total{operation="record_silent"}``) and never costs a call. Read by ``cds-service feedback report`` (silent firings per week and per 1,000 calls,
override rates per release). Uses ``Storage``'s connections and transactions; only storage
modules talk to the database.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from sqlalchemy import Connection, text

from cds_service.core.issued import (
    IssuedCard,
    SilentFinding,  # noqa: F401 - re-exported for callers
    new_id,
)
from cds_service.storage.backends import PRUNE, Operation
from cds_service.storage.values import iso

if TYPE_CHECKING:
    from cds_service.storage.database import Database as Storage
    from cds_service.storage.issued import CallRecord

RECORD = Operation("record_silent", durable=False, wait_ms=200, deadline_ms=700)
PRUNE_BATCH = 1000

COUNT_CALLS = text("INSERT INTO call_count VALUES (:week, :service_id, :release, :calls) ON CONFLICT (week, service_id, "
                   "knowledge_release) DO UPDATE SET calls = call_count.calls + excluded.calls")
INSERT_RELEASE = text("INSERT INTO card_release VALUES (:card_uuid, :release) ON CONFLICT DO NOTHING")
INSERT_FINDING = text("INSERT INTO silent_finding VALUES (:finding_id, :rule_id, :item_key, :indicator, :service_id, "
                      ":hook_instance, :patient_key, :release, :at)")
SILENT_SINCE = text("SELECT rule_id, found_at, knowledge_release FROM silent_finding "
                    "WHERE found_at >= :low AND found_at < :high ORDER BY found_at")
CALLS = text("SELECT week, knowledge_release, SUM(calls) FROM call_count GROUP BY week, knowledge_release ORDER BY week")
RELEASES = text("SELECT card_uuid, knowledge_release FROM card_release")
ISSUED_SINCE = text("SELECT DISTINCT r.rule_id, c.issued_at, c.card_uuid FROM issued_card c "
                    "JOIN card_rule r ON r.card_uuid = c.card_uuid WHERE c.issued_at >= :low AND "
                    "c.issued_at < :high ORDER BY c.issued_at")


def iso_week(when: datetime) -> str:
    year, week, _ = when.astimezone(timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def record_call(storage: Storage, service_id: str, hook_instance: str, release: str, issued: Iterable[IssuedCard],
                silent: Iterable[SilentFinding], patient_key: str | None = None, at: datetime | None = None) -> bool:
    """Count the call, and keep its cards' release and its silent findings, in a transaction of
    their own; False when it could not. (A hook call's are written with its cards instead.)"""
    from cds_service.storage.issued import CallRecord

    record = CallRecord(service_id, hook_instance, list(issued), patient_key, release=release,
                        silent=list(silent), at=at)
    try:
        with storage.transaction(RECORD) as tx:
            write(storage, tx, [record])
        return True
    except storage.errors as exc:
        storage.failed(RECORD, exc)
        return False


def write(storage: Storage, tx: Connection, records: Sequence[CallRecord]) -> None:
    """Within ``tx``: count the calls (per ISO week, service and release), and keep their cards'
    release and their silent findings."""
    if not records:
        return
    calls: Counter[tuple[str, str, str]] = Counter()
    releases, findings = [], []
    for r in records:
        at = r.at or datetime.now(timezone.utc)
        when = iso(at)
        calls[(iso_week(at), r.service_id, str(r.release))] += 1
        releases += [{"card_uuid": c.uuid, "release": r.release} for c in r.issued]
        findings += [{"finding_id": new_id(), "rule_id": f.rule_id, "item_key": f.item_key,
                      "indicator": f.indicator, "service_id": r.service_id, "hook_instance": r.hook_instance,
                      "patient_key": r.patient_key, "release": r.release, "at": when} for f in r.silent]
    storage.executemany(tx, COUNT_CALLS, [{"week": week, "service_id": service, "release": release, "calls": n}
                                          for (week, service, release), n in calls.items()])
    storage.executemany(tx, INSERT_RELEASE, releases)
    storage.executemany(tx, INSERT_FINDING, findings)


def history(storage: Storage, since: str | None = None, until: str | None = None) -> dict[str, list[Any]]:
    """For reports, within [since, until) (ISO 8601 UTC as stored): silent findings as (rule_id,
    found_at, knowledge_release); calls as (week, knowledge_release, calls); each issued card's
    release as (card_uuid, knowledge_release); issued cards as (rule_id, issued_at, card_uuid)."""
    bounds = {"low": since or "", "high": until or "\uffff"}
    with storage.reading() as conn:
        silent = conn.execute(SILENT_SINCE, bounds).fetchall()
        calls = conn.execute(CALLS).fetchall()
        releases = conn.execute(RELEASES).fetchall()
        issued = conn.execute(ISSUED_SINCE, bounds).fetchall()
    return {"silent": [tuple(r) for r in silent], "calls": [tuple(r) for r in calls],
            "releases": [tuple(r) for r in releases], "issued": [tuple(r) for r in issued]}


def prune(storage: Storage, now: datetime, keep_days: float) -> dict[str, int]:
    """Delete silent findings older than ``keep_days`` (the issued cards' retention), and the
    releases of cards pruned; called by the storage's ``Pruner`` after the issued cards."""
    before = iso(now - timedelta(days=keep_days))
    deleted = {"silent_finding": 0, "card_release": 0}
    jobs = [("silent_finding", text("SELECT finding_id AS pk FROM silent_finding WHERE found_at < :before LIMIT :n"),
             text("DELETE FROM silent_finding WHERE finding_id = :pk")),
            ("card_release", text("SELECT card_uuid AS pk FROM card_release r WHERE NOT EXISTS "
                                  "(SELECT 1 FROM issued_card c WHERE c.card_uuid = r.card_uuid) LIMIT :n"),
             text("DELETE FROM card_release WHERE card_uuid = :pk"))]
    for table, select, delete in jobs:
        while True:
            with storage.transaction(PRUNE) as tx:
                keys = [dict(r._mapping) for r in tx.execute(select, {"before": before, "n": PRUNE_BATCH})]
                storage.executemany(tx, delete, keys)
            deleted[table] += len(keys)
            if len(keys) < PRUNE_BATCH:
                break
    return deleted
