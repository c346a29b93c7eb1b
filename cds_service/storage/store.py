"""Storage of issued cards, feedback and the JWT replay cache.

SQLite by default (``sqlite:///path``), PostgreSQL by URL (``postgresql://…``)
when several instances share state; the same SQL and migrations serve both
(``migrations/*.sql``, applied in order and recorded in ``schema_version``).
Each thread of each process opens its own connection on first use, after a
gunicorn fork; SQLite runs in WAL mode so several workers write safely.

Faults (docs/metrics.md has the runbook): every write waits a short, bounded
time for a lock (``_Write``), and a connection that saw a database error is
dropped and reopened on the next use, so it heals when the database does.

- Issued cards are recorded best effort: a failure is logged and counted, and
  the hook call still answers with its cards.
- Feedback is acknowledged only once committed (durable); when it cannot be
  stored the caller gets StorageUnavailable (503, Retry-After), never a 200.
- The replay cache is shared through the database (correct across workers and
  instances) and also kept per process; when the database cannot take a JWT
  id, a token not seen here and not in the database is let through (counted
  and logged; SECURITY.md has the reasoning), unless ``replay_fail_closed``.

Retention: ``prune()`` removes issued cards, feedback and expired JWT ids past
their retention, in small batches; ``maybe_prune()`` does so at most once per
interval per process. Feedback is idempotent (same card, outcome and
timestamp stored once). Only this module talks to the database.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

from cds_service import metrics
from cds_service.core.issued import IssuedCard
from cds_service.errors import StorageUnavailable, StorageUnusable
from cds_service.storage.background import Background
from cds_service.storage.bounds import (CircuitBreaker, CircuitOpen, StorageFault, StorageTimeout,
                                        bounded_postgres_connection, connect_within)

log = logging.getLogger(__name__)

PRUNE_BATCH = 1000  # rows per pruning transaction: the write lock is held only briefly
PRUNE_SECONDS = 2.0  # one automatic pruning run stops after this; the next run goes on
REPLAY_MEMORY = 50_000  # JWT ids this process remembers itself (the database remembers all)
RETRY_AFTER_SECONDS = 5
# SQLite's automatic checkpoints run on commit but cannot reset the WAL while any connection
# reads from it; under steady load some connection always does, so the file only grows. Past
# WAL_CHECKPOINT_BYTES the card recorder (off the call's path) forces a checkpoint that waits
# briefly for the readers and truncates the file; WAL_LIMIT_BYTES is where it is cut back to
# after an ordinary checkpoint.
WAL_CHECKPOINT_BYTES = 16 << 20
WAL_LIMIT_BYTES = 4 << 20
MIN_FREE_BYTES = 1 << 20  # SQLite: less free space than this on the database's disk is reported as full


@dataclass(frozen=True)
class _Write:
    """How one kind of operation waits for a lock, whether its commit waits for the disk, and its
    deadline: the longest it may take in all, connecting included, whatever the server does."""

    operation: str  # in logs and in cds_storage_failures_total
    durable: bool
    wait_ms: int
    deadline_ms: int

    @property
    def settings(self) -> tuple[bool, int]:
        return self.durable, self.wait_ms


# A hook call must answer within its budget (2 s): what it waits for in storage (the replay check,
# the override lookup) waits at most 200 ms for a lock and 500 ms in all; /readyz answers within 1 s.
CARDS = _Write("record_cards", durable=False, wait_ms=200, deadline_ms=700)
REPLAY = _Write("replay", durable=False, wait_ms=200, deadline_ms=500)
PROBE = _Write("probe", durable=False, wait_ms=200, deadline_ms=600)
PRUNE = _Write("prune", durable=False, wait_ms=200, deadline_ms=2_000)  # per batch
FEEDBACK = _Write("feedback", durable=True, wait_ms=500, deadline_ms=1_500)  # then 503: the EHR sends it again
MIGRATE = _Write("migrate", durable=True, wait_ms=10_000, deadline_ms=60_000)  # start-ups queue behind each other


@dataclass(frozen=True)
class Retention:
    """How long rows are kept; ``interval_seconds`` between automatic prunes (0: never)."""

    issued_card_days: float = 90
    feedback_days: float = 365
    interval_seconds: float = 300


class _Backend:
    """What differs between SQLite and PostgreSQL: connecting, placeholders, the lock to take."""

    placeholder = "?"
    begin = "BEGIN"
    migration_lock = ""  # run first in the migration transaction: start-ups migrate one at a time
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def connect(self, wait_ms: int, seconds: float) -> Any:
        """A new connection, made within ``seconds``."""
        raise NotImplementedError

    def arm(self, conn: Any, deadline: float | None) -> None:
        """Make ``conn`` give up waiting at ``deadline`` (monotonic; None: no deadline)."""
        conn.deadline = deadline

    def unreachable(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database cannot be reached (for the breaker), rather than that
        it answered with a refusal (a held lock, a full disk, a read-only file)."""
        return isinstance(exc, StorageTimeout)

    def configure(self, conn: Any, write: _Write) -> None:
        """Before BEGIN: how long the next write waits for a lock, and whether its commit waits for the disk."""

    def describe(self) -> str:
        """Where the database is, without credentials."""
        raise NotImplementedError

    def error_code(self, exc: BaseException) -> str:
        """A short, data-free name for a database error (for logs and the start-up message)."""
        return type(exc).__name__

    def space_problem(self) -> str | None:
        """Why the database's disk will refuse the next writes, if this process can see it."""
        return None  # PostgreSQL: the server's disk, watched by the server's own monitoring

    def wal_too_big(self) -> bool:
        """Whether the write-ahead log has grown past WAL_CHECKPOINT_BYTES (SQLite only)."""
        return False

    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)


class _Sqlite(_Backend):
    begin = "BEGIN IMMEDIATE"  # take the write lock up front: no upgrade deadlocks between workers

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self, wait_ms: int, seconds: float) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=wait_ms / 1000, isolation_level=None, check_same_thread=False,
                               factory=_SqliteConnection)
        # Switching a new file to WAL needs an exclusive lock and does not wait on the busy
        # timeout: another process creating the same database at once makes it fail. Retry,
        # within the wait of the write that opened the connection.
        deadline = time.monotonic() + wait_ms / 1000
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
        # After a checkpoint the WAL file is cut back to this size (the default keeps the largest
        # it ever reached: 64 to 108 MB beside an 8 MB database under load).
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        # A statement past its operation's deadline is interrupted (SQLITE_INTERRUPT); lock waits
        # are bounded by busy_timeout instead, which this handler does not see.
        conn.set_progress_handler(conn.past_deadline, 1000)
        return conn

    def unreachable(self, exc: BaseException) -> bool:
        return isinstance(exc, StorageTimeout) or getattr(exc, "sqlite_errorname", "") == "SQLITE_INTERRUPT"

    def configure(self, conn: Any, write: _Write) -> None:
        # WAL with synchronous=NORMAL survives a killed process (the WAL is written before
        # COMMIT returns) and skips the fsync: ~5 ms saved on every hook call that issues cards.
        conn.execute("PRAGMA synchronous=FULL" if write.durable else "PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(write.wait_ms)}")

    def describe(self) -> str:
        return f"SQLite file {self.path}"

    def wal_too_big(self) -> bool:
        try:
            return os.path.getsize(f"{self.path}-wal") > WAL_CHECKPOINT_BYTES
        except OSError:
            return False

    def space_problem(self) -> str | None:
        # The readiness probe rolls back before anything reaches the disk (and the WAL reuses
        # space it already holds), so a full disk passes it: the free space is asked directly.
        try:
            disk = os.statvfs(self.path.parent)
        except OSError:
            return None  # the folder is missing: the probe itself fails
        free = disk.f_bavail * disk.f_frsize
        return f"the disk holding the database has {free} bytes free" if free < MIN_FREE_BYTES else None

    def error_code(self, exc: BaseException) -> str:
        return getattr(exc, "sqlite_errorname", None) or type(exc).__name__  # SQLITE_BUSY, SQLITE_READONLY, ...


class _Postgres(_Backend):
    placeholder = "%s"
    # concurrent CREATE TABLE IF NOT EXISTS collide in pg_type; held until COMMIT (SQLite: BEGIN IMMEDIATE)
    migration_lock = "SELECT pg_advisory_xact_lock(4710326112)"

    def __init__(self, url: str) -> None:
        import psycopg  # only needed when a PostgreSQL URL is configured

        self.url = url
        self.errors = (psycopg.Error,)

    def connect(self, wait_ms: int, seconds: float) -> Any:
        connection = bounded_postgres_connection()
        # Keepalives find a peer that vanished while the connection is idle, tcp_user_timeout
        # one that stops acknowledging what was sent; neither helps against a server whose
        # kernel still acknowledges (a stopped process): the per-operation deadline does.
        return connect_within(
            lambda: connection.connect(self.url, autocommit=True, connect_timeout=max(2, wait_ms // 1000),
                                       keepalives=1, keepalives_idle=10, keepalives_interval=3,
                                       keepalives_count=3, tcp_user_timeout=5_000),
            seconds, lambda conn: conn.close())

    def unreachable(self, exc: BaseException) -> bool:
        if isinstance(exc, StorageTimeout):
            return True
        sqlstate = getattr(exc, "sqlstate", None) or ""
        # no SQLSTATE: refused, reset or closed before the server said anything; 08: connection
        # exception; 57P: the server is shutting down or restarting
        return isinstance(exc, self.errors) and (not sqlstate or sqlstate.startswith(("08", "57P")))

    def configure(self, conn: Any, write: _Write) -> None:
        conn.execute("SET synchronous_commit = " + ("on" if write.durable else "off"))
        conn.execute(f"SET lock_timeout = {int(write.wait_ms)}")
        # a statement stuck on I/O (a full disk, a hung volume) gives up too, not only one waiting for a lock
        conn.execute(f"SET statement_timeout = {int(write.wait_ms) * 5}")

    def describe(self) -> str:
        parts = urlsplit(self.url)
        return f"PostgreSQL database {parts.path.lstrip('/') or '(default)'} on {parts.hostname or 'localhost'}:{parts.port or 5432}"

    def error_code(self, exc: BaseException) -> str:
        return f"{type(exc).__name__} (SQLSTATE {getattr(exc, 'sqlstate', None) or 'none'})"


class _SqliteConnection(sqlite3.Connection):
    deadline: float | None = None

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def _backend(url: str) -> _Backend:
    if url.startswith("sqlite:///"):
        return _Sqlite(Path(url[len("sqlite:///"):]))
    if url.startswith(("postgresql://", "postgres://")):
        return _Postgres(url)
    raise ValueError(f"unsupported database URL scheme {url.split(':', 1)[0]!r} (use sqlite:/// or postgresql://)")


class Storage:
    def __init__(self, url: str, retention: Retention | None = None, *, replay_fail_closed: bool = False) -> None:
        self.backend = _backend(url)
        self.retention = retention or Retention()
        self.replay_fail_closed = replay_fail_closed
        # OSError: the SQLite folder cannot be made; StorageFault: a deadline passed, or the breaker is open
        self._errors = self.backend.errors + (OSError, StorageFault)
        self.breaker = CircuitBreaker()
        self._local = threading.local()
        self._seen: dict[tuple[str, str], float] = {}  # (issuer, jti) -> expiry: replays this process saw
        self._seen_lock = threading.Lock()
        self._next_prune = (os.getpid(), 0.0)
        self._prune_lock = threading.Lock()  # the schedule: one run at a time, each due once
        # the card records and the prune, once the answer is sent: one thread per process
        self.background = Background(idle=self.maybe_prune)

    # ------------------------------------------------------------------ connections

    def _connection(self, wait_ms: int = MIGRATE.wait_ms, seconds: float = MIGRATE.deadline_ms / 1000) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self.backend.connect(wait_ms, seconds)
            self._local.conn, self._local.pid, self._local.settings = conn, os.getpid(), None
        return conn

    def _drop_connection(self) -> None:
        """Forget this thread's connection after a database error: the next use opens a new one.

        A SQLite connection opened while the file was read-only stays read-only for good, and a
        PostgreSQL connection may be dead; reopening is what lets the service heal by itself."""
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass

    @contextmanager
    def _bounded(self, write: _Write) -> Iterator[Any]:
        """This thread's connection, set up for ``write``, for one operation that ends by its deadline.

        Refused at once (CircuitOpen) while the breaker is open; a database error drops the
        connection; whether the database answered at all is told to the breaker."""
        if not self.breaker.admit():
            raise CircuitOpen("the database failed just now; it is tried again shortly")
        deadline = time.monotonic() + write.deadline_ms / 1000
        conn = None
        try:
            conn = self._connection(write.wait_ms, write.deadline_ms / 1000)
            self.backend.arm(conn, deadline)
            if getattr(self._local, "settings", None) != write.settings:  # one round trip saved per call
                self.backend.configure(conn, write)
                self._local.settings = write.settings
            yield conn
        except BaseException as exc:
            if isinstance(exc, self._errors):
                self._drop_connection()
                if self.backend.unreachable(exc):
                    self._breaker_failed(exc)
                else:
                    self.breaker.released()
            else:
                self.breaker.released()
            raise
        else:
            self.breaker.succeeded()
        finally:
            if conn is not None and getattr(self._local, "conn", None) is conn:
                self.backend.arm(conn, None)  # the offline readers (reports) have no deadline

    def _breaker_failed(self, exc: BaseException) -> None:
        was = self.breaker.state()
        hung = isinstance(exc, StorageTimeout) or getattr(exc, "sqlite_errorname", "") == "SQLITE_INTERRUPT"
        self.breaker.failed(hung=hung)
        if was != "open" and self.breaker.state() == "open":
            log.warning("storage breaker open: the database is not tried for a while",
                        extra={"seconds": self.breaker.cool_down, "error": self.backend.error_code(exc)})

    @contextmanager
    def _transaction(self, write: _Write, commit: bool = True) -> Iterator[Any]:
        """A write transaction that waits at most ``write.wait_ms`` for a lock and ends by
        ``write.deadline_ms``; any database error drops the connection. ``durable=False`` writes
        may lose their last commits on a power failure, never on a process crash; feedback is
        always durable. ``commit=False`` rolls the transaction back at the end (the readiness probe)."""
        with self._bounded(write) as conn:
            conn.execute(self.backend.begin)
            try:
                yield conn
                conn.execute("COMMIT" if commit else "ROLLBACK")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except self._errors:
                    pass
                raise

    def _failed(self, write: _Write, exc: BaseException) -> None:
        """Log (the error's code, no data) and count a write that did not happen."""
        metrics.storage_failed(write.operation)
        if isinstance(exc, CircuitOpen):
            return  # counted; the breaker's opening was logged once
        log.warning("storage write failed", extra={"operation": write.operation,
                                                   "error": self.backend.error_code(exc)})

    def _execute(self, conn: Any, statement: str, params: tuple[Any, ...] = ()) -> Any:
        return conn.execute(self.backend.sql(statement), params)

    def _executemany(self, conn: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            cursor = conn.cursor()
            cursor.executemany(self.backend.sql(statement), rows)

    # ------------------------------------------------------------------ start-up and readiness

    def migrate(self) -> None:
        """Apply the migrations not yet applied, in one transaction; a concurrent start-up waits for it."""
        folder = resources.files(__package__).joinpath("migrations")
        scripts = sorted((e for e in folder.iterdir() if e.name.endswith(".sql")), key=lambda p: p.name)
        with self._transaction(MIGRATE) as tx:
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

    def open_for_service(self) -> None:
        """Migrate and prove the database takes writes, or raise StorageUnusable naming the problem."""
        try:
            self.migrate()
            self._probe()
        except self._errors as exc:
            raise StorageUnusable(f"{self.backend.describe()} cannot be written ({self.backend.error_code(exc)}:"
                                  f" {_first_line(exc)}); the service needs a writable database") from exc

    def writable(self) -> bool:
        """Readiness: a real write (rolled back) within the short wait, not just a read."""
        return self.readiness() == "writable"

    def readiness(self) -> str:
        """What /readyz says of the storage: "writable", or "not writable (why): ..."; within
        PROBE's deadline (0.6 s), and at once while the breaker is open."""
        try:
            self._probe()
            if (problem := self.backend.space_problem()) is not None:
                metrics.storage_failed(PROBE.operation)
                return f"not writable ({problem}): feedback answers 503, cards are not recorded"
            return "writable"
        except self._errors as exc:
            self._failed(PROBE, exc)
            if isinstance(exc, CircuitOpen):
                why = f"the database failed just now; tried again in {math.ceil(self.breaker.seconds_until_retry())} s"
            elif isinstance(exc, StorageTimeout):
                why = f"the database did not answer within {PROBE.deadline_ms} ms"
            else:
                why = self.backend.error_code(exc)
            return f"not writable ({why}): feedback answers 503, cards are not recorded"

    def _probe(self) -> None:
        with self._transaction(PROBE, commit=False) as tx:
            self._execute(tx, "INSERT INTO jwt_replay VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                          ("(readiness probe)", str(os.getpid()), 0))

    # ------------------------------------------------------------------ writes

    def record_cards(self, service_id: str, hook_instance: str, issued: Iterable[IssuedCard],
                     patient_key: str | None = None, at: datetime | None = None,
                     held_back: Iterable[tuple[str, str]] = ()) -> bool:
        """Remember the cards issued (best effort): False, logged and counted, when they could not be.

        Each card is stored with every rule it carries; ``patient_key`` is a keyed hash of the
        patient id (``pseudonym.patient_key``), never the id itself. ``held_back``: (rule id, item
        key) of the warning cards the override window kept from this answer, counted for the report."""
        issued, held_back = list(issued), list(held_back)
        if not issued and not held_back:
            return True
        when = _iso(at)
        try:
            with self._transaction(CARDS) as tx:
                self._executemany(tx, "INSERT INTO held_back_card VALUES (?, ?, ?, ?, ?, ?)",
                                  [(str(uuid.uuid4()), hook_instance, rule, key, service_id, when)
                                   for rule, key in held_back])
                self._executemany(tx, "INSERT INTO issued_card (card_uuid, rule_id, service_id, hook_instance, issued_at, "
                                  "patient_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                  [(c.uuid, c.rule_id, service_id, hook_instance, when, patient_key) for c in issued])
                self._executemany(tx, "INSERT INTO card_rule VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                                  [(c.uuid, rule, key) for c in issued
                                   for rule, key in zip(c.rule_ids, c.item_keys or ("",) * len(c.rule_ids))])
                self._executemany(tx, "INSERT INTO issued_suggestion VALUES (?, ?) ON CONFLICT DO NOTHING",
                                  [(s, c.uuid) for c in issued for s in c.suggestion_uuids])
        except self._errors as exc:
            self._failed(CARDS, exc)
            return False
        self._checkpoint_if_big()
        return True

    def _checkpoint_if_big(self) -> None:
        """Fold a WAL grown past WAL_CHECKPOINT_BYTES back into the database and truncate it; a
        checkpoint that cannot finish within the card record's lock wait is tried at the next record."""
        if not self.backend.wal_too_big():
            return
        try:
            with self._bounded(CARDS) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except self._errors as exc:
            log.info("storage checkpoint deferred", extra={"error": self.backend.error_code(exc)})

    def record_feedback(self, service_id: str, items: list[dict[str, Any]],
                        at: datetime | None = None) -> list[tuple[str, str]]:
        """Store feedback durably; (rule id or "unknown", outcome) per item. StorageUnavailable when it cannot."""
        rows = []
        for item in items:
            override = item.get("overrideReason") or {}
            reason = override.get("reason") or {}
            accepted = [_uuid(s["id"]) for s in item.get("acceptedSuggestions", [])]
            rows.append((
                _uuid(item["card"]), service_id, item["outcome"], item["outcomeTimestamp"],
                json.dumps(accepted) if accepted else None, reason.get("system"), reason.get("code"),
                reason.get("display"), override.get("userComment"), _iso(at),
            ))
        try:
            with self._transaction(FEEDBACK) as tx:
                self._executemany(tx, "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
                rules = self._rules_of(tx, {row[0] for row in rows})
        except self._errors as exc:
            self._failed(FEEDBACK, exc)
            raise StorageUnavailable("feedback could not be stored just now; send it again later",
                                     retry_after=self._retry_after()) from exc
        return [(rules.get(row[0], "unknown"), row[2]) for row in rows]

    def _retry_after(self) -> int:
        """Seconds a client should wait before sending again: at least until the breaker retries."""
        return max(RETRY_AFTER_SECONDS, math.ceil(self.breaker.seconds_until_retry()))

    def recent_overrides(self, patient_key: str, since: datetime) -> frozenset[tuple[str, str]]:
        """(rule id, item key) of the cards overridden with a reason (a coded one: a plain Dismiss
        silences nothing) for this patient at or after ``since``: one indexed query. Feedback times are the EHR's (any offset), so they are compared parsed."""
        # on the call's path: a read may wait on a lock too (PostgreSQL), so it is bounded like the
        # replay check; any fault is raised and the caller shows the cards
        with self._bounded(REPLAY) as conn:
            rows = self._execute(
                conn, "SELECT r.rule_id, r.item_key, f.outcome_timestamp FROM issued_card c "
                "JOIN card_rule r ON r.card_uuid = c.card_uuid JOIN feedback f ON f.card_uuid = c.card_uuid "
                "WHERE c.patient_key = ? AND f.outcome = 'overridden' "
                "AND f.override_code IS NOT NULL AND f.override_code <> ''", (patient_key,)).fetchall()
        return frozenset((rule, key) for rule, key, at in rows if _at_or_after(at, since))

    def _rules_of(self, tx: Any, card_uuids: set[str]) -> dict[str, str]:
        found = {}
        for card_uuid in card_uuids:  # a feedback call names one card, seldom a few
            row = self._execute(tx, "SELECT rule_id FROM issued_card WHERE card_uuid = ?", (card_uuid,)).fetchone()
            if row:
                found[card_uuid] = row[0]
        return found

    def remember_jti(self, issuer: str, jti: str, expires_at: float, now: float | None = None) -> bool:
        """Remember a JWT id until it expires; False when it was already seen (a replay).

        The database is the shared truth (every worker and instance); this process also keeps
        the ids it saw, so a replay to the same process is refused even while the database is
        unwritable. Replay rows skip the fsync (SECURITY.md says why that is safe enough)."""
        now = time.time() if now is None else now
        key = (issuer, jti)
        if self._seen.get(key, 0.0) >= now:
            return False
        try:
            with self._transaction(REPLAY) as tx:
                # a row left by an expired token is taken over: no pruning on the hot path
                cursor = self._execute(
                    tx, "INSERT INTO jwt_replay VALUES (?, ?, ?) ON CONFLICT (issuer, jti) "
                        "DO UPDATE SET expires_at = excluded.expires_at WHERE jwt_replay.expires_at < ?",
                    (issuer, jti, expires_at, now))
                fresh = cursor.rowcount == 1
        except self._errors as exc:
            self._failed(REPLAY, exc)
            if self.replay_fail_closed:
                raise StorageUnavailable("the service cannot check tokens just now", retry_after=self._retry_after()) from exc
            fresh = not self._jti_stored(issuer, jti, now)
        if fresh:
            self._remember_here(key, expires_at, now)
        return fresh

    def _jti_stored(self, issuer: str, jti: str, now: float) -> bool:
        """Whether the database holds a live entry (reading works while writes are locked out)."""
        try:
            with self._bounded(REPLAY) as conn:  # a read may wait on a lock too (PostgreSQL): bounded as well
                return self._execute(conn, "SELECT 1 FROM jwt_replay WHERE issuer = ? AND jti = ? AND expires_at >= ?",
                                     (issuer, jti, now)).fetchone() is not None
        except self._errors:
            return False  # nothing shared can be read either: this process's memory is all there is

    def _remember_here(self, key: tuple[str, str], expires_at: float, now: float) -> None:
        with self._seen_lock:
            self._seen[key] = expires_at
            if len(self._seen) > REPLAY_MEMORY:
                for old in [k for k, expiry in self._seen.items() if expiry < now]:
                    del self._seen[old]
                while len(self._seen) > REPLAY_MEMORY * 0.9:  # still full: forget the oldest
                    del self._seen[next(iter(self._seen))]

    # ------------------------------------------------------------------ retention

    def prune(self, now: datetime | None = None, max_seconds: float | None = None) -> dict[str, int]:
        """Delete rows past their retention in batches of PRUNE_BATCH; rows deleted per table.

        A card that has feedback is kept as long as its feedback, so the statistics can still
        name its rule. ``max_seconds`` stops early (the rest goes at the next run)."""
        now = now or datetime.now(timezone.utc)
        stop = time.monotonic() + max_seconds if max_seconds else float("inf")
        cards_before = _iso(now - timedelta(days=self.retention.issued_card_days))
        feedback_before = _iso(now - timedelta(days=self.retention.feedback_days))
        deleted = {"jwt_replay": 0, "feedback": 0, "issued_card": 0, "held_back_card": 0}
        jobs = [
            ("jwt_replay", "SELECT issuer, jti FROM jwt_replay WHERE expires_at < ? LIMIT ?",
             ["DELETE FROM jwt_replay WHERE issuer = ? AND jti = ?"], now.timestamp()),
            ("feedback", "SELECT card_uuid, outcome, outcome_timestamp FROM feedback WHERE received_at < ? LIMIT ?",
             ["DELETE FROM feedback WHERE card_uuid = ? AND outcome = ? AND outcome_timestamp = ?"], feedback_before),
            ("issued_card", "SELECT card_uuid FROM issued_card c WHERE issued_at < ? AND NOT EXISTS "
                            "(SELECT 1 FROM feedback f WHERE f.card_uuid = c.card_uuid) LIMIT ?",
             ["DELETE FROM issued_suggestion WHERE card_uuid = ?", "DELETE FROM card_rule WHERE card_uuid = ?",
              "DELETE FROM issued_card WHERE card_uuid = ?"],
             cards_before),
            ("held_back_card", "SELECT held_uuid FROM held_back_card WHERE held_at < ? LIMIT ?",
             ["DELETE FROM held_back_card WHERE held_uuid = ?"], cards_before),
        ]
        for table, select, deletes, cutoff in jobs:
            while time.monotonic() < stop:
                with self._transaction(PRUNE) as tx:
                    keys = [tuple(row) for row in self._execute(tx, select, (cutoff, PRUNE_BATCH)).fetchall()]
                    for statement in deletes:
                        self._executemany(tx, statement, keys)
                deleted[table] += len(keys)
                if len(keys) < PRUNE_BATCH:
                    break
        return deleted

    def after_answer(self, job: Callable[[], None] | None = None) -> None:
        """Once an answer is sent: ``job`` (the call's card record) and the prune when it is due,
        on this process's background thread, so the next call on the connection does not wait."""
        self.background.submit(job or self.maybe_prune)

    def maybe_prune(self, now: datetime | None = None) -> None:
        """Prune when this process's interval is up (jittered so workers spread out); never raises."""
        interval = self.retention.interval_seconds
        with self._prune_lock:
            pid, due = self._next_prune
            if interval <= 0 or (pid == os.getpid() and time.monotonic() < due):
                return
            first = pid != os.getpid()  # a new worker waits a random part of an interval before its first run
            self._next_prune = (os.getpid(),
                                time.monotonic() + interval * (random.random() if first else random.uniform(0.9, 1.1)))
        if first:
            return
        try:
            deleted = self.prune(now, max_seconds=PRUNE_SECONDS)
            if any(deleted.values()):
                log.info("storage pruned", extra={"deleted": deleted})
        except self._errors as exc:
            self._failed(PRUNE, exc)

    # ------------------------------------------------------------------ reading


    def row_counts(self) -> dict[str, int]:
        conn = self._connection()
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("issued_card", "issued_suggestion", "feedback", "jwt_replay", "held_back_card")}

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
        held_back = self._execute(
            conn, "SELECT rule_id, held_at FROM held_back_card WHERE held_at >= ? AND held_at < ? ORDER BY held_at",
            (issued_since or "", issued_until or "\uffff")).fetchall()
        return {"issued": [tuple(row) for row in issued], "feedback": [tuple(row) for row in feedback],
                "held_back": [tuple(row) for row in held_back]}


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


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def _iso(when: datetime | None) -> str:
    when = when or datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> str:
    return _iso(None)
