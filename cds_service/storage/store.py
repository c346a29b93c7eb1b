"""Storage of issued cards, feedback and the JWT replay cache: the one object the service holds.

``Storage`` is the database (``database.py``: connections, bounds, readiness, migrations) with
its repositories, one module per job, and the background thread the work after an answer runs on:

- ``issued.py``      issued cards, cards held back by the override window, recent overrides
- ``feedback.py``    feedback (durable, idempotent; 503 when it cannot be stored), statistics, history
- ``replay.py``      the JWT replay cache (the database, and this process's memory)
- ``retention.py``   pruning past retention
- ``backends.py``    SQLite and PostgreSQL (SQLAlchemy dialects); ``bounds.py`` deadlines and the
  circuit breaker; ``migrate.py`` the migrations (Alembic); ``background.py`` the after-answer thread

Faults (docs/metrics.md has the runbook) never cost a decision: every operation is bounded, card
records are best effort, feedback is acknowledged only once committed. Only this package talks
to the database.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from cds_service.core.issued import IssuedCard
from cds_service.storage.backends import WAL_CHECKPOINT_BYTES, WAL_LIMIT_BYTES  # noqa: F401 - their home for tests and docs
from cds_service.storage.background import Background
from cds_service.storage.database import Database
from cds_service.storage.feedback import Feedback
from cds_service.storage.issued import CallRecord, IssuedCards
from cds_service.storage.replay import ReplayCache
from cds_service.storage.retention import Pruner, Retention

log = logging.getLogger("cds_service.storage.store")

# told, once its call's record is written (or could not be), whether it was and the call's share
# of the time the write took (seconds)
Recorded = Callable[[bool, float], None]


class Storage(Database):
    def __init__(self, url: str, retention: Retention | None = None, *, replay_fail_closed: bool = False) -> None:
        super().__init__(url)
        self.retention = retention or Retention()
        self.cards = IssuedCards(self)
        self.feedback = Feedback(self)
        self.replay = ReplayCache(self, replay_fail_closed)
        self.pruner = Pruner(self, self.retention)
        # the card records and the prune, once the answer is sent: one thread per process
        self.background = Background(idle=self.maybe_prune, batch=lambda queued: self.record_calls(queued))

    # the calls the service makes, each answered by its repository

    def record_cards(self, service_id: str, hook_instance: str, issued: Iterable[IssuedCard],
                     patient_key: str | None = None, at: datetime | None = None,
                     held_back: Iterable[tuple[str, str]] = ()) -> bool:
        return self.cards.record_cards(service_id, hook_instance, issued, patient_key, at, held_back)

    def record_after_answer(self, record: CallRecord, then: Recorded) -> None:
        """Once an answer is sent: write the call's record on the background thread, in one
        transaction with the records of the calls queued with it, then ``then``; never raises."""
        self.background.submit_batched((record, then))

    def record_calls(self, queued: list[tuple[CallRecord, Recorded]]) -> None:
        """The background thread's batch: the records in one transaction (best effort: a failure is
        logged and counted by the repository), then each one's ``then`` (its call's log line)."""
        started = time.perf_counter()
        try:
            recorded = self.cards.record([record for record, _ in queued])
        except Exception as exc:  # never raised by storage faults (logged there); a bug must not go unseen
            log.error("recording the cards failed", extra={"calls": len(queued), "error": type(exc).__name__})
            recorded = False
        share = (time.perf_counter() - started) / len(queued)
        for _, then in queued:
            try:
                then(recorded, share)
            except Exception as exc:  # noqa: BLE001 - the others are still told
                log.error("background work failed", extra={"error": type(exc).__name__})

    def recent_overrides(self, patient_key: str, since: datetime,
                         since_for: Mapping[str, datetime | None] | None = None) -> frozenset[tuple[str, str]]:
        return self.cards.recent_overrides(patient_key, since, since_for)

    def record_feedback(self, service_id: str, items: list[dict[str, Any]],
                        at: datetime | None = None) -> list[tuple[str, str]]:
        return self.feedback.record_feedback(service_id, items, at)

    def remember_jti(self, issuer: str, jti: str, expires_at: float, now: float | None = None) -> bool:
        return self.replay.remember_jti(issuer, jti, expires_at, now)

    def prune(self, now: datetime | None = None, max_seconds: float | None = None) -> dict[str, int]:
        return self.pruner.prune(now, max_seconds)

    def maybe_prune(self, now: datetime | None = None) -> None:
        self.pruner.maybe_prune(now)

    def after_answer(self, job: Callable[[], None] | None = None) -> None:
        """Once an answer is sent: ``job`` (the call's card record) and the prune when it is due,
        on this process's background thread, so the next call on the connection does not wait."""
        self.background.submit(job or self.maybe_prune)

    # reading, for the statistics and the report

    def row_counts(self) -> dict[str, int]:
        return self.feedback.row_counts()

    def stats(self) -> dict[str, Any]:
        return self.feedback.stats()

    def card_history(self, issued_since: str | None = None, issued_until: str | None = None) -> dict[str, list[Any]]:
        return self.feedback.card_history(issued_since, issued_until)
