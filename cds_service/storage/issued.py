"""The issued-card repository: what the service answered (cards, their rules and suggestions,
the keyed hash of the patient), the cards the override window held back, and the lookup of a
patient's recent overrides. Recorded best effort: a failure is logged and counted, and the hook
call has already answered with its cards.

``record`` writes the records of several calls in one transaction (the background thread hands
over every call queued at the time), each call's go-live record (``silent.py``) in the same
transaction as its cards."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from sqlalchemy import text

from cds_service import metrics
from cds_service.core.issued import IssuedCard, SilentFinding, new_id
from cds_service.storage import silent
from cds_service.storage.backends import CARDS, REPLAY
from cds_service.storage.values import at_or_after, iso

if TYPE_CHECKING:
    from cds_service.storage.database import Database

log = logging.getLogger("cds_service.storage.store")

INSERT_HELD = text("INSERT INTO held_back_card VALUES (:held_uuid, :hook_instance, :rule_id, :item_key, :service_id, :at)")
INSERT_CARD = text("INSERT INTO issued_card (card_uuid, rule_id, service_id, hook_instance, issued_at, patient_key) "
                   "VALUES (:card_uuid, :rule_id, :service_id, :hook_instance, :at, :patient_key) ON CONFLICT DO NOTHING")
INSERT_RULE = text("INSERT INTO card_rule VALUES (:card_uuid, :rule_id, :item_key) ON CONFLICT DO NOTHING")
INSERT_SUGGESTION = text("INSERT INTO issued_suggestion VALUES (:suggestion_uuid, :card_uuid) ON CONFLICT DO NOTHING")
RECENT_OVERRIDES = text(
    "SELECT r.rule_id, r.item_key, f.outcome_timestamp FROM issued_card c "
    "JOIN card_rule r ON r.card_uuid = c.card_uuid JOIN feedback f ON f.card_uuid = c.card_uuid "
    "WHERE c.patient_key = :patient_key AND f.outcome = 'overridden' "
    "AND f.override_code IS NOT NULL AND f.override_code <> ''")
CHECKPOINT = "PRAGMA wal_checkpoint(TRUNCATE)"


@dataclass(frozen=True)
class CallRecord:
    """What one answered hook call leaves in storage: its cards, the cards the override window
    held back (rule id, item key), and, when ``release`` is given, the call counted with its
    cards' knowledge release and its silent findings (``silent.py``)."""

    service_id: str
    hook_instance: str
    issued: Sequence[IssuedCard]
    patient_key: str | None = None
    held_back: Sequence[tuple[str, str]] = ()
    release: str | None = None
    silent: Sequence[SilentFinding] = field(default_factory=tuple)
    at: datetime | None = None


def _keys_for(card: IssuedCard) -> tuple[str, ...]:
    """An item key per rule of the card ("" where it has none): every rule is stored, and a card
    built with fewer keys than rules can never fail the batch it is written in."""
    return (*card.item_keys, *("",) * (len(card.rule_ids) - len(card.item_keys)))  # extra keys: zip drops them


class IssuedCards:
    def __init__(self, db: "Database") -> None:
        self.db = db

    def record_cards(self, service_id: str, hook_instance: str, issued: Iterable[IssuedCard],
                     patient_key: str | None = None, at: datetime | None = None,
                     held_back: Iterable[tuple[str, str]] = ()) -> bool:
        """Remember the cards issued (best effort): False, logged and counted, when they could not be.

        Each card is stored with every rule it carries; ``patient_key`` is a keyed hash of the
        patient id (``pseudonym.patient_key``), never the id itself. ``held_back``: (rule id, item
        key) of the warning cards the override window kept from this answer, counted for the report."""
        return self.record([CallRecord(service_id, hook_instance, list(issued), patient_key, list(held_back), at=at)])

    def record(self, records: Sequence[CallRecord]) -> bool:
        """Write the records of several calls in one transaction (best effort): False, logged once
        and counted once per call (``record_cards``, and ``record_silent`` for the calls counted),
        when they could not be. A batch refused for one record's rows (a constraint, a value the
        driver cannot bind) is written again one record at a time, so that one bad record does not
        cost the others theirs; a batch refused for the database (a lock, the disk, the breaker)
        is not, since each record would meet the same wait."""
        records = [r for r in records if r.issued or r.held_back or r.release is not None]
        if not records:
            return True
        try:
            self._write(records)
        except self.db.errors as exc:
            if len(records) > 1 and isinstance(exc, self.db.backend.row_errors):
                alone = [self.record([r]) for r in records]  # every record tried, not stopped at one
                return all(alone)
            self._failed(records, exc)
            return False
        self._checkpoint_if_big()
        return True

    def _write(self, records: list[CallRecord]) -> None:
        """The records in one transaction; a database error is raised as the driver raised it."""
        held, cards, rules, suggestions = [], [], [], []
        for r in records:
            when = iso(r.at)
            held += [{"held_uuid": new_id(), "hook_instance": r.hook_instance, "rule_id": rule,
                      "item_key": key, "service_id": r.service_id, "at": when} for rule, key in r.held_back]
            cards += [{"card_uuid": c.uuid, "rule_id": c.rule_id, "service_id": r.service_id,
                       "hook_instance": r.hook_instance, "at": when, "patient_key": r.patient_key} for c in r.issued]
            rules += [{"card_uuid": c.uuid, "rule_id": rule, "item_key": key} for c in r.issued
                      for rule, key in zip(c.rule_ids, _keys_for(c), strict=False)]
            suggestions += [{"suggestion_uuid": s, "card_uuid": c.uuid} for c in r.issued for s in c.suggestion_uuids]
        with self.db.transaction(CARDS) as tx:
            self.db.executemany(tx, INSERT_HELD, held)
            self.db.executemany(tx, INSERT_CARD, cards)
            self.db.executemany(tx, INSERT_RULE, rules)
            self.db.executemany(tx, INSERT_SUGGESTION, suggestions)
            silent.write(self.db, tx, [r for r in records if r.release is not None])

    def _failed(self, records: list[CallRecord], exc: BaseException) -> None:
        """Log and count records that could not be written: once per call for its cards, and
        for its go-live count."""
        with_cards = sum(1 for r in records if r.issued or r.held_back)
        counted = sum(1 for r in records if r.release is not None)
        if with_cards:
            self.db.failed(CARDS, exc, with_cards)
        if counted:
            metrics.storage_failed(silent.RECORD.operation, counted)
            if not with_cards:
                log.warning("storage write failed", extra={"operation": silent.RECORD.operation,
                                                           "error": self.db.backend.error_code(exc)})

    def _checkpoint_if_big(self) -> None:
        """Fold a WAL grown past WAL_CHECKPOINT_BYTES back into the database and truncate it; a
        checkpoint that cannot finish within the card record's lock wait is tried at the next record."""
        if not self.db.backend.wal_too_big():
            return
        try:
            with self.db.bounded(CARDS) as conn:
                conn.exec_driver_sql(CHECKPOINT).fetchall()
        except self.db.errors as exc:
            log.info("storage checkpoint deferred", extra={"error": self.db.backend.error_code(exc)})

    def recent_overrides(self, patient_key: str, since: datetime,
                         since_for: Mapping[str, datetime | None] | None = None) -> frozenset[tuple[str, str]]:
        """(rule id, item key) of the cards overridden with a reason (a coded one: a plain Dismiss
        silences nothing) for this patient at or after ``since``, or a rule's own time in
        ``since_for`` (None: nothing of that rule counts): one indexed query. Feedback times are the
        EHR's (any offset), so they are compared parsed."""
        # on the call's path: a read may wait on a lock too (PostgreSQL), so it is bounded like the
        # replay check; any fault is raised and the caller shows the cards
        with self.db.bounded(REPLAY) as conn:
            rows, _ = self.db.query(conn, RECENT_OVERRIDES, {"patient_key": patient_key})
        starts = since_for or {}
        return frozenset((rule, key) for rule, key, at in rows
                         if (start := starts.get(rule, since)) is not None and at_or_after(at, start))
