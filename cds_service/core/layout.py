"""How a card's detail is laid out so that it reads in five seconds (issue 26).

Sans-IO, text in and text out: ``cards`` gives each finding's parts (what to do, why) and this
module decides how much of it the card shows. A card shows at most ``FINDING_LIMIT`` characters per
finding and ``CARD_LIMIT`` in all, and at most ``MAX_BUTTONS`` suggestions; what does not fit stays
on the rule pages, which every card links to. A merged card leads with one numbered line per
finding, most important first (the engine's order), then the evidence once.
``knowledge.checks`` reads cards back with ``sections`` and holds served cards to the same limits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

FINDING_LIMIT = 600
CARD_LIMIT = 1200
MAX_BUTTONS = 3
WHY = "**Why this card**"
NOTICE_ALLOWANCE = 150  # "about" 1,200: a notice of the buttons left out may go a little over
MIN_WHY = 2  # evidence lines always shown: the condition and the finding
BY_NAME = "_The order carries no code we know, so it was recognised by its name: check the order._"
LINE_LIMIT = 240  # a merged card's line per finding: the rule's first sentence, its notes after
# A merged card's finding line: "1. what to do".
_LINE = re.compile(r"^\d+\. (?P<text>.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*_])")


@dataclass(frozen=True)
class Part:
    """One finding as the card may show it."""
    title: str
    todo: str  # the rule's own text, Markdown
    notes: tuple[str, ...]  # the notes that hold for this patient: always shown, they change the click
    why: tuple[str, ...]  # evidence lines, escaped
    url: str | None  # the rule's page
    item: str = ""  # the order the card is about: its evidence line is always shown (a button may remove it)


def single(part: Part, by_name: bool, reserve: int = 0) -> str:
    """A one-finding card: what to do, then why; the evidence list cut to fit ``FINDING_LIMIT``."""
    head = "\n\n".join([part.todo, *part.notes] + ([BY_NAME] if by_name else []))
    return head if not part.why else _with_why(head, part.why, FINDING_LIMIT - reserve, part.item)


def merged(parts: list[Part], reserve: int = 0) -> str:
    """One line per finding, most important first, then the evidence once, within ``CARD_LIMIT``:
    each line is the rule's first sentence and the notes that hold; the rest is on its rule page."""
    lines: list[str] = []
    for n, part in enumerate(parts, 1):  # no Markdown link: the card's links open outside the chart
        notes = " ".join(note.replace("\n", " ") for note in part.notes)
        todo = first_sentences(part.todo, max(160, min(LINE_LIMIT, (CARD_LIMIT - 300) // len(parts))), 1)
        lines.append(f"{n}. {todo}{' ' + notes if notes else ''}")
    head = "\n".join(lines)
    # every finding's first evidence lines before any finding's later ones: each line has its why
    ranked = sorted(((i, n, line) for n, part in enumerate(parts) for i, line in enumerate(part.why)))
    why = tuple(dict.fromkeys(line for _, _, line in ranked))
    return _with_why(head, why, CARD_LIMIT - max(0, reserve - NOTICE_ALLOWANCE), *(p.item for p in parts))


def _with_why(head: str, why: tuple[str, ...], limit: int, *items: str) -> str:
    """``head``, then the evidence lines that fit in ``limit`` (at least ``MIN_WHY``, and every
    line that names one of ``items``) and a count of those left out."""
    kept: list[str] = []
    for line in why:
        text = head + "\n\n" + WHY + "\n\n" + "\n".join(f"- {x}" for x in [*kept, line])
        names_item = any(item and item in line for item in items)
        if len(text) > limit - 40 and len(kept) >= MIN_WHY and not names_item:
            continue
        kept.append(line)
    rest = len(why) - len(kept)
    more = [f"- and {rest} more from the record (each rule page says what it checks)"] if rest else []
    return head + "\n\n" + WHY + "\n\n" + "\n".join([f"- {x}" for x in kept] + more)


def first_sentences(text: str, limit: int, most: int = 99) -> str:
    """The leading sentences of ``text`` (its first paragraph; at most ``most``) within ``limit``
    characters; at least the first, cut at a word boundary if it alone is too long."""
    paragraph = text.strip().split("\n\n", 1)[0].replace("\n", " ")
    sentences = _SENTENCE_END.split(paragraph)
    kept = sentences[0]
    for sentence in sentences[1:most]:
        if len(kept) + 1 + len(sentence) > limit:
            break
        kept += " " + sentence
    if len(kept) <= limit:
        return kept
    cut = kept[: limit - 1]
    return cut[: cut.rfind(" ")].rstrip(" ,;:-(") + "…"


def sections(detail: str) -> list[str]:
    """The text of each finding in a card as the rule wrote it: a merged card's numbered lines
    (without their number), or the whole detail of a one-finding card."""
    head = detail.split("\n\n", 1)[0]
    matches = [_LINE.match(line) for line in head.split("\n")]
    if matches and all(matches):
        return [m.group("text") for m in matches if m]
    return [detail]


def is_merged_layout(detail: str) -> bool:
    return len(sections(detail)) > 1 or bool(_LINE.match(detail.split("\n", 1)[0]))
