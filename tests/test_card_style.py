"""Concise cards (issue 12, docs/knowledge.md "Card style"), checked on every card of every case.

- summary: at most 140 characters; a name too long for it is shortened at a word boundary and
  marked with "…"; the rest of the summary (the risk, the action) is never cut;
- detail: each finding's section leads with what to do (its first word is an instruction) and
  then says why (the "Why this card" evidence list comes after the rule's text);
- the rule's own text of a finding (its detail and notes as shown, from the section heading to
  the evidence list, the recognised-by-name notice or the rule link) is at most 500 characters;
- the guideline statement is on the rule page, not in the card; class names keep their capitals.
"""
from __future__ import annotations

import re

import pytest

from case_cards import served
from cds_service.core.cards import WHY

OWN_TEXT_LIMIT = 500
ENDS_OWN_TEXT = re.compile(r"\n\n(?:\*\*Why this card\*\*|_The order carries no code|Rule: )")
# What a card's text may start with: an instruction to the clinician.
INSTRUCTIONS = {"Prefer", "Start", "Give", "Use", "Switch", "Premedicate", "Ask", "Complete", "Consider",
                "Review", "If", "Keep", "Lower", "Advise", "Arrange", "Treat", "Prescribe", "Order", "Add"}


def _cards():
    return [(s.case["id"], card) for s in served() for card in s.cards]


def _sections(detail: str) -> list[str]:
    """A merged card's sections (each after its "### title" line), or the whole detail."""
    if not detail.startswith("### "):
        return [detail]
    return [part.split("\n\n", 1)[1] for part in re.split(r"(?:^|\n\n)### ", detail) if part]


def _own_text(section: str) -> str:
    return ENDS_OWN_TEXT.split(section, 1)[0]


@pytest.fixture(scope="module")
def cards():
    return _cards()


def test_summaries_fit_and_are_cut_only_at_a_word_boundary_inside_the_name(cards):
    for case, card in cards:
        summary = card["summary"]
        assert len(summary) <= 140, (case, summary)
        assert not summary.endswith("…"), (case, summary)  # the risk and the action are never cut
        for cut in re.finditer(r"(\S+)…", summary):  # a shortened name ends with a whole word of it
            assert re.search(rf"\b{re.escape(cut.group(1))}\b", card["detail"]), (case, summary)


def test_each_finding_says_what_to_do_first_then_why_in_at_most_500_characters(cards):
    for case, card in cards:
        for section in _sections(card["detail"]):
            own = _own_text(section)
            assert len(own) <= OWN_TEXT_LIMIT, (case, card["source"]["topic"]["code"], len(own), own)
            assert own.split()[0].strip("*:,") in INSTRUCTIONS, (case, own[:60])
            if WHY in section:
                assert section.index(WHY) > section.index(own[:20])


def test_the_guideline_statement_is_on_the_rule_page_not_in_the_card(cards):
    for case, card in cards:
        assert "**Evidence:**" not in card["detail"], case
        assert card["source"]["url"].endswith("/rules/" + card["source"]["topic"]["code"]), case


def test_class_names_are_written_as_a_clinician_writes_them(cards):
    for case, card in cards:
        for line in re.findall(r"None recorded: (.*)", card["detail"]):
            assert line[:1].isupper() or line[:1].isdigit(), (case, line)


def test_a_long_procedure_name_is_shortened_at_a_word_boundary():
    from cds_service.core.cards import shorten

    name = "Magnetic resonance (eg, proton) imaging, spinal canal and contents, lumbar; without contrast material"
    short = shorten(name, 60)
    assert len(short) <= 60 and short.endswith("…")
    assert name.startswith(short[:-1]) and name[len(short) - 1] == " "  # cut before a space
