"""The vocabulary: each word of the rule language to its compiler, gathered from the word families
(as jsonschema gathers its keyword functions into a validator's registry)."""
from __future__ import annotations

from typing import Any, Callable

from cds_service.core.conditions import (
    logic,
    medications,
    observations,
    patient,
    procedures,
)
from cds_service.core.conditions.base import CompileContext, ConditionError, Predicate, arguments, number
from cds_service.errors import did_you_mean

_COMPILERS: dict[str, Callable[[Any, CompileContext], Predicate]] = {
    **logic.WORDS,
    **patient.WORDS,
    **medications.WORDS,
    **procedures.WORDS,
    **observations.WORDS,
}


def compile_condition(spec: Any, ctx: CompileContext) -> Predicate:
    """The predicate for one condition of the rule language (one key: its word, and its argument)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConditionError(f"a condition is a mapping with exactly one key, not {spec!r}")
    (word, arg), = spec.items()
    compiler = _COMPILERS.get(word)
    if compiler is None:
        raise ConditionError(f"unknown condition '{word}'{suggest_word(word)}"
                             f" (known: {', '.join(sorted(_COMPILERS))})")
    try:
        _check_shape(word, arg)
        return compiler(arg, ctx)
    except ConditionError as exc:
        raise exc.inside(word) from None
    except KeyError as exc:  # a compiler that reads a key without checking: say which, and where
        raise ConditionError(f"missing key {exc}", (word,)) from None
    except (TypeError, ValueError) as exc:
        raise ConditionError(str(exc), (word,)) from None


# The keys of a word's argument when it is a mapping (required, then optional), and the words whose
# argument is one number: checked before compiling, so an unknown key or a text where a number
# belongs is named with the fix instead of being ignored or failing inside the word.
_LABELLED = (("valueset",), ("label",))
_MAPPING_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "condition": (("valueset",), ("label", "statuses")),
    "condition_for_days": (("valueset",), ("label", "at_least_days", "at_most_days")),
    "age_at_least": (("years",), ("label",)),  # or the number of years alone
    "active_medication": (("valueset",), ("label", "routes", "for_days_at_least", "recent_days")),
    "procedure_named": (("phrases",), ("negations",)),
    "reason_named": (("phrases",), ("negations",)),
    **dict.fromkeys(("condition_in_relapse", "allergy", "medication", "procedure", "reason",
                     "draft_medication", "draft_procedure", "observation_high"), _LABELLED),
}
_NUMBER_KEYS = ("at_least_days", "at_most_days", "for_days_at_least", "recent_days", "years")
_NUMBER_WORDS = ("age_at_least", "course_days_over", "daily_dose_mg_over", "single_dose_mg_over")


def _check_shape(word: str, arg: Any) -> None:
    labelled_number = word in _MAPPING_KEYS and isinstance(arg, dict)
    if word in _NUMBER_WORDS and not labelled_number and (isinstance(arg, bool) or not isinstance(arg, (int, float))):
        raise ConditionError(f"{arg!r} is not a number: write the number alone, e.g. {{{word}: 18}}")
    if word in _MAPPING_KEYS and isinstance(arg, dict):
        required, optional = _MAPPING_KEYS[word]
        arguments(word, arg, required, optional)
        for key in _NUMBER_KEYS:
            if key in arg:
                number(arg, key)


def compile_part(spec: Any, ctx: CompileContext, index: int) -> Predicate:
    """Item ``index`` of a list of conditions (all, any): an error names its place in the list."""
    try:
        return compile_condition(spec, ctx)
    except ConditionError as exc:
        raise exc.inside(f"[{index}]") from None


# What a misspelt comparison means, so that "did you mean" keeps its direction: difflib alone
# finds observation_at_least nearest to observation_less_than.
_MEANINGS = {
    "observation_below": ("less", "lower", "under", "below", "lt", "smaller"),
    "observation_at_most": ("most", "max", "maximum", "le", "lte"),
    "observation_at_least": ("least", "min", "minimum", "ge", "gte", "greater", "more", "over", "above"),
}


def suggest_word(word: object) -> str:
    """' (did you mean 'x'?)' for a misspelt condition word, by meaning first, then by spelling."""
    if isinstance(word, str) and word.startswith(("observation", "lab", "result", "value")):
        tokens = set(word.lower().replace("-", "_").split("_"))
        for meant, hints in _MEANINGS.items():
            if tokens & set(hints):
                above = " (at or above: there is no strictly-above word)" if tokens & {"greater", "more", "over", "above"} else ""
                return f" (did you mean '{meant}'?{above})"
    return did_you_mean(word, _COMPILERS)


def condition_words() -> list[str]:
    """Every word of the vocabulary: the knowledge loader puts them into the module schema at load."""
    return sorted(_COMPILERS)
