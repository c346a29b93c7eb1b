"""Retention: issued cards, feedback, held-back counts and expired JWT ids deleted past their
retention, in batches of PRUNE_BATCH rows (the write lock is held only briefly). A card that has
feedback is kept as long as its feedback, so the statistics can still name its rule.
``maybe_prune`` runs at most once per interval per process (jittered; its schedule under a lock),
on the background thread (``background.py``)."""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from sqlalchemy import text

from cds_service.storage.backends import PRUNE
from cds_service.storage.values import iso

if TYPE_CHECKING:
    from cds_service.storage.database import Database

log = logging.getLogger("cds_service.storage.store")

PRUNE_BATCH = 1000  # rows per pruning transaction: the write lock is held only briefly
PRUNE_SECONDS = 2.0  # one automatic pruning run stops after this; the next run goes on


@dataclass(frozen=True)
class Retention:
    """How long rows are kept; ``interval_seconds`` between automatic prunes (0: never)."""

    issued_card_days: float = 90
    feedback_days: float = 365
    interval_seconds: float = 300


class Pruner:
    def __init__(self, db: "Database", retention: Retention) -> None:
        self.db = db
        self.retention = retention
        self._next_prune = (os.getpid(), 0.0)
        self._prune_lock = threading.Lock()  # the schedule: one run at a time, each due once

    def prune(self, now: datetime | None = None, max_seconds: float | None = None) -> dict[str, int]:
        """Delete rows past their retention in batches of PRUNE_BATCH; rows deleted per table.

        A card that has feedback is kept as long as its feedback, so the statistics can still
        name its rule. ``max_seconds`` stops early (the rest goes at the next run)."""
        now = now or datetime.now(timezone.utc)
        stop = time.monotonic() + max_seconds if max_seconds else float("inf")
        cards_before = iso(now - timedelta(days=self.retention.issued_card_days))
        feedback_before = iso(now - timedelta(days=self.retention.feedback_days))
        deleted = {"jwt_replay": 0, "feedback": 0, "issued_card": 0, "held_back_card": 0}
        jobs = [  # each select names its rows' keys as the deletes' parameters
            ("jwt_replay", "SELECT issuer, jti FROM jwt_replay WHERE expires_at < :cutoff LIMIT :n",
             ["DELETE FROM jwt_replay WHERE issuer = :issuer AND jti = :jti"], now.timestamp()),
            ("feedback", "SELECT card_uuid, outcome, outcome_timestamp FROM feedback WHERE received_at < :cutoff LIMIT :n",
             ["DELETE FROM feedback WHERE card_uuid = :card_uuid AND outcome = :outcome "
              "AND outcome_timestamp = :outcome_timestamp"], feedback_before),
            ("issued_card", "SELECT card_uuid FROM issued_card c WHERE issued_at < :cutoff AND NOT EXISTS "
                            "(SELECT 1 FROM feedback f WHERE f.card_uuid = c.card_uuid) LIMIT :n",
             ["DELETE FROM issued_suggestion WHERE card_uuid = :card_uuid", "DELETE FROM card_rule WHERE card_uuid = :card_uuid",
              "DELETE FROM issued_card WHERE card_uuid = :card_uuid"],
             cards_before),
            ("held_back_card", "SELECT held_uuid FROM held_back_card WHERE held_at < :cutoff LIMIT :n",
             ["DELETE FROM held_back_card WHERE held_uuid = :held_uuid"], cards_before),
        ]
        for table, select, deletes, cutoff in jobs:
            while time.monotonic() < stop:
                with self.db.transaction(PRUNE) as tx:
                    keys = [dict(row._mapping) for row in tx.execute(text(select), {"cutoff": cutoff, "n": PRUNE_BATCH})]
                    for statement in deletes:
                        self.db.executemany(tx, text(statement), keys)
                deleted[table] += len(keys)
                if len(keys) < PRUNE_BATCH:
                    break
        from cds_service.storage import silent  # its tables: go-live records (migration 006)

        return {**deleted, **silent.prune(self.db, now, self.retention.issued_card_days)}

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
        except self.db.errors as exc:
            self.db.failed(PRUNE, exc)
