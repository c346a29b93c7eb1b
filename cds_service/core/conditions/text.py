"""Phrases in free text, with a negation before them ("no contrast", "non-contrast", "MRI WO
contrast", "w/o contrast") or just after them ("bed rest not recommended") and clause ends."""
from __future__ import annotations

import re
from typing import Any, Iterable

from cds_service.core.conditions.base import ConditionError
from cds_service.core.terminology import (
    _first_word,
    ascii_words,
    name_pattern,
)

# "wo" is how order catalogues abbreviate "without" ("MRI LUMBAR SPINE WO CONTRAST"); "w/o" and
# "w/out" are rewritten to "without" before matching (a slash would split them into two words).
DEFAULT_NEGATIONS = ("no", "avoid", "not", "without", "wo", "discontinue", "stop")


NEGATION_REACH = 3  # words before the phrase that a negation word may stand at


# Words just after a phrase that take it back: "bed rest not recommended", "bedrest
# contraindicated", "bed rest is not advised". Only these exact forms: a bare "not" after a phrase
# ("spine surgery not urgent") keeps the phrase, as a missed procedure is the worse error.
TAKEN_BACK = frozenset({"contraindicated", "discouraged", "discontinued", "cancelled", "canceled"})
NOT_WANTED = frozenset({"recommended", "indicated", "advised", "needed", "required", "allowed", "permitted"})
_LINKING = frozenset({"is", "are", "was", "be"})


# "with" beside a negation means both were meant ("without and with contrast", "w/wo contrast"):
# the study is done with contrast too, so the phrase stands.
_BOTH = frozenset({"with", "w"})


_CLAUSE_END = re.compile(r"[.;:\n]")


_WORD = re.compile(r"[A-Za-z]+")


_NON_PREFIX = re.compile(r"(?<![A-Za-z])non[- ]?$", re.IGNORECASE)


_WITHOUT_SHORT = re.compile(r"(?<![A-Za-z])w/o(?:ut)?(?![A-Za-z])", re.IGNORECASE)


class Patterns(list):  # type: ignore[type-arg]
    """A condition's phrase patterns, in order, each with the first run of letters its phrase
    starts with (``terminology.ascii_words``' key, None when it has none we can key): a phrase is
    searched for only in a text that holds that word, as ``NameIndex`` does for names."""

    def __init__(self, phrases: list[str]) -> None:
        super().__init__(name_pattern(phrase) for phrase in phrases)
        self.keys = [_first_word(phrase) for phrase in phrases]


def phrases(arg: Any) -> tuple[list[re.Pattern[str]], frozenset[str]]:
    """``{phrases, negations?}`` (or a plain list of phrases): whole-word patterns and negation words."""
    phrases = arg.get("phrases", []) if isinstance(arg, dict) else arg
    negations = arg.get("negations", DEFAULT_NEGATIONS) if isinstance(arg, dict) else DEFAULT_NEGATIONS
    for word in (*phrases, *negations):
        if not isinstance(word, str):  # YAML reads a bare no, yes, on or off as true or false
            raise ConditionError(f"{word!r} is not a word: put it in quotes (YAML reads a bare no/yes/on/off as true/false)")
    return Patterns(list(phrases)), frozenset(w.lower() for w in negations)


def phrase_in(texts: Iterable[str], patterns: list[re.Pattern[str]], negations: frozenset[str]) -> str | None:
    """The first phrase found, not negated, in one of the texts, as written there."""
    keys: list[str | None] | None = getattr(patterns, "keys", None)
    for written in texts:
        words = _WITHOUT_SHORT.sub("without", written)
        held = ascii_words(words) if keys is not None else None  # None: search every phrase
        for i, pattern in enumerate(patterns):
            if held is not None and (key := keys[i]) is not None and key not in held:  # type: ignore[index]
                continue  # its first word is not in the text: the phrase cannot be
            for found in pattern.finditer(words):
                if negations and (_negated(words[: found.start()], negations) or _taken_back(words[found.end():])):
                    continue
                return found.group(0)
    return None


def _negated(before: str, negations: frozenset[str]) -> bool:
    """A negation word among the last few words of the same clause before a phrase, or "non"
    joined to the phrase itself ("non-contrast CT"; but "non-urgent CT with contrast" is not).
    A "with" among those words as well means both ("without and with contrast"): not negated."""
    if _NON_PREFIX.search(before):
        return True
    clause = _CLAUSE_END.split(before)[-1]
    near = [w.lower() for w in _WORD.findall(clause)[-NEGATION_REACH:]]
    return any(w in negations for w in near) and not any(w in _BOTH for w in near)


def _taken_back(after: str) -> bool:
    """The words right after the phrase, in the same clause, say it is not wanted."""
    words = [w.lower() for w in _WORD.findall(_CLAUSE_END.split(after)[0])[:3]]
    if words and words[0] in _LINKING:
        words = words[1:]
    if words and words[0] in TAKEN_BACK:
        return True
    return len(words) >= 2 and words[0] == "not" and words[1] in NOT_WANTED
