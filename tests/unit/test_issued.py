"""cds_service.core.issued: the record storage keeps of a card names its lead rule as the card's
topic; new ids are time-ordered UUIDs."""
from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

from cds_service.core.issued import IssuedCard, new_id


def test_a_merged_cards_rule_id_is_its_lead_rule():
    card = IssuedCard("u", ("mcas.a", "mcas.b"), ("s1",), ("7052|oral|15", ""))
    assert card.rule_id == "mcas.a"
    assert len(card.item_keys) == len(card.rule_ids)


def test_a_card_without_item_keys_still_has_its_rule():
    assert IssuedCard("u", ("ms-lbp.x",), ()).rule_id == "ms-lbp.x"


def test_new_ids_are_unique_uuid7s_that_sort_in_the_order_they_were_made():
    """Storage keys its rows by these ids as text: made later must sort later (within one
    millisecond too), or each row lands on a page of its own again."""
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_id() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(ids,)) for ids in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in made for i in ids]
    assert len(set(every)) == len(every)
    assert all(ids == sorted(ids) for ids in made)
    parsed = uuid.UUID(every[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert str(parsed) == every[0]  # the canonical lower-case form a card's uuid is sent in


def test_an_id_made_a_moment_later_sorts_after_every_earlier_one():
    earlier = [new_id() for _ in range(100)]
    time.sleep(0.002)
    assert new_id() > max(earlier)


def _ids_in_a_child(count: int) -> list[str]:
    return [new_id() for _ in range(count)]


def test_workers_forked_from_one_master_never_make_the_same_id():
    """gunicorn forks its workers from a master that already made ids (the warm-up's cards): a
    generator whose random state were copied into each would repeat the others' ids, and storage
    would drop the records that collide."""
    [new_id() for _ in range(100)]  # the master's own, before the fork
    with multiprocessing.get_context("fork").Pool(4) as pool:
        made = pool.map(_ids_in_a_child, [5000] * 4)
    every = [i for ids in made for i in ids]
    assert len(set(every)) == len(every) == 20000
