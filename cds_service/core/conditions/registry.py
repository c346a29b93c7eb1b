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
from cds_service.core.conditions.base import CompileContext, ConditionError, Predicate
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
        raise ConditionError(f"unknown condition '{word}'{did_you_mean(word, _COMPILERS)}"
                             f" (known: {', '.join(sorted(_COMPILERS))})")
    return compiler(arg, ctx)


def condition_words() -> list[str]:
    """Every word of the vocabulary: the knowledge loader puts them into the module schema at load."""
    return sorted(_COMPILERS)
