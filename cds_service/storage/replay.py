"""The JWT replay cache: each token id remembered until its token expires.

The database is the shared truth (every worker and instance); this process also keeps the ids it
saw (a cachetools TLRU cache: an entry leaves at its token's expiry, the least recently used
first when full), so a replay to the same process is refused even while the database is
unwritable. When the database cannot take an id, a token not seen here and not in the database
is let through (counted and logged; SECURITY.md has the reasoning), unless ``fail_closed``."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from cachetools import TLRUCache
from sqlalchemy import text

from cds_service.errors import StorageUnavailable
from cds_service.storage.backends import REPLAY

if TYPE_CHECKING:
    from cds_service.storage.database import Database

REPLAY_MEMORY = 50_000  # JWT ids this process remembers itself (the database remembers all)
# a row left by an expired token is taken over: no pruning on the hot path
REMEMBER = text("INSERT INTO jwt_replay VALUES (:issuer, :jti, :expires_at) ON CONFLICT (issuer, jti) "
                "DO UPDATE SET expires_at = excluded.expires_at WHERE jwt_replay.expires_at < :now")
STORED = text("SELECT 1 FROM jwt_replay WHERE issuer = :issuer AND jti = :jti AND expires_at >= :now")


class ReplayCache:
    def __init__(self, db: "Database", fail_closed: bool = False) -> None:
        self.db = db
        self.replay_fail_closed = fail_closed
        # (issuer, jti) -> the token's expiry (epoch seconds), which is also when the entry leaves
        self._seen: TLRUCache[tuple[str, str], float] = TLRUCache(
            maxsize=REPLAY_MEMORY, ttu=lambda key, expires_at, now: expires_at, timer=time.time)
        self._seen_lock = threading.Lock()  # cachetools caches are not thread-safe

    def remember_jti(self, issuer: str, jti: str, expires_at: float, now: float | None = None) -> bool:
        """Remember a JWT id until it expires; False when it was already seen (a replay).

        The database is the shared truth (every worker and instance); this process also keeps
        the ids it saw, so a replay to the same process is refused even while the database is
        unwritable. Replay rows skip the fsync (SECURITY.md says why that is safe enough)."""
        now = time.time() if now is None else now
        key = (issuer, jti)
        with self._seen_lock:
            seen_until = self._seen.get(key, 0.0)
        if seen_until >= now:
            return False
        try:
            with self.db.transaction(REPLAY) as tx:
                _, count = self.db.query(tx, REMEMBER, {"issuer": issuer, "jti": jti, "expires_at": expires_at, "now": now})
                fresh = count == 1
        except self.db.errors as exc:
            self.db.failed(REPLAY, exc)
            if self.replay_fail_closed:
                raise StorageUnavailable("the service cannot check tokens just now", retry_after=self.db.retry_after()) from exc
            fresh = not self._jti_stored(issuer, jti, now)
        if fresh:
            self._remember_here(key, expires_at, now)
        return bool(fresh)

    def _jti_stored(self, issuer: str, jti: str, now: float) -> bool:
        """Whether the database holds a live entry (reading works while writes are locked out)."""
        try:
            with self.db.bounded(REPLAY) as conn:  # a read may wait on a lock too (PostgreSQL): bounded as well
                return bool(self.db.query(conn, STORED, {"issuer": issuer, "jti": jti, "now": now})[0])
        except self.db.errors:
            return False  # nothing shared can be read either: this process's memory is all there is

    def _remember_here(self, key: tuple[str, str], expires_at: float, now: float) -> None:
        with self._seen_lock:
            self._seen[key] = expires_at
