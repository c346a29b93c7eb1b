"""Client-side bounds on every storage operation: a deadline per operation and a circuit breaker.

A database that hangs (a frozen VM, a black-holed network, a server stopped with SIGSTOP) still
acknowledges TCP from its kernel, so neither the server's ``statement_timeout`` nor TCP keepalive
ever ends a query waiting on it: only the client can. Each operation therefore runs under a
deadline that the connection itself enforces while it waits for the server (PostgreSQL: the
psycopg connection's wait is given the time left, and a connection that ran out of it is closed,
since its state is unknown; SQLite: a progress handler interrupts a statement past its deadline;
lock waits are bounded by ``busy_timeout`` already).

The breaker stops a process from paying that deadline on every call once the database is known
to be gone: a timed-out operation opens it at once, connection failures after a few in a row;
while open, operations fail at once; after the cool-down one operation at a time tries again
(half open) and its success closes the breaker. A lock that is merely held (the database answers,
just "busy") never opens it: that wait is short and bounded already.
"""
from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable

BREAKER_COOL_DOWN_SECONDS = 5.0  # a frozen database is tried again at most this often per process
FAILURES_TO_OPEN = 3  # refused or broken connections in a row; a timeout opens at once


class StorageFault(Exception):
    """The storage could not be reached in time, or is not being tried just now."""


class StorageTimeout(StorageFault):
    """An operation passed its deadline; its connection was closed."""


class CircuitOpen(StorageFault):
    """Recent operations failed; the database is not tried again until the cool-down ends."""


class CircuitBreaker:
    """Closed → open (fail fast) → half open (one trial at a time) → closed; thread-safe."""

    def __init__(self, cool_down: float = BREAKER_COOL_DOWN_SECONDS, failures_to_open: int = FAILURES_TO_OPEN,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cool_down = cool_down
        self.failures_to_open = failures_to_open
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0  # 0: closed
        self._trial = False  # a half-open trial is under way

    def admit(self) -> bool:
        """Whether an operation may try the database now (taking the half-open trial if it is due)."""
        with self._lock:
            if not self._open_until:
                return True
            if self._trial or self._clock() < self._open_until:
                return False
            self._trial = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._open_until, self._trial = 0, 0.0, False

    def failed(self, *, hung: bool) -> None:
        """A connection-level failure: ``hung`` (a deadline passed) opens the breaker at once."""
        with self._lock:
            self._failures += 1
            if hung or self._trial or self._failures >= self.failures_to_open:
                self._open_until = self._clock() + self.cool_down
            self._trial = False

    def released(self) -> None:
        """An admitted operation ended without saying anything about the connection (e.g. a lock
        wait gave up): a half-open trial is handed back so that another one can be made."""
        with self._lock:
            self._trial = False

    def state(self) -> str:
        with self._lock:
            if not self._open_until:
                return "closed"
            return "half open" if self._clock() >= self._open_until else "open"

    def seconds_until_retry(self) -> float:
        with self._lock:
            return max(0.0, self._open_until - self._clock()) if self._open_until else 0.0


@functools.cache  # one class per process, made when PostgreSQL is first used
def bounded_postgres_connection() -> Any:
    """A psycopg connection class whose waits for the server end at ``conn.deadline`` (monotonic)."""
    import psycopg
    from psycopg import errors

    class BoundedConnection(psycopg.Connection):
        deadline: float | None = None

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            if self.deadline is not None:
                left = max(self.deadline - time.monotonic(), 0.001)
                timeout = left if timeout is None else min(timeout, left)
            try:
                return super().wait(gen, interval=interval, timeout=timeout)
            except errors._WaitTimeout as exc:  # the server did not answer in time: state unknown
                self.pgconn.finish()
                raise StorageTimeout("the database did not answer within the operation's deadline") from exc

    return BoundedConnection


def connect_within(connect: Callable[[], Any], seconds: float, close: Callable[[Any], None]) -> Any:
    """``connect()`` given at most ``seconds``: a PostgreSQL connect cannot be bounded below 2 s
    by libpq, so it runs on a helper thread; one that is too late is closed when it does finish."""
    outcome: dict[str, Any] = {}
    done = threading.Event()
    abandoned = threading.Event()

    def attempt() -> None:
        try:
            outcome["conn"] = connect()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
        done.set()
        if abandoned.is_set() and "conn" in outcome:
            close(outcome["conn"])

    threading.Thread(target=attempt, name="storage-connect", daemon=True).start()
    if not done.wait(seconds):
        abandoned.set()
        if done.is_set() and "conn" in outcome:  # finished just now: still ours to close
            close(outcome["conn"])
        raise StorageTimeout("the database did not accept a connection within the operation's deadline")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["conn"]
