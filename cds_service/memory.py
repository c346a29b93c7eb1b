"""Memory bounded by design: what a JSON body costs once parsed, and a per-process budget for it.

orjson turns bytes into Python objects that take 4 to 24 times the bytes (an empty object is
3 bytes on the wire and about 64 bytes parsed, with its slot in a list). So a worker does not
count request bodies, it counts their *estimated parsed size*, from a scan of the raw bytes
(``bytes.count``: gigabytes a second, before anything is parsed):

- ``check_shape`` refuses a body with more JSON objects/arrays or strings than real FHIR has
  (about one container per 50 bytes and one string per 17 bytes in Synthea charts): at most
  one per ``BYTES_PER_CONTAINER`` / ``BYTES_PER_STRING`` bytes, beyond a small allowance.
- ``estimate`` is an upper bound of the parsed size (measured: docs/operations.md, "Memory").
- ``Budget``: the estimated bytes being parsed or held by calls in this process at once. A call
  that does not fit waits up to ``wait_seconds`` for others to finish, then gets ``Busy`` (503
  with Retry-After). FHIR answers fetched for an admitted call are charged to the same call
  (``charge``, never waiting: over the budget the key is unavailable).
- ``give_back``: after a large call, freed memory is handed back to the operating system
  (glibc keeps it otherwise), off the call's path.
"""
from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import threading
import time
from dataclasses import dataclass, field

BYTES_PER_CONTAINER = 12
BYTES_PER_STRING = 6
ALLOWANCE = 200_000  # containers and strings any body may have, however short (at most ~50 MB parsed)
# Parsed bytes per raw byte (numbers, string contents), per container (a dict with a key or
# two, and its slot), per string object: over the worst measured of each (docs/operations.md).
PER_BYTE, PER_CONTAINER, PER_STRING = 8, 200, 40


class ShapeRefused(ValueError):
    """The body has more JSON containers or strings than any real chart of its size."""


def check_shape(raw: bytes) -> int:
    """The body's estimated parsed size, or ShapeRefused when its structure is out of bounds.
    Counts '{', '[' and '"' wherever they are (inside strings too): an over-count, never under."""
    containers = raw.count(b"{") + raw.count(b"[")
    strings = raw.count(b'"') // 2
    if containers > ALLOWANCE + len(raw) // BYTES_PER_CONTAINER:
        raise ShapeRefused(f"{containers} JSON objects and arrays in {len(raw)} bytes: more than a FHIR record has")
    if strings > ALLOWANCE + len(raw) // BYTES_PER_STRING:
        raise ShapeRefused(f"{strings} JSON strings in {len(raw)} bytes: more than a FHIR record has")
    return PER_BYTE * len(raw) + PER_CONTAINER * containers + PER_STRING * strings


class Busy(Exception):
    """The process's parsing budget stayed full for the whole wait."""


@dataclass
class Ticket:
    """One call's share of the budget: what it was admitted with and what its fetches added."""

    budget: Budget
    held: int = 0
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def charge(self, size: int) -> bool:
        """Add ``size`` (a FHIR answer) if the budget has room now; never waits. A fetch that
        outlives its call (released ticket) is not counted: nothing would ever give it back."""
        with self._lock:
            if self.closed:
                return True
            if not self.budget.take(size, wait_seconds=0.0):
                return False
            self.held += size
            return True

    def release(self) -> None:
        with self._lock:
            held, self.held, self.closed = self.held, 0, True
        self.budget.give(held)


class Budget:
    """Estimated parsed bytes held at once in this process, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = threading.Condition()

    def take(self, size: int, wait_seconds: float) -> bool:
        deadline = time.monotonic() + wait_seconds
        with self._room:
            # A call larger than the whole budget is admitted alone rather than never.
            while self.used and self.used + size > self.limit:
                left = deadline - time.monotonic()
                if left <= 0 or not self._room.wait(left):
                    if self.used and self.used + size > self.limit:
                        return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        if size:
            with self._room:
                self.used = max(0, self.used - size)
                self._room.notify_all()

    def admit(self, size: int, wait_seconds: float) -> Ticket:
        """A ticket holding ``size``, or Busy after ``wait_seconds``."""
        if not self.take(size, wait_seconds):
            raise Busy()
        return Ticket(self, size)


# The ticket of the call being served: FHIR fetches (run in a copy of the call's context) charge it.
current: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("memory_ticket", default=None)


def charge(size: int) -> bool:
    """Charge a FHIR answer's estimated size to the current call; True when there is no ticket."""
    ticket = current.get()
    return ticket is None or ticket.charge(size)


_libc = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc), "malloc_trim", None) if _libc else None


def give_back() -> None:
    """Return freed heap to the operating system (glibc's ``malloc_trim``; nothing elsewhere)."""
    if _malloc_trim is not None:
        _malloc_trim(0)
