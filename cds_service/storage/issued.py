"""The issued-card repository: what the service answered (cards, their rules and suggestions,
the keyed hash of the patient), the cards the override window held back, and the lookup of a
patient's recent overrides. Recorded best effort: a failure is logged and counted, and the hook
call has already answered with its cards."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Iterable

from cds_service.core.issued import IssuedCard
from cds_service.storage.backends import CARDS, REPLAY
from cds_service.storage.values import at_or_after, iso

if TYPE_CHECKING:
    from cds_service.storage.database import Database

log = logging.getLogger("cds_service.storage.store")


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
        issued, held_back = list(issued), list(held_back)
        if not issued and not held_back:
            return True
        when = iso(at)
        try:
            with self.db.transaction(CARDS) as tx:
                self.db.executemany(tx, "INSERT INTO held_back_card VALUES (?, ?, ?, ?, ?, ?)",
                                  [(str(uuid.uuid4()), hook_instance, rule, key, service_id, when)
                                   for rule, key in held_back])
                self.db.executemany(tx, "INSERT INTO issued_card (card_uuid, rule_id, service_id, hook_instance, issued_at, "
                                  "patient_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                  [(c.uuid, c.rule_id, service_id, hook_instance, when, patient_key) for c in issued])
                self.db.executemany(tx, "INSERT INTO card_rule VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                                  [(c.uuid, rule, key) for c in issued
                                   for rule, key in zip(c.rule_ids, c.item_keys or ("",) * len(c.rule_ids), strict=True)])
                self.db.executemany(tx, "INSERT INTO issued_suggestion VALUES (?, ?) ON CONFLICT DO NOTHING",
                                  [(s, c.uuid) for c in issued for s in c.suggestion_uuids])
        except self.db.errors as exc:
            self.db.failed(CARDS, exc)
            return False
        self._checkpoint_if_big()
        return True

    def _checkpoint_if_big(self) -> None:
        """Fold a WAL grown past WAL_CHECKPOINT_BYTES back into the database and truncate it; a
        checkpoint that cannot finish within the card record's lock wait is tried at the next record."""
        if not self.db.backend.wal_too_big():
            return
        try:
            with self.db.bounded(CARDS) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except self.db.errors as exc:
            log.info("storage checkpoint deferred", extra={"error": self.db.backend.error_code(exc)})

    def recent_overrides(self, patient_key: str, since: datetime) -> frozenset[tuple[str, str]]:
        """(rule id, item key) of the cards overridden with a reason (a coded one: a plain Dismiss
        silences nothing) for this patient at or after ``since``: one indexed query. Feedback times are the EHR's (any offset), so they are compared parsed."""
        # on the call's path: a read may wait on a lock too (PostgreSQL), so it is bounded like the
        # replay check; any fault is raised and the caller shows the cards
        with self.db.bounded(REPLAY) as conn:
            rows = self.db.execute(
                conn, "SELECT r.rule_id, r.item_key, f.outcome_timestamp FROM issued_card c "
                "JOIN card_rule r ON r.card_uuid = c.card_uuid JOIN feedback f ON f.card_uuid = c.card_uuid "
                "WHERE c.patient_key = ? AND f.outcome = 'overridden' "
                "AND f.override_code IS NOT NULL AND f.override_code <> ''", (patient_key,)).fetchall()
        return frozenset((rule, key) for rule, key, at in rows if at_or_after(at, since))
