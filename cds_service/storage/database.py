"""The database as the storage's repositories see it: one SQLAlchemy engine per process, a pool
of connections, every operation bounded, faults told apart.

Each process has its own ``Engine`` (SQLAlchemy Core, ``QueuePool``): after a gunicorn fork the
inherited one is disposed of without closing the parent's connections (``dispose(close=False)``,
as SQLAlchemy advises for multiprocessing) and a new one is made on first use. Connections are
made by the backend (``Backend.connect`` as the engine's ``creator``: the bounded connect, WAL
mode, the progress handler). Every operation runs in ``bounded``: refused at once while the
circuit breaker is open, given its deadline (``bounds.py``), its connection invalidated in the
pool on a database error so the next use opens a new one (a SQLite connection opened on a
read-only file stays read-only; a PostgreSQL one may be dead): the service heals when the
database does. Errors reach the repositories as the driver raised them (``sqlite3.Error``,
``psycopg.Error``), not wrapped, so their codes (SQLITE_BUSY, SQLSTATE ...) name them in logs.
``transaction`` is a write transaction inside it (BEGIN, or BEGIN IMMEDIATE on SQLite, issued
by us: the engine runs in autocommit). Start-up migrates (``migrate.py``, Alembic) and proves a
write; ``readiness`` is what /readyz says of the storage.
"""
from __future__ import annotations

import functools
import logging
import math
import operator
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sqlalchemy import Connection, Dialect, Engine, TextClause, create_engine, exc, text
from sqlalchemy.pool import QueuePool

from cds_service import metrics
from cds_service.errors import StorageUnusable
from cds_service.storage import migrate
from cds_service.storage.backends import MIGRATE, PROBE, RETRY_AFTER_SECONDS, Operation, backend_for
from cds_service.storage.bounds import CircuitBreaker, CircuitOpen, StorageFault, StorageTimeout
from cds_service.storage.values import first_line

log = logging.getLogger("cds_service.storage.store")  # the name the log lines always had

# Connections kept open per process: a gthread worker serves 16 calls at once, plus the
# background thread. More are opened when more threads use storage at once (never waited
# for: max_overflow=-1) and closed when given back beyond this many.
POOL_SIZE = 20
PROBE_SQL = text("INSERT INTO jwt_replay VALUES (:issuer, :jti, 0) ON CONFLICT DO NOTHING")


class Database:
    def __init__(self, url: str) -> None:
        self.backend = backend_for(url)
        # OSError: the SQLite folder cannot be made; StorageFault: a deadline passed, or the breaker is open
        self.errors = self.backend.errors + (OSError, StorageFault)
        self.breaker = CircuitBreaker()
        self._engine: Engine | None = None
        self._pid = 0  # the process self._engine belongs to
        self._engine_lock = threading.Lock()
        self._local = threading.local()  # the operation a new connection is being made for

    # ------------------------------------------------------------------ the engine and its pool

    @property
    def engine(self) -> Engine:
        """This process's engine (a new one after a fork: the parent's connections are left alone)."""
        if self._pid == os.getpid() and self._engine is not None:
            return self._engine
        with self._engine_lock:
            if self._pid != os.getpid() or self._engine is None:
                if self._engine is not None:
                    self._engine.dispose(close=False)  # the parent's: neither closed nor used here
                self._engine = create_engine(
                    self.backend.engine_url(), creator=self._connect, poolclass=QueuePool,
                    pool_size=POOL_SIZE, max_overflow=-1, pool_use_lifo=True,
                    # transactions are begun and ended by ``transaction``, and a connection that saw an
                    # error is invalidated: nothing is left to roll back when one is given back
                    isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
                self._pid = os.getpid()
            return self._engine

    def _connect(self) -> Any:
        """The engine's creator: a new DB-API connection within the deadline of the operation that
        needs it, armed with that deadline while SQLAlchemy sets it up."""
        write: Operation = getattr(self._local, "operation", MIGRATE)
        raw = self.backend.connect(write.wait_ms, write.deadline_ms / 1000)
        self.backend.arm(raw, getattr(self._local, "deadline", None))
        return raw

    def close(self) -> None:
        """Close this process's pooled connections (tests, tools, at exit); the next use opens new ones."""
        with self._engine_lock:
            if self._engine is not None and self._pid == os.getpid():
                self._engine.dispose()
            self._engine, self._pid = None, 0

    @contextmanager
    def _checkout(self, write: Operation | None, deadline: float | None) -> Iterator[Connection]:
        """A pooled connection armed with ``deadline`` and set up for ``write`` (None: as it is);
        invalidated in the pool (closed, never handed out again) on a database error, a DB-API
        error unwrapped from SQLAlchemy's."""
        self._local.operation, self._local.deadline = write or MIGRATE, deadline
        conn: Connection | None = None
        try:
            try:
                conn = self.engine.connect()
            finally:
                self._local.deadline = None
            raw = conn.connection.dbapi_connection
            self.backend.arm(raw, deadline)
            info = conn.connection.info
            if write is not None and info.get("settings") != write.settings:  # one round trip saved per call
                self.backend.configure(conn, write)
                info["settings"] = write.settings
            yield conn
        except exc.DBAPIError as wrapped:
            if conn is not None:
                conn.invalidate()
            raise (wrapped.orig if isinstance(wrapped.orig, BaseException) else wrapped) from None  # the driver's own error, as the repositories catch and name it
        except BaseException as error:
            if conn is not None and isinstance(error, self.errors):
                conn.invalidate()
            raise
        finally:
            if conn is not None:
                if not conn.invalidated:
                    self.backend.arm(conn.connection.dbapi_connection, None)
                conn.close()

    # ------------------------------------------------------------------ operations

    @contextmanager
    def bounded(self, write: Operation) -> Iterator[Connection]:
        """A pooled connection, set up for ``write``, for one operation that ends by its deadline.

        Refused at once (CircuitOpen) while the breaker is open; a database error drops the
        connection; whether the database answered at all is told to the breaker."""
        if not self.breaker.admit():
            raise CircuitOpen("the database failed just now; it is tried again shortly")
        deadline = time.monotonic() + write.deadline_ms / 1000
        try:
            with self._checkout(write, deadline) as conn:
                yield conn
        except BaseException as error:
            if isinstance(error, self.errors) and self.backend.unreachable(error):
                self._breaker_failed(error)
            else:
                self.breaker.released()
            raise
        else:
            self.breaker.succeeded()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A pooled connection without a deadline, for the offline readers (reports, statistics)."""
        with self._checkout(None, None) as conn:
            yield conn

    def _breaker_failed(self, error: BaseException) -> None:
        was = self.breaker.state()
        hung = isinstance(error, StorageTimeout) or getattr(error, "sqlite_errorname", "") == "SQLITE_INTERRUPT"
        self.breaker.failed(hung=hung)
        if was != "open" and self.breaker.state() == "open":
            log.warning("storage breaker open: the database is not tried for a while",
                        extra={"seconds": self.breaker.cool_down, "error": self.backend.error_code(error)})

    @contextmanager
    def transaction(self, write: Operation, commit: bool = True) -> Iterator[Connection]:
        """A write transaction that waits at most ``write.wait_ms`` for a lock and ends by
        ``write.deadline_ms``; any database error drops the connection. ``durable=False`` writes
        may lose their last commits on a power failure, never on a process crash; feedback is
        always durable. ``commit=False`` rolls the transaction back at the end (the readiness probe)."""
        with self.bounded(write) as conn:
            # on the driver's cursor, as ``executemany``: the engine runs in autocommit and has no
            # part in these (a failed one invalidates the connection all the same)
            driver = conn.connection.dbapi_connection
            _driver_sql(driver, self.backend.begin)
            try:
                yield conn
                _driver_sql(driver, "COMMIT" if commit else "ROLLBACK")
            except BaseException:
                try:
                    _driver_sql(driver, "ROLLBACK")
                except self.errors:
                    pass
                raise

    def failed(self, write: Operation, error: BaseException, count: int = 1) -> None:
        """Log (the error's code, no data) and count ``count`` writes that did not happen."""
        metrics.storage_failed(write.operation, count)
        if isinstance(error, CircuitOpen):
            return  # counted; the breaker's opening was logged once
        log.warning("storage write failed", extra={"operation": write.operation,
                                                   "error": self.backend.error_code(error)})

    def executemany(self, conn: Connection, statement: TextClause, rows: list[dict[str, Any]]) -> None:
        """``statement`` once per row; nothing when there are none.

        The statement is compiled by the engine's dialect once (``?`` for SQLite, ``%(name)s`` for
        psycopg) and its rows handed to the driver's ``executemany`` on the connection's own
        cursor: ``Connection.execute`` around each statement cost a call's record about 100 µs
        more CPU (docs/operations.md). A driver error is raised as the driver raised it."""
        if not rows:
            return
        sql, positional = self._compiled(statement, conn.dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, list(map(positional, rows)) if positional else rows)
        finally:
            cursor.close()

    def query(self, conn: Connection, statement: TextClause, params: dict[str, Any]) -> tuple[list[Any], int]:
        """``statement`` once, on the driver's cursor as ``executemany``: the rows it returned
        (none for a write) and its row count. For the statements on a hook call's path."""
        sql, positional = self._compiled(statement, conn.dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, positional(params) if positional else params)
            return (list(cursor.fetchall()) if cursor.description else []), int(cursor.rowcount)
        finally:
            cursor.close()

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _compiled(statement: TextClause, dialect: Dialect) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]] | None]:
        """The driver's SQL for ``statement``, and (positional drivers: SQLite) what turns a row of
        named parameters into the tuple in their order."""
        compiled = statement.compile(dialect=dialect)
        if not dialect.positional:
            return compiled.string, None
        names = list(compiled.positiontup or ())
        pick = operator.itemgetter(*names)
        return compiled.string, (lambda row: (pick(row),)) if len(names) == 1 else pick

    def retry_after(self) -> int:
        """Seconds a client should wait before sending again: at least until the breaker retries."""
        return max(RETRY_AFTER_SECONDS, math.ceil(self.breaker.seconds_until_retry()))

    # ------------------------------------------------------------------ start-up and readiness

    def migrate(self) -> None:
        """Bring the schema to the newest revision (``migrate.py``)."""
        migrate.apply(self)

    def open_for_service(self) -> None:
        """Migrate and prove the database takes writes, or raise StorageUnusable naming the problem."""
        try:
            self.migrate()
            self._probe()
        except self.errors as error:
            raise StorageUnusable(f"{self.backend.describe()} cannot be written ({self.backend.error_code(error)}:"
                                  f" {first_line(error)}); the service needs a writable database") from error

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
        except self.errors as error:
            self.failed(PROBE, error)
            if isinstance(error, CircuitOpen):
                why = f"the database failed just now; tried again in {math.ceil(self.breaker.seconds_until_retry())} s"
            elif isinstance(error, StorageTimeout):
                why = f"the database did not answer within {PROBE.deadline_ms} ms"
            else:
                why = self.backend.error_code(error)
            return f"not writable ({why}): feedback answers 503, cards are not recorded"

    def _probe(self) -> None:
        with self.transaction(PROBE, commit=False) as tx:
            tx.execute(PROBE_SQL, {"issuer": "(readiness probe)", "jti": str(os.getpid())})


def _driver_sql(driver: Any, statement: str) -> None:
    cursor = driver.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
