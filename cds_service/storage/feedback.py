"""The feedback repository: CDS Hooks feedback stored durably and idempotently (the same card,
outcome and timestamp once), acknowledged only once committed (else StorageUnavailable: 503 with
Retry-After, never a 200); and the read-only views the statistics and the report use."""
from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from cds_service.errors import StorageUnavailable
from cds_service.storage.backends import FEEDBACK
from cds_service.storage.values import card_uuid, iso

if TYPE_CHECKING:
    from cds_service.storage.database import Database

TABLES = ("issued_card", "issued_suggestion", "feedback", "jwt_replay", "held_back_card")
INSERT = text("INSERT INTO feedback VALUES (:card_uuid, :service_id, :outcome, :outcome_timestamp, :accepted, "
              ":override_system, :override_code, :override_display, :user_comment, :received_at) ON CONFLICT DO NOTHING")
RULE_OF = text("SELECT rule_id FROM issued_card WHERE card_uuid = :card_uuid")
ISSUED_PER_RULE = text("SELECT rule_id, COUNT(DISTINCT card_uuid) FROM card_rule GROUP BY rule_id ORDER BY rule_id")
FEEDBACK_PER_RULE = text(
    "SELECT COALESCE(r.rule_id, '(unknown card)'), f.outcome, f.override_code, COUNT(DISTINCT f.card_uuid) "
    "FROM feedback f LEFT JOIN card_rule r ON r.card_uuid = f.card_uuid "
    "GROUP BY COALESCE(r.rule_id, '(unknown card)'), f.outcome, f.override_code")
ISSUED_SINCE = text("SELECT DISTINCT r.rule_id, c.issued_at, c.card_uuid FROM issued_card c "
                    "JOIN card_rule r ON r.card_uuid = c.card_uuid "
                    "WHERE c.issued_at >= :low AND c.issued_at < :high ORDER BY c.issued_at")
ALL_FEEDBACK = text(
    "SELECT DISTINCT COALESCE(r.rule_id, '(unknown card)'), f.card_uuid, f.outcome, f.outcome_timestamp, "
    "f.override_code, f.override_display FROM feedback f LEFT JOIN card_rule r ON r.card_uuid = f.card_uuid "
    "ORDER BY f.outcome_timestamp")
HELD_SINCE = text("SELECT rule_id, held_at FROM held_back_card WHERE held_at >= :low AND held_at < :high ORDER BY held_at")


class Feedback:
    def __init__(self, db: "Database") -> None:
        self.db = db

    def record_feedback(self, service_id: str, items: list[dict[str, Any]],
                        at: datetime | None = None) -> list[tuple[str, str]]:
        """Store feedback durably; (rule id or "unknown", outcome) per item. StorageUnavailable when it cannot."""
        rows = []
        for item in items:
            override = item.get("overrideReason") or {}
            reason = override.get("reason") or {}
            accepted = [card_uuid(s["id"]) for s in item.get("acceptedSuggestions", [])]
            rows.append({
                "card_uuid": card_uuid(item["card"]), "service_id": service_id, "outcome": item["outcome"],
                "outcome_timestamp": item["outcomeTimestamp"], "accepted": json.dumps(accepted) if accepted else None,
                "override_system": reason.get("system"), "override_code": reason.get("code"),
                "override_display": reason.get("display"), "user_comment": override.get("userComment"),
                "received_at": iso(at),
            })
        try:
            with self.db.transaction(FEEDBACK) as tx:
                self.db.executemany(tx, INSERT, rows)
                rules = self._rules_of(tx, {row["card_uuid"] for row in rows})
        except self.db.errors as exc:
            self.db.failed(FEEDBACK, exc)
            raise StorageUnavailable("feedback could not be stored just now; send it again later",
                                     retry_after=self.db.retry_after()) from exc
        return [(rules.get(row["card_uuid"], "unknown"), row["outcome"]) for row in rows]

    def _rules_of(self, tx: Connection, card_uuids: set[str]) -> dict[str, str]:
        found = {}
        for card in card_uuids:  # a feedback call names one card, seldom a few
            rows, _ = self.db.query(tx, RULE_OF, {"card_uuid": card})
            if rows:
                found[card] = rows[0][0]
        return found

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        with self.db.reading() as conn:
            issued = conn.execute(ISSUED_PER_RULE).fetchall()
            feedback = conn.execute(FEEDBACK_PER_RULE).fetchall()
        # Per rule: a merged card counts once for every rule it carries, and so does its feedback.
        for rule_id, count in issued:
            result[rule_id] = _entry(count)
        for rule_id, outcome, reason, count in feedback:
            entry = result.setdefault(rule_id, _entry(0))
            entry[outcome] += count
            if outcome == "overridden" and reason:
                entry["override_reasons"][reason] = entry["override_reasons"].get(reason, 0) + count
        return result

    def card_history(self, issued_since: str | None = None, issued_until: str | None = None) -> dict[str, list[Any]]:
        """Read-only, for reports: every issued card as (rule_id, issued_at) within the optional
        bounds (ISO 8601 UTC, as issued_at is stored), and every feedback item as (rule_id,
        card_uuid, outcome, outcome_timestamp, override_code, override_display). Feedback is
        not filtered here: its timestamps are the EHR's, with any offset, so the caller parses them."""
        bounds = {"low": issued_since or "", "high": issued_until or "\uffff"}
        with self.db.reading() as conn:
            issued = [tuple(row[:2]) for row in conn.execute(ISSUED_SINCE, bounds)]
            feedback = [tuple(row) for row in conn.execute(ALL_FEEDBACK)]
            held_back = [tuple(row) for row in conn.execute(HELD_SINCE, bounds)]
        return {"issued": issued, "feedback": feedback, "held_back": held_back}

    def row_counts(self) -> dict[str, int]:
        with self.db.reading() as conn:
            return {table: int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()) for table in TABLES}


def _entry(issued: int) -> dict[str, Any]:
    return {"issued": issued, "accepted": 0, "overridden": 0, "override_reasons": {}}
