"""What storage keeps of an issued card: a plain record that both ``cards`` (which builds it) and
``storage`` (which writes it) use, so storage needs nothing of how card JSON is written."""
from __future__ import annotations

from dataclasses import dataclass

import uuid_utils


def new_id() -> str:
    """A fresh id for a card, a suggestion or a stored row: a UUID version 7 (RFC 9562), random
    but for its leading millisecond time, so ids made later sort after earlier ones.

    Storage keys its tables by these ids. Random (version 4) keys land on a different B-tree
    page each, so a call's record dirtied one page per row and wrote each to the WAL at commit;
    ids in time order fill the last pages, which halved the record's CPU (docs/operations.md)."""
    return str(uuid_utils.uuid7())


@dataclass(frozen=True)
class IssuedCard:
    """What storage keeps of a card: its rule ids (several for a merged card, the lead first),
    its suggestions, and per rule the item key an override is remembered by (``item_key``)."""

    uuid: str
    rule_ids: tuple[str, ...]
    suggestion_uuids: tuple[str, ...]
    item_keys: tuple[str, ...] = ()  # parallel to rule_ids
    indicator: str = "info"  # the card's, counted in cds_cards_total

    @property
    def rule_id(self) -> str:
        """The card's ``source.topic.code``: its only rule, or the lead rule of a merged card."""
        return self.rule_ids[0]


@dataclass(frozen=True)
class SilentFinding:
    """A card a silent rule would have shown: kept with the same rule, item and indicator as a
    real card's record, never answered."""

    rule_id: str
    item_key: str
    indicator: str
