"""Words about the patient's record: conditions (status, relapse, duration), allergies, age."""
from __future__ import annotations

from typing import Any, Callable

from cds_service.core.conditions.base import (
    CompileContext,
    ConditionError,
    Evidence,
    Predicate,
    date_text,
    describe,
    remember,
    valueset_arg,
)
from cds_service.core.facts import (
    ACTIVE_CONDITION,
    ConditionFact,
    Facts,
)
from cds_service.core.terminology import (
    Match,
    Terminology,
)


def _condition(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = valueset_arg(arg, ctx.terminology)
    statuses = frozenset(arg.get("statuses", ())) if isinstance(arg, dict) else frozenset()
    if statuses == ACTIVE_CONDITION:
        statuses = frozenset()  # the default, spelled out

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        key = ("condition", vid, statuses)
        found = remember(facts, key, lambda: _conditions_in(facts, ctx.terminology, vid, statuses))
        return [Evidence(text, label) for text in found] or None

    return Predicate(check, frozenset({"conditions"}), frozenset({vid}))


_CONDITION_SETS = "condition-sets"


def condition_match(facts: Facts, terminology: Terminology, cond: ConditionFact, vid: str) -> Match | None:
    """``terminology.match_codes(cond.codings, vid)``, with every value set of the condition
    worked out once per call (``Facts.memo``): the rules ask of the same conditions for many sets."""
    index = facts.memo.get(_CONDITION_SETS)
    if index is None:
        index = facts.memo[_CONDITION_SETS] = {}
    sets = index.get(id(cond))  # the call's facts hold the condition: its id is its own for the call
    if sets is None:
        sets = index[id(cond)] = terminology.coding_sets(cond.codings)
    return sets.get(vid)


def _conditions_in(facts: Facts, terminology: Terminology, vid: str, statuses: frozenset[str]) -> list[str]:
    """Current conditions in the set; with ``statuses``, those whose clinical status is listed (R13)."""
    conditions = [c for c in facts.past_conditions if c.clinical in statuses] if statuses else facts.conditions
    found = []
    for cond in conditions:
        if (match := condition_match(facts, terminology, cond, vid)) is not None:
            name = cond.text or match.display
            status = " (suspected)" if cond.suspected and "suspect" not in name.lower() else ""
            if not cond.current:
                status += f" ({cond.clinical})"
            found.append(f"Condition: {name}{status}, {describe(match)}, since {date_text(cond.onset)}")
    return found


def _condition_in_relapse(arg: Any, ctx: CompileContext) -> Predicate:
    """A condition of the set recorded with clinicalStatus "relapse" (ICD-10-CM has no MS relapse code)."""
    vid, label = valueset_arg(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        for cond in facts.conditions:
            if cond.relapsing and (match := condition_match(facts, ctx.terminology, cond, vid)) is not None:
                return [Evidence(f"Condition in relapse: {cond.text or match.display}, {describe(match)}", label)]
        return None

    return Predicate(check, frozenset({"conditions"}), frozenset({vid}))


def _condition_for_days(arg: Any, ctx: CompileContext) -> Predicate:
    """A current condition of the set whose onset is at least ``at_least_days`` ago (it has lasted)
    and/or at most ``at_most_days`` ago (it began recently: "new back pain"). A condition with no
    onset date has no known age, so it is neither."""
    vid, label = valueset_arg(arg, ctx.terminology)
    at_least = int(arg.get("at_least_days", 0))
    at_most = arg.get("at_most_days")
    if at_most is None and "at_least_days" not in arg:
        raise ConditionError("condition_for_days takes at_least_days, at_most_days or both")

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        for cond in facts.conditions:
            if cond.onset is None:
                continue
            days = (facts.today - cond.onset).days
            if days >= at_least and (at_most is None or days <= int(at_most)):
                if (match := condition_match(facts, ctx.terminology, cond, vid)) is not None:
                    return [Evidence(f"{cond.text or match.display} recorded since {date_text(cond.onset)} ({days} days)", label)]
        return None

    return Predicate(check, frozenset({"conditions"}), frozenset({vid}))


def _allergy(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = valueset_arg(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        # As an order's drug is read: a product code (SCD/SBD) by its ingredients, else a brand or
        # an ingredient name in the allergy's words (an allergy recorded only as text counts).
        terminology = ctx.terminology
        for allergy in facts.allergy_records:
            sets = terminology.medication_sets(allergy.codings, allergy.text, terminology.brands.find(allergy.words))
            if (match := sets.get(vid)) is not None:
                return [Evidence(f"Allergy or intolerance recorded: {match.display}, {describe(match)}", label)]
        return None

    return Predicate(check, frozenset({"allergies"}), frozenset({vid}))


def _age_at_least(arg: Any, ctx: CompileContext) -> Predicate:
    """Years, or ``{years, label}`` when the age is one of the risks a summary names ({findings})."""
    years = int(arg["years"]) if isinstance(arg, dict) else int(arg)
    label = arg.get("label") if isinstance(arg, dict) else None

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if facts.age_years is None or facts.age_years < years:
            return None
        return [Evidence(f"Age {facts.age_years} years (threshold {years})", label)]

    return Predicate(check, frozenset({"patient"}), frozenset())


WORDS: dict[str, Callable[[Any, CompileContext], Predicate]] = {
    "condition": _condition,
    "condition_for_days": _condition_for_days,
    "condition_in_relapse": _condition_in_relapse,
    "allergy": _allergy,
    "age_at_least": _age_at_least,
}
