"""all, any, not: conditions made of conditions."""
from __future__ import annotations

from typing import Any, Callable

from cds_service.core.conditions import registry
from cds_service.core.conditions.base import (
    CompileContext,
    Evidence,
    Predicate,
    combined,
    valueset_arg,
)
from cds_service.core.facts import (
    Facts,
)


def _all(arg: Any, ctx: CompileContext) -> Predicate:
    parts = [registry.compile_part(c, ctx, i) for i, c in enumerate(arg)]

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        evidence: list[Evidence] = []
        for part in parts:
            found = part(facts, item)
            if found is None:
                return None
            evidence.extend(found)
        return evidence

    return combined(check, parts)


def _any(arg: Any, ctx: CompileContext) -> Predicate:
    parts = [registry.compile_part(c, ctx, i) for i, c in enumerate(arg)]

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        matched = [found for part in parts if (found := part(facts, item)) is not None]
        return [e for found in matched for e in found] if matched else None

    return combined(check, parts)


def _not(arg: Any, ctx: CompileContext) -> Predicate:
    inner = registry.compile_condition(arg, ctx)
    (word, inner_arg), = arg.items()
    absent_note = None
    if word in ("condition", "allergy", "active_medication", "observation_recorded"):
        vid, _ = valueset_arg(inner_arg, ctx.terminology)
        absent_note = f"None recorded: {ctx.terminology.valuesets[vid].title}"

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if inner(facts, item) is not None:
            return None
        return [Evidence(absent_note)] if absent_note else []

    return Predicate(check, inner.needs, inner.valuesets, inner.wants)


WORDS: dict[str, Callable[[Any, CompileContext], Predicate]] = {
    "all": _all,
    "any": _any,
    "not": _not,
}
