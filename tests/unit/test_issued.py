"""cds_service.core.issued: the record storage keeps of a card names its lead rule as the card's
topic."""
from __future__ import annotations

from cds_service.core.issued import IssuedCard


def test_a_merged_cards_rule_id_is_its_lead_rule():
    card = IssuedCard("u", ("mcas.a", "mcas.b"), ("s1",), ("7052|oral|15", ""))
    assert card.rule_id == "mcas.a"
    assert len(card.item_keys) == len(card.rule_ids)


def test_a_card_without_item_keys_still_has_its_rule():
    assert IssuedCard("u", ("ms-lbp.x",), ()).rule_id == "ms-lbp.x"
