"""The two databases the storage runs on, and how each kind of operation is bounded.

SQLite by default (``sqlite:///path``; WAL mode, so several workers write safely), PostgreSQL by
URL (``postgresql://…`` or ``postgres://…``) when several instances share state; the same SQL
(SQLAlchemy ``text()`` with named parameters) serves both. A ``Backend`` holds what differs: the
SQLAlchemy dialect (``sqlite+pysqlite``, ``postgresql+psycopg``), connecting (within a deadline:
the engine's ``creator``), the lock a migration takes, durability and lock-wait settings, error
names for logs, and what only SQLite can see (its disk's free space, its WAL file). ``Operation`` says how long one kind of operation
waits for a lock and in all (its deadline; ``bounds.py``), and whether its commit waits for the disk.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cds_service.storage.bounds import StorageTimeout, bounded_postgres_connection, connect_within

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
class Operation:
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
CARDS = Operation("record_cards", durable=False, wait_ms=200, deadline_ms=700)
REPLAY = Operation("replay", durable=False, wait_ms=200, deadline_ms=500)
PROBE = Operation("probe", durable=False, wait_ms=200, deadline_ms=600)
PRUNE = Operation("prune", durable=False, wait_ms=200, deadline_ms=2_000)  # per batch
FEEDBACK = Operation("feedback", durable=True, wait_ms=500, deadline_ms=1_500)  # then 503: the EHR sends it again
MIGRATE = Operation("migrate", durable=True, wait_ms=10_000, deadline_ms=60_000)  # start-ups queue behind each other


class Backend:
    """What differs between SQLite and PostgreSQL: the dialect, connecting, the lock to take."""

    begin = "BEGIN"
    migration_lock = ""  # run first in the migration transaction: start-ups migrate one at a time
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    # Errors a statement's rows cause (a constraint, a value the driver cannot bind): the rows of
    # one record, not the database; a batch that meets one is written again one record at a time.
    row_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)

    def connect(self, wait_ms: int, seconds: float) -> Any:
        """A new DB-API connection, made within ``seconds`` (the engine's ``creator``)."""
        raise NotImplementedError

    def engine_url(self) -> str:
        """The SQLAlchemy URL naming the dialect and driver; connections come from ``connect``."""
        raise NotImplementedError

    def arm(self, conn: Any, deadline: float | None) -> None:
        """Make ``conn`` give up waiting at ``deadline`` (monotonic; None: no deadline)."""
        conn.deadline = deadline

    def unreachable(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database cannot be reached (for the breaker), rather than that
        it answered with a refusal (a held lock, a full disk, a read-only file)."""
        return isinstance(exc, StorageTimeout)

    def configure(self, conn: Any, write: Operation) -> None:
        """Before BEGIN: how long the next write waits for a lock, and whether its commit waits for
        the disk (``conn``: a SQLAlchemy ``Connection``)."""

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


class SqliteBackend(Backend):
    begin = "BEGIN IMMEDIATE"  # take the write lock up front: no upgrade deadlocks between workers

    def __init__(self, path: Path) -> None:
        self.path = path

    def engine_url(self) -> str:
        return f"sqlite+pysqlite:///{self.path}"

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

    def configure(self, conn: Any, write: Operation) -> None:
        # WAL with synchronous=NORMAL survives a killed process (the WAL is written before
        # COMMIT returns) and skips the fsync: ~5 ms saved on every hook call that issues cards.
        conn.exec_driver_sql("PRAGMA synchronous=FULL" if write.durable else "PRAGMA synchronous=NORMAL")
        conn.exec_driver_sql(f"PRAGMA busy_timeout={int(write.wait_ms)}")

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


class PostgresBackend(Backend):
    # concurrent CREATE TABLE IF NOT EXISTS collide in pg_type; held until COMMIT (SQLite: BEGIN IMMEDIATE)
    migration_lock = "SELECT pg_advisory_xact_lock(4710326112)"

    def __init__(self, url: str) -> None:
        import psycopg  # only needed when a PostgreSQL URL is configured

        self.url = url  # as configured (postgresql:// or postgres://): libpq reads it as it is
        self.errors = (psycopg.Error,)
        self.row_errors = (psycopg.IntegrityError, psycopg.DataError, psycopg.ProgrammingError)

    def engine_url(self) -> str:
        # the driver named for SQLAlchemy (psycopg 3); the credentials stay in self.url
        return "postgresql+psycopg://"

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

    def configure(self, conn: Any, write: Operation) -> None:
        # one round trip for the three
        conn.exec_driver_sql(f"SET synchronous_commit = {'on' if write.durable else 'off'}; "
                             f"SET lock_timeout = {int(write.wait_ms)}; "
                             # a statement stuck on I/O (a full disk, a hung volume) gives up too, not only one waiting for a lock
                             f"SET statement_timeout = {int(write.wait_ms) * 5}")

    def describe(self) -> str:
        parts = urlsplit(self.url)
        return f"PostgreSQL database {parts.path.lstrip('/') or '(default)'} on {parts.hostname or 'localhost'}:{parts.port or 5432}"

    def error_code(self, exc: BaseException) -> str:
        return f"{type(exc).__name__} (SQLSTATE {getattr(exc, 'sqlstate', None) or 'none'})"


class _SqliteConnection(sqlite3.Connection):
    deadline: float | None = None

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def backend_for(url: str) -> Backend:
    if url.startswith("sqlite:///"):
        return SqliteBackend(Path(url[len("sqlite:///"):]))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(url)
    raise ValueError(f"unsupported database URL scheme {url.split(':', 1)[0]!r} (use sqlite:/// or postgresql://)")
