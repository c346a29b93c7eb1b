"""How storage writes instants and ids, and reads them back."""
from __future__ import annotations

from datetime import datetime, timezone


def iso(when: datetime | None) -> str:
    """ISO 8601 UTC with milliseconds and Z (now when None): sorts as text, in both databases."""
    when = when or datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(None)


def at_or_after(timestamp: str, since: datetime) -> bool:
    """Whether an EHR's timestamp (any offset) is at or after ``since``; unreadable: no."""
    try:
        at = datetime.fromisoformat(timestamp)
    except ValueError:
        return False  # an unreadable time suppresses nothing: the card is shown
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)) >= since


def card_uuid(value: str) -> str:
    """A card or suggestion id as stored: lower case, without ``urn:uuid:``."""
    return value.lower().removeprefix("urn:uuid:")


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]
