"""The database as the storage's repositories see it: one connection per thread, every
operation bounded, faults told apart.

Each thread of each process opens its own connection on first use (after a gunicorn fork, a
new one). Every operation runs in ``bounded``: refused at once while the circuit breaker is
open, given its deadline (``bounds.py``), its connection dropped on a database error so the next
use opens a new one (a SQLite connection opened on a read-only file stays read-only; a PostgreSQL
one may be dead): the service heals when the database does. ``transaction`` is a write
transaction inside it. Start-up migrates (``migrate.py``) and proves a write; ``readiness`` is
what /readyz says of the storage.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from cds_service import metrics
from cds_service.errors import StorageUnusable
from cds_service.storage import migrate
from cds_service.storage.backends import MIGRATE, PROBE, RETRY_AFTER_SECONDS, Operation, backend_for
from cds_service.storage.bounds import CircuitBreaker, CircuitOpen, StorageFault, StorageTimeout
from cds_service.storage.values import first_line

log = logging.getLogger("cds_service.storage.store")  # the name the log lines always had


class Database:
    def __init__(self, url: str) -> None:
        self.backend = backend_for(url)
        # OSError: the SQLite folder cannot be made; StorageFault: a deadline passed, or the breaker is open
        self.errors = self.backend.errors + (OSError, StorageFault)
        self.breaker = CircuitBreaker()
        self._local = threading.local()

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
    def bounded(self, write: Operation) -> Iterator[Any]:
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
            if isinstance(exc, self.errors):
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
    def transaction(self, write: Operation, commit: bool = True) -> Iterator[Any]:
        """A write transaction that waits at most ``write.wait_ms`` for a lock and ends by
        ``write.deadline_ms``; any database error drops the connection. ``durable=False`` writes
        may lose their last commits on a power failure, never on a process crash; feedback is
        always durable. ``commit=False`` rolls the transaction back at the end (the readiness probe)."""
        with self.bounded(write) as conn:
            conn.execute(self.backend.begin)
            try:
                yield conn
                conn.execute("COMMIT" if commit else "ROLLBACK")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except self.errors:
                    pass
                raise

    def failed(self, write: Operation, exc: BaseException) -> None:
        """Log (the error's code, no data) and count a write that did not happen."""
        metrics.storage_failed(write.operation)
        if isinstance(exc, CircuitOpen):
            return  # counted; the breaker's opening was logged once
        log.warning("storage write failed", extra={"operation": write.operation,
                                                   "error": self.backend.error_code(exc)})

    def execute(self, conn: Any, statement: str, params: tuple[Any, ...] = ()) -> Any:
        return conn.execute(self.backend.sql(statement), params)

    def executemany(self, conn: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            cursor = conn.cursor()
            cursor.executemany(self.backend.sql(statement), rows)

    def retry_after(self) -> int:
        """Seconds a client should wait before sending again: at least until the breaker retries."""
        return max(RETRY_AFTER_SECONDS, math.ceil(self.breaker.seconds_until_retry()))

    # ------------------------------------------------------------------ start-up and readiness

    def migrate(self) -> None:
        """Apply the migrations not yet applied (``migrate.py``)."""
        migrate.apply(self)

    def open_for_service(self) -> None:
        """Migrate and prove the database takes writes, or raise StorageUnusable naming the problem."""
        try:
            self.migrate()
            self._probe()
        except self.errors as exc:
            raise StorageUnusable(f"{self.backend.describe()} cannot be written ({self.backend.error_code(exc)}:"
                                  f" {first_line(exc)}); the service needs a writable database") from exc

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
        except self.errors as exc:
            self.failed(PROBE, exc)
            if isinstance(exc, CircuitOpen):
                why = f"the database failed just now; tried again in {math.ceil(self.breaker.seconds_until_retry())} s"
            elif isinstance(exc, StorageTimeout):
                why = f"the database did not answer within {PROBE.deadline_ms} ms"
            else:
                why = self.backend.error_code(exc)
            return f"not writable ({why}): feedback answers 503, cards are not recorded"

    def _probe(self) -> None:
        with self.transaction(PROBE, commit=False) as tx:
            self.execute(tx, "INSERT INTO jwt_replay VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                          ("(readiness probe)", str(os.getpid()), 0))
