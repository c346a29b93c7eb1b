"""Storage of issued cards, feedback and the JWT replay cache.

SQLite by default (``sqlite:///path``), PostgreSQL by URL (``postgresql://…``)
when several instances share state; the same SQL and migrations serve both
(``migrations/*.sql``, applied in order and recorded in ``schema_version``).
Each process opens its own connection on first use, after a gunicorn fork;
SQLite runs in WAL mode with a busy timeout so several workers write safely.
A write returns only after it is committed: what the service acknowledges is
stored. Feedback is idempotent (same card, outcome and timestamp stored once).
Only this module talks to the database.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

from .cards import IssuedCard


class _Backend:
    """What differs between SQLite and PostgreSQL: connecting, placeholders, the lock to take."""

    placeholder = "?"
    begin = "BEGIN"
    migration_lock = ""  # run first in the migration transaction: start-ups migrate one at a time
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def connect(self) -> Any:
        raise NotImplementedError

    def set_durability(self, conn: Any, durable: bool) -> None:
        """Before BEGIN: whether the next commit waits for the disk."""

    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)


class _Sqlite(_Backend):
    begin = "BEGIN IMMEDIATE"  # take the write lock up front: no upgrade deadlocks between workers

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        # Switching a new file to WAL needs an exclusive lock and does not wait on the busy
        # timeout: another process creating the same database at once makes it fail. Retry.
        deadline = time.monotonic() + 10
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(0.02)
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def set_durability(self, conn: Any, durable: bool) -> None:
        # WAL with synchronous=NORMAL survives a killed process (the WAL is written before
        # COMMIT returns) and skips the fsync: ~5 ms saved on every hook call that issues cards.
        conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")


class _Postgres(_Backend):
    placeholder = "%s"
    # concurrent CREATE TABLE IF NOT EXISTS collide in pg_type; held until COMMIT (SQLite: BEGIN IMMEDIATE)
    migration_lock = "SELECT pg_advisory_xact_lock(4710326112)"

    def __init__(self, url: str) -> None:
        import psycopg  # only needed when a PostgreSQL URL is configured

        self.url = url
        self.errors = (psycopg.Error,)

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def set_durability(self, conn: Any, durable: bool) -> None:
        conn.execute("SET synchronous_commit = " + ("on" if durable else "off"))


def _backend(url: str) -> _Backend:
    if url.startswith("sqlite:///"):
        return _Sqlite(Path(url[len("sqlite:///"):]))
    if url.startswith(("postgresql://", "postgres://")):
        return _Postgres(url)
    raise ValueError(f"unsupported database URL scheme {url.split(':', 1)[0]!r} (use sqlite:/// or postgresql://)")


class Storage:
    def __init__(self, url: str) -> None:
        self.backend = _backend(url)
        self._local = threading.local()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self.backend.connect()
            self._local.conn, self._local.pid, self._local.durable = conn, os.getpid(), None
        return conn

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[Any]:
        """A write transaction. ``durable=False`` (issued-card records only) may lose its last
        commits on a power failure, never on a process crash; feedback is always durable."""
        conn = self._connection()
        if getattr(self._local, "durable", None) is not durable:  # one round trip saved per call
            self.backend.set_durability(conn, durable)
            self._local.durable = durable
        conn.execute(self.backend.begin)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _execute(self, conn: Any, statement: str, params: tuple[Any, ...] = ()) -> Any:
        return conn.execute(self.backend.sql(statement), params)

    def _executemany(self, conn: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            cursor = conn.cursor()
            cursor.executemany(self.backend.sql(statement), rows)

    def migrate(self) -> None:
        """Apply the migrations not yet applied, in one transaction; a concurrent start-up waits for it."""
        folder = resources.files(__package__).joinpath("migrations")
        scripts = sorted((e for e in folder.iterdir() if e.name.endswith(".sql")), key=lambda p: p.name)
        with self._transaction() as tx:
            if self.backend.migration_lock:
                tx.execute(self.backend.migration_lock)
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = {row[0] for row in tx.execute("SELECT version FROM schema_version").fetchall()}
            for entry in scripts:
                version = int(entry.name.split("_", 1)[0])
                if version in done:
                    continue
                for statement in entry.read_text("utf-8").split(";"):
                    if statement.strip():
                        tx.execute(statement)
                self._execute(tx, "INSERT INTO schema_version VALUES (?, ?) ON CONFLICT DO NOTHING", (version, _now()))

    def ping(self) -> bool:
        try:
            self._connection().execute("SELECT 1 FROM schema_version").fetchall()
            return True
        except self.backend.errors:
            self._local.conn = None  # reconnect next time
            return False

    def record_cards(self, service_id: str, hook_instance: str, issued: Iterable[IssuedCard],
                     patient_key: str | None = None) -> None:
        """The cards served, each with every rule it carries; ``patient_key`` is a keyed hash of the
        patient id (``pseudonym.patient_key``), never the id itself."""
        issued = list(issued)
        if not issued:
            return
        at = _now()
        with self._transaction(durable=False) as tx:
            self._executemany(tx, "INSERT INTO issued_card (card_uuid, rule_id, service_id, hook_instance, issued_at, "
                              "patient_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              [(c.uuid, c.rule_id, service_id, hook_instance, at, patient_key) for c in issued])
            self._executemany(tx, "INSERT INTO card_rule VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                              [(c.uuid, rule, key) for c in issued
                               for rule, key in zip(c.rule_ids, c.item_keys or ("",) * len(c.rule_ids))])
            self._executemany(tx, "INSERT INTO issued_suggestion VALUES (?, ?) ON CONFLICT DO NOTHING",
                              [(s, c.uuid) for c in issued for s in c.suggestion_uuids])

    def record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> None:
        rows = []
        for item in items:
            override = item.get("overrideReason") or {}
            reason = override.get("reason") or {}
            accepted = [_uuid(s["id"]) for s in item.get("acceptedSuggestions", [])]
            rows.append((
                _uuid(item["card"]), service_id, item["outcome"], item["outcomeTimestamp"],
                json.dumps(accepted) if accepted else None, reason.get("system"), reason.get("code"),
                reason.get("display"), override.get("userComment"), _now(),
            ))
        with self._transaction() as tx:
            self._executemany(tx, "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)

    def recent_overrides(self, patient_key: str, since: datetime) -> frozenset[tuple[str, str]]:
        """(rule id, item key) of the cards overridden for this patient at or after ``since``: one
        indexed query. Feedback times are the EHR's (any offset), so they are compared parsed."""
        rows = self._execute(
            self._connection(),
            "SELECT r.rule_id, r.item_key, f.outcome_timestamp FROM issued_card c "
            "JOIN card_rule r ON r.card_uuid = c.card_uuid JOIN feedback f ON f.card_uuid = c.card_uuid "
            "WHERE c.patient_key = ? AND f.outcome = 'overridden'", (patient_key,)).fetchall()
        return frozenset((rule, key) for rule, key, at in rows if _at_or_after(at, since))

    def remember_jti(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Remember a JWT id until it expires; False when it was already seen (a replay)."""
        with self._transaction() as tx:
            self._execute(tx, "DELETE FROM jwt_replay WHERE expires_at < ?", (time.time(),))
            cursor = self._execute(tx, "INSERT INTO jwt_replay VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                                   (issuer, jti, expires_at))
            return cursor.rowcount == 1

    def stats(self) -> dict[str, Any]:
        conn = self._connection()
        result: dict[str, Any] = {}
        # Per rule: a merged card counts once for every rule it carries, and so does its feedback.
        issued = conn.execute("SELECT rule_id, COUNT(DISTINCT card_uuid) FROM card_rule "
                              "GROUP BY rule_id ORDER BY rule_id").fetchall()
        for rule_id, count in issued:
            result[rule_id] = _entry(count)
        query = (
            "SELECT COALESCE(r.rule_id, '(unknown card)'), f.outcome, f.override_code, COUNT(DISTINCT f.card_uuid) "
            "FROM feedback f LEFT JOIN card_rule r ON r.card_uuid = f.card_uuid "
            "GROUP BY COALESCE(r.rule_id, '(unknown card)'), f.outcome, f.override_code"
        )
        for rule_id, outcome, reason, count in conn.execute(query).fetchall():
            entry = result.setdefault(rule_id, _entry(0))
            entry[outcome] += count
            if outcome == "overridden" and reason:
                entry["override_reasons"][reason] = entry["override_reasons"].get(reason, 0) + count
        return result

    def card_history(self, issued_since: str | None = None, issued_until: str | None = None) -> dict[str, list[Any]]:
        """Read-only, for reports: every issued card as (rule_id, issued_at) within the optional
        bounds (ISO 8601 UTC, as issued_at is stored), and every feedback item as (rule_id,
        card_uuid, outcome, outcome_timestamp, override_code, override_display). Feedback is
        not filtered here: its timestamps are the EHR's, with any offset, so the caller parses them."""
        conn = self._connection()
        issued = self._execute(
            conn, "SELECT DISTINCT r.rule_id, c.issued_at, c.card_uuid FROM issued_card c "
            "JOIN card_rule r ON r.card_uuid = c.card_uuid "
            "WHERE c.issued_at >= ? AND c.issued_at < ? ORDER BY c.issued_at",
            (issued_since or "", issued_until or "\uffff")).fetchall()
        issued = [row[:2] for row in issued]
        feedback = conn.execute(
            "SELECT DISTINCT COALESCE(r.rule_id, '(unknown card)'), f.card_uuid, f.outcome, f.outcome_timestamp, "
            "f.override_code, f.override_display FROM feedback f LEFT JOIN card_rule r ON r.card_uuid = f.card_uuid "
            "ORDER BY f.outcome_timestamp").fetchall()
        return {"issued": [tuple(row) for row in issued], "feedback": [tuple(row) for row in feedback]}


def _entry(issued: int) -> dict[str, Any]:
    return {"issued": issued, "accepted": 0, "overridden": 0, "override_reasons": {}}


def _at_or_after(timestamp: str, since: datetime) -> bool:
    try:
        at = datetime.fromisoformat(timestamp)
    except ValueError:
        return False  # an unreadable time suppresses nothing: the card is shown
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)) >= since


def _uuid(value: str) -> str:
    return value.lower().removeprefix("urn:uuid:")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
