"""cds_service.core.layout: a card's detail reads in five seconds: within its limits, what to do
first, the order the card is about always named, and a merged card read back finding by finding."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cds_service.core.layout import (
    BY_NAME,
    CARD_LIMIT,
    FINDING_LIMIT,
    NOTICE_ALLOWANCE,
    WHY,
    Part,
    first_sentences,
    is_merged_layout,
    merged,
    sections,
    single,
)

LONG_WHY = tuple(f"Evidence line number {n} from the record, dated 2026-11-{n % 28 + 1:02d}" for n in range(40))


def _kept(detail: str) -> str:
    """The detail without its last line when that line counts the evidence left out: what the
    limit is measured against (the count line may go a little over, as ``knowledge.checks`` allows)."""
    head, _, last = detail.rpartition("\n")
    return head if last.startswith("- and ") and "more from the record" in last else detail


def _part(todo="Avoid morphine. It releases histamine.", why=LONG_WHY, notes=(), item=""):
    return Part("Title", todo, tuple(notes), why, "https://cds.example/rules/x", item)


def test_a_one_finding_card_says_what_to_do_before_why_and_fits_its_limit():
    detail = single(_part(), by_name=False)
    assert detail.startswith("Avoid morphine.")
    assert detail.index(WHY) > detail.index("Avoid morphine")
    assert len(_kept(detail)) <= FINDING_LIMIT and len(detail) <= FINDING_LIMIT + 100
    assert "more from the record" in detail  # what was left out is counted, not dropped silently


def test_a_reserve_for_buttons_shortens_the_evidence():
    full, reserved = single(_part(), False), single(_part(), False, reserve=200)
    assert len(_kept(reserved)) <= FINDING_LIMIT - 200 < len(_kept(full))


def test_the_first_evidence_lines_and_the_order_the_card_is_about_are_always_shown():
    item = "morphine sulfate 15 MG Oral Tablet"
    why = (*LONG_WHY, f"Draft order: {item}")
    detail = single(_part(why=why, item=item), False)
    assert LONG_WHY[0] in detail and LONG_WHY[1] in detail
    assert item in detail


def test_an_order_recognised_by_name_says_so_and_notes_are_always_shown():
    detail = single(_part(notes=("_Premedicate first._",)), by_name=True)
    assert BY_NAME in detail and "_Premedicate first._" in detail
    assert BY_NAME not in single(_part(), by_name=False)


def test_a_card_without_evidence_is_its_head_only():
    assert single(_part(why=()), False) == "Avoid morphine. It releases histamine."


def test_a_merged_card_has_one_numbered_line_per_finding_in_order_within_the_card_limit():
    parts = [_part(todo=f"Finding {n} first sentence. A second sentence that stays on the rule page.")
             for n in range(1, 5)]
    detail = merged(parts)
    assert len(_kept(detail)) <= CARD_LIMIT
    assert sections(detail) == [f"Finding {n} first sentence." for n in range(1, 5)]
    assert is_merged_layout(detail)
    assert detail.count(WHY) == 1  # the evidence once
    assert LONG_WHY[0] in detail and detail.count(LONG_WHY[0]) == 1


def test_a_merged_card_with_buttons_may_go_over_by_the_notice_allowance_only():
    parts = [_part(todo=f"Finding {n}.") for n in range(3)]
    assert len(_kept(merged(parts, reserve=400))) <= CARD_LIMIT - (400 - NOTICE_ALLOWANCE)


def test_a_one_finding_card_reads_back_as_one_section():
    detail = single(_part(todo="1 tablet daily. Check the dose."), False)
    assert sections(detail) == [detail]
    assert not is_merged_layout(detail)


@given(st.text(alphabet=st.characters(codec="ascii", categories=["L", "Zs", "P"]), max_size=400),
       st.integers(min_value=20, max_value=300))
def test_first_sentences_stays_within_its_limit(text, limit):
    out = first_sentences(text, limit)
    assert len(out) <= limit


def test_first_sentences_keeps_whole_sentences_and_cuts_a_long_one_at_a_word():
    text = "Stop it now. Then call the pain team. Then write it down."
    assert first_sentences(text, 200) == text
    assert first_sentences(text, 200, most=1) == "Stop it now."
    assert first_sentences(text, 30) == "Stop it now."
    cut = first_sentences("An exceedingly long single sentence about morphine and histamine.", 30)
    assert cut.endswith("…") and len(cut) <= 30 and cut[:-1] in "An exceedingly long single sentence"
    assert first_sentences("First paragraph.\n\nSecond paragraph.", 200) == "First paragraph."


def test_however_little_room_is_left_the_condition_and_the_finding_are_shown():
    """The first MIN_WHY evidence lines (the condition, the finding) are never cut for room."""
    detail = single(_part(), False, reserve=FINDING_LIMIT - 50)  # room for the head only
    assert LONG_WHY[0] in detail and LONG_WHY[1] in detail
    assert LONG_WHY[2] not in detail and f"and {len(LONG_WHY) - 2} more" in detail
