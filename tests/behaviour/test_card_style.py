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
from helpers import ROOT

from cds_service.knowledge.checks import INSTRUCTIONS, card_problems


def _cards():
    return [(s.case["id"], card) for s in served() for card in s.cards]


@pytest.fixture(scope="module")
def cards():
    return _cards()


def test_summaries_fit_and_are_cut_only_at_a_word_boundary_inside_the_name(cards):
    for case, card in cards:
        summary = card["summary"]
        for cut in re.finditer(r"(\S+)…", summary):  # a shortened name ends with a whole word of it
            assert re.search(rf"\b{re.escape(cut.group(1))}\b", card["detail"]), (case, summary)


def test_every_card_of_every_case_keeps_the_card_style(cards):
    """Summary length, what to do first in at most 500 characters, then why: the checks of
    `cds-service knowledge test RULE` (cds_service/knowledge/checks.py)."""
    assert [p for case, card in cards for p in card_problems(card, f"case {case}")] == []


def test_the_card_style_check_can_fail():
    card = {"source": {"topic": {"code": "x.y"}}, "summary": "s" * 141,
            "detail": "Why: because.\n\n**Why this card**\n- a"}
    problems = card_problems(card, "case c")
    assert any("141 characters" in p for p in problems) and any("starts with 'Why:'" in p for p in problems)
    assert card_problems({**card, "summary": "ok", "detail": "Do not give it.\n\n**Why this card**\n- a"}, "c") == []


def test_the_allowed_first_words_are_listed_in_the_docs():
    text = (ROOT / "docs" / "knowledge.md").read_text()
    listed = re.search(r"^- \*\*Detail\*\*: starts with what to do, as an instruction \((.*?)\)", text, re.M | re.S)
    assert listed and re.findall(r"\"([^\"]+)\"", listed.group(1)) == list(INSTRUCTIONS)


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
