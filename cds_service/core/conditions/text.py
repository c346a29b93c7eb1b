"""Phrases in free text, with a negation before them ("no contrast", "non-contrast") and clause ends."""
from __future__ import annotations

import re
from typing import Any, Iterable

from cds_service.core.terminology import (
    name_pattern,
)

DEFAULT_NEGATIONS = ("no", "avoid", "not", "without", "discontinue", "stop")


NEGATION_REACH = 3  # words before the phrase that a negation word may stand at


_CLAUSE_END = re.compile(r"[.;:\n]")


_WORD = re.compile(r"[A-Za-z]+")


_NON_PREFIX = re.compile(r"(?<![A-Za-z])non[- ]?$", re.IGNORECASE)


def phrases(arg: Any) -> tuple[list[re.Pattern[str]], frozenset[str]]:
    """``{phrases, negations?}`` (or a plain list of phrases): whole-word patterns and negation words."""
    phrases = arg.get("phrases", []) if isinstance(arg, dict) else arg
    negations = arg.get("negations", DEFAULT_NEGATIONS) if isinstance(arg, dict) else DEFAULT_NEGATIONS
    return [name_pattern(phrase) for phrase in phrases], frozenset(w.lower() for w in negations)


def phrase_in(texts: Iterable[str], patterns: list[re.Pattern[str]], negations: frozenset[str]) -> str | None:
    """The first phrase found, not negated, in one of the texts, as written there."""
    for words in texts:
        for pattern in patterns:
            for found in pattern.finditer(words):
                if not _negated(words[: found.start()], negations):
                    return found.group(0)
    return None


def _negated(before: str, negations: frozenset[str]) -> bool:
    """A negation word among the last few words of the same clause before a phrase, or "non"
    joined to the phrase itself ("non-contrast CT"; but "non-urgent CT with contrast" is not)."""
    if _NON_PREFIX.search(before):
        return True
    clause = _CLAUSE_END.split(before)[-1]
    return any(w.lower() in negations for w in _WORD.findall(clause)[-NEGATION_REACH:])
