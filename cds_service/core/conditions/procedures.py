"""Words about service requests: codes, named procedures and categories, and the reasons given."""
from __future__ import annotations

from typing import Any, Callable

from cds_service.core.conditions.base import (
    SYSTEM_NAMES,
    CompileContext,
    ConditionError,
    Evidence,
    Predicate,
    describe,
    valueset_arg,
)
from cds_service.core.conditions.medications import order_word
from cds_service.core.conditions.text import phrase_in, phrases
from cds_service.core.facts import (
    Facts,
    MedicationFact,
    ServiceRequestFact,
)


def _procedure(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = valueset_arg(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, ServiceRequestFact):
            return None
        match = ctx.terminology.match_codes(item.codings, vid)
        if match is None:
            return None
        return [Evidence(f"Draft order: {item.name} ({describe(match)})", label)]

    return Predicate(check, frozenset(), frozenset({vid}))


def _procedure_named(arg: Any, ctx: CompileContext) -> Predicate:
    """The last resort for orders no code names (bed rest) or that carry no code we know (a
    text-only "epidural steroid injection"): a phrase as whole words in the order's text, coding
    displays or order details, and not negated ("no bed rest", "avoid strict bedrest")."""
    patterns, negations = phrases(arg)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, ServiceRequestFact) or ctx.terminology.knows_code(item.codings):
            return None
        found = phrase_in((item.text, *(d for _, _, d in item.codings), *item.details), patterns, negations)
        if found is None:
            return None
        return [Evidence(f"Draft order: {item.name} (recognised by its name: '{found}')", by_name=True)]

    return Predicate(check, frozenset(), frozenset())


def _reason_named(arg: Any, ctx: CompileContext) -> Predicate:
    """A medication order whose reason in words (text or displays) or one of its notes says one of
    the phrases, not negated: "Premedication before CT" (a reason no value set codes)."""
    patterns, negations = phrases(arg)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, MedicationFact):
            return None
        found = phrase_in(item.stated_texts, patterns, negations)
        return None if found is None else [Evidence(f"{order_word(item)}: {item.name}, its reason or note says '{found}'")]

    return Predicate(check, frozenset(), frozenset())


def _order_says(arg: Any, ctx: CompileContext) -> Predicate:
    """A phrase anywhere the prescriber wrote about the order (its name, coding displays, order
    details, reason and notes), coded or not, and not negated: what takes an order out of a rule's
    reach ("labour epidural", "bed rest after lumbar puncture", "intra-operative analgesia")."""
    patterns, negations = phrases(arg)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if (texts := _written(item)) is None:
            return None
        found = phrase_in(texts, patterns, negations)
        return None if found is None else [Evidence(f"The order {item.name} says '{found}'")]

    return Predicate(check, frozenset(), frozenset())


def _written(item: Any) -> tuple[str, ...] | None:
    """Every text written on an order: name, displays, details, reason and notes."""
    if isinstance(item, ServiceRequestFact):
        return (item.text, *(d for _, _, d in item.codings), *item.details,
                item.reason_text, *(d for _, _, d in item.reason_codings))
    if isinstance(item, MedicationFact):
        return (item.text, *(d for _, _, d in item.codings), *item.stated_texts)
    return None


def _procedure_category(arg: Any, ctx: CompileContext) -> Predicate:
    """The order's ServiceRequest.category has one of the codings ("system|code")."""
    wanted = frozenset(tuple(c.rsplit("|", 1)) for c in arg)
    if not wanted or any(len(c) != 2 for c in wanted):
        raise ConditionError(f"procedure_category takes a list of 'system|code', not {arg!r}")

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, ServiceRequestFact):
            return None
        for system, code, display in item.category:
            if (system, code) in wanted:
                name = SYSTEM_NAMES.get(system, system)
                return [Evidence(f"Draft order: {item.name} (category {display or code}, {name} {code})")]
        return None

    return Predicate(check, frozenset(), frozenset())


def _reason(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = valueset_arg(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        reasons = getattr(item, "reason_codings", ())
        if (match := ctx.terminology.match_codes(reasons, vid)) is None:
            return None
        return [Evidence(f"Reason on the order: {match.display} ({describe(match)})", label)]

    return Predicate(check, frozenset(), frozenset({vid}))


def _no_reason(arg: Any, ctx: CompileContext) -> Predicate:
    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        given = getattr(item, "reason_codings", ()) or getattr(item, "reason_text", "")
        return None if given else [Evidence("No reason given on the order")]

    return Predicate(check, frozenset(), frozenset())


WORDS: dict[str, Callable[[Any, CompileContext], Predicate]] = {
    "procedure": _procedure,
    "procedure_named": _procedure_named,
    "procedure_category": _procedure_category,
    "reason": _reason,
    "no_reason": _no_reason,
    "reason_named": _reason_named,
    "order_says": _order_says,
}
