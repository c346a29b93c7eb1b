"""Words about lab results: thresholds, the latest value, and whether one is recorded."""
from __future__ import annotations

import operator
from datetime import date
from typing import Any, Callable, Mapping

from cds_service.core.conditions.base import (
    CompileContext,
    ConditionError,
    Evidence,
    Predicate,
    arguments,
    date_text,
    number,
    valueset_arg,
)
from cds_service.core.facts import (
    Facts,
    ObservationFact,
)
from cds_service.core.terminology import (
    LOINC,
    Terminology,
)
from cds_service.core.units import readable, same_unit, unit_problem

ABNORMAL_HIGH = {"H", "HH", "HU", "A", "AA"}


def _latest(facts: Facts, terminology: Terminology, vid: str) -> ObservationFact | None:
    candidates = [o for code, o in facts.latest_observations.items() if terminology.contains(vid, LOINC, code)]
    return max(candidates, key=lambda o: o.when or date.min, default=None)


def _observation_high(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = valueset_arg(arg, ctx.terminology)
    limit = ctx.thresholds.get(vid) or {}

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        obs = _latest(facts, ctx.terminology, vid)
        if obs is None or not _is_high(obs, limit):
            return None
        value = _quantity(obs) if obs.value is not None else "abnormal"
        return [Evidence(f"Most recent {obs.text}: {value} on {date_text(obs.when)} (above the reference range)", label)]

    return Predicate(check, frozenset({"observations"}), frozenset({vid}))


def _is_high(obs: ObservationFact, limit: Mapping[str, Any]) -> bool:
    """Abnormal high: the lab's interpretation, else its reference range, else our documented threshold."""
    if obs.interpretation:
        return any(code in ABNORMAL_HIGH for code in obs.interpretation)
    if obs.value is None:
        return False
    if obs.range_high is not None:
        return obs.value > obs.range_high
    upper, unit = limit.get("upper_limit"), limit.get("unit")
    return upper is not None and same_unit(obs.units, [unit or ""]) and obs.value > float(upper)


OBSERVATION_PICKS = ("latest", "lowest-of-latest-day")


def _observation_compared(word: str, holds: Callable[[float, float], bool], relation: str) -> Callable[..., Predicate]:
    """``observation_at_most`` (value <= limit), ``observation_below`` (value < limit, for bands
    that end just under a limit, "under 15 kg") and ``observation_at_least`` (value >= limit): the
    latest value (``of: latest``), or the lowest of the latest day's values (``of:
    lowest-of-latest-day``: every site of the latest DXA exam, R11), compared with ``value``. With
    ``units``, a latest value in other units never holds, so a band is written with these positive
    words, not with a ``not`` that a weight in pounds would also satisfy."""
    def compiler(arg: Any, ctx: CompileContext) -> Predicate:
        arguments(word, arg, ("valueset", "value"), ("units", "of", "label"))
        vid, label = valueset_arg(arg, ctx.terminology)
        limit = number(arg, "value")
        units = frozenset(_units(arg))
        pick = arg.get("of", "latest")
        if pick not in OBSERVATION_PICKS:
            raise ConditionError(f"must be one of {', '.join(OBSERVATION_PICKS)}, not {pick!r}", ("of",))

        def check(facts: Facts, item: Any) -> list[Evidence] | None:
            obs = (_latest(facts, ctx.terminology, vid) if pick == "latest"
                   else _lowest_of_latest_day(facts, ctx.terminology, vid))
            if obs is None or obs.value is None or not holds(obs.value, limit):
                return None
            if units and not same_unit(obs.units, units):
                return None
            what = "Most recent" if pick == "latest" else "Lowest of the latest exam:"
            return [Evidence(f"{what} {obs.text}: {_quantity(obs)} on {date_text(obs.when)} ({relation} {limit:g}"
                             f"{' ' + readable(sorted(units)[0]) if len(units) == 1 else ''})", label)]

        return Predicate(check, frozenset({"observations"}), frozenset({vid}))

    return compiler


def _lowest_of_latest_day(facts: Facts, terminology: Terminology, vid: str) -> ObservationFact | None:
    days = [day for code, day in facts.latest_day_observations.items() if terminology.contains(vid, LOINC, code)]
    if not days:
        return None
    latest = max(day[0].when or date.min for day in days)
    same_day = [o for day in days if (day[0].when or date.min) == latest for o in day if o.value is not None]
    return min(same_day, key=lambda o: o.value or 0.0, default=None)


def _observation_recorded(arg: Any, ctx: CompileContext) -> Predicate:
    """A final (or amended, corrected) result with a value, of any date, in the set; with
    ``units``, in one of them (R15: "a weight in kg exists", "a tryptase exists")."""
    if isinstance(arg, dict):
        arguments("observation_recorded", arg, ("valueset",), ("units", "label"))
    vid, label = valueset_arg(arg, ctx.terminology)
    units = frozenset(_units(arg)) if isinstance(arg, dict) else frozenset()

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        for code, seen in facts.recorded_units.items():
            if ctx.terminology.contains(vid, LOINC, code) and (not units or same_unit(seen, units)):
                latest = facts.latest_observations.get(code)
                name = latest.text if latest else code
                matching = sorted(u for u in seen if same_unit([u], units))
                return [Evidence(f"Result on record: {name}" + (f" in {', '.join(matching)}" if units else ""), label)]
        return None

    return Predicate(check, frozenset({"observations"}), frozenset({vid}))


def _units(arg: dict[str, Any]) -> list[str]:
    """The UCUM codes a condition names, each checked (core/units.py: spellings, sources)."""
    units = arg.get("units", [])
    if not isinstance(units, list):
        raise ConditionError(f"takes a list, e.g. [{units}], not {units!r}", ("units",))
    for i, unit in enumerate(units):
        if problem := unit_problem(unit):
            raise ConditionError(problem, ("units", f"[{i}]"))
    return units


def _quantity(obs: ObservationFact) -> str:
    return f"{obs.value:g} {readable(obs.unit)}".strip()


def why_not(word: str, arg: Any, facts: Facts, terminology: Terminology) -> str | None:
    """For explain: the result an observation condition found and why its unit or value did not
    count; None when the word is not about results."""
    if word not in WORDS or not isinstance(arg, (dict, str)):
        return None
    vid = arg.get("valueset") if isinstance(arg, dict) else arg
    if not isinstance(vid, str):
        return None
    pick = arg.get("of", "latest") if isinstance(arg, dict) else "latest"
    obs = _latest(facts, terminology, vid) if pick == "latest" else _lowest_of_latest_day(facts, terminology, vid)
    if obs is None:
        return f"no result in value set {vid} on the record"
    found = f"found {obs.text}: {_quantity(obs) if obs.value is not None else 'no value'} on {date_text(obs.when)}"
    units = arg.get("units", []) if isinstance(arg, dict) else []
    if obs.value is None:
        return f"{found}; a result without a value does not count"
    if units and not same_unit(obs.units, units):
        shown = " / ".join(f"'{u}'" for u in obs.units) or "no unit"
        return f"{found}; its unit {shown} is not one of [{', '.join(units)}], so it does not count"
    if isinstance(arg, dict) and "value" in arg:
        return f"{found}; the value does not meet the limit {arg['value']}"
    return f"{found}; not above its reference range" if word == "observation_high" else found


WORDS: dict[str, Callable[[Any, CompileContext], Predicate]] = {
    "observation_high": _observation_high,
    "observation_at_most": _observation_compared("observation_at_most", operator.le, "at or below"),
    "observation_below": _observation_compared("observation_below", operator.lt, "below"),
    "observation_at_least": _observation_compared("observation_at_least", operator.ge, "at or above"),
    "observation_recorded": _observation_recorded,
}
