"""The rule condition vocabulary, compiled to small predicates.

Each condition in a knowledge file is a one-key mapping (``{condition:
multiple-sclerosis}``); ``compile_condition`` turns it into a ``Predicate``:
a function of (facts, item) that returns the evidence lines when it holds and
None when it does not. ``item`` is the order (draft or active medication, or
service request) the rule is looking at, or None for patient-level rules.
Each compiled predicate also carries the data keys it reads, so rules whose
data could not be had are skipped rather than guessed. The vocabulary is
documented in docs/knowledge.md; adding a word means adding a compiler here.
Every compiler takes the condition's argument and one ``CompileContext``
(terminology and observation thresholds), as jsonschema's keyword functions
take their validator.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Mapping

from .facts import Facts, MedicationFact, ObservationFact, ServiceRequestFact
from .terminology import CPT, ICD10CM, LOINC, RXNORM, SNOMED, Match, Terminology, name_pattern

SYSTEM_NAMES = {ICD10CM: "ICD-10-CM", SNOMED: "SNOMED CT", RXNORM: "RxNorm", LOINC: "LOINC", CPT: "CPT"}
ABNORMAL_HIGH = {"H", "HH", "HU", "A", "AA"}


@dataclass(frozen=True)
class CompileContext:
    """What compiling a condition may read, passed to every condition compiler."""

    terminology: Terminology
    thresholds: Mapping[str, Any]  # observation limits by value set (observation-thresholds.yaml)


@dataclass(frozen=True)
class Evidence:
    """One line of a card's "why": what was found, its optional label, and how it matched."""

    text: str
    label: str | None = None
    by_name: bool = False  # recognised by its name, not by a code: the card asks to check the order


Check = Callable[[Facts, Any], "list[Evidence] | None"]


@dataclass(frozen=True)
class Predicate:
    check: Check
    needs: frozenset[str]
    valuesets: frozenset[str]

    def __call__(self, facts: Facts, item: Any) -> list[Evidence] | None:
        return self.check(facts, item)


class ConditionError(ValueError):
    """A condition that cannot be compiled; the message names what is wrong."""


def describe(match: Match) -> str:
    if match.by_name:
        return f"matched by name '{match.display}' (no known code on the order)"
    system = SYSTEM_NAMES.get(match.system or "", match.system or "")
    return f"{system} {match.code}"


def _date(value: date | None) -> str:
    return value.isoformat() if value else "date not recorded"


def compile_condition(spec: Any, ctx: CompileContext) -> Predicate:
    """The predicate for one condition of the rule language (one key: its word, and its argument)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConditionError(f"a condition is a mapping with exactly one key, not {spec!r}")
    (word, arg), = spec.items()
    compiler = _COMPILERS.get(word)
    if compiler is None:
        raise ConditionError(f"unknown condition '{word}' (known: {', '.join(sorted(_COMPILERS))})")
    return compiler(arg, ctx)


def _valueset(arg: Any, terminology: Terminology) -> tuple[str, str | None]:
    vid, label = (arg.get("valueset"), arg.get("label")) if isinstance(arg, dict) else (arg, None)
    if vid not in terminology.valuesets:
        raise ConditionError(f"unknown value set '{vid}'")
    return vid, label


def _all(arg: Any, ctx: CompileContext) -> Predicate:
    parts = [compile_condition(c, ctx) for c in arg]

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        evidence: list[Evidence] = []
        for part in parts:
            found = part(facts, item)
            if found is None:
                return None
            evidence.extend(found)
        return evidence

    return Predicate(check, _union(p.needs for p in parts), _union(p.valuesets for p in parts))


def _any(arg: Any, ctx: CompileContext) -> Predicate:
    parts = [compile_condition(c, ctx) for c in arg]

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        matched = [found for part in parts if (found := part(facts, item)) is not None]
        return [e for found in matched for e in found] if matched else None

    return Predicate(check, _union(p.needs for p in parts), _union(p.valuesets for p in parts))


def _not(arg: Any, ctx: CompileContext) -> Predicate:
    inner = compile_condition(arg, ctx)
    (word, inner_arg), = arg.items()
    absent_note = None
    if word in ("condition", "allergy", "active_medication"):
        vid, _ = _valueset(inner_arg, ctx.terminology)
        absent_note = f"None recorded: {ctx.terminology.valuesets[vid].title}"

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if inner(facts, item) is not None:
            return None
        return [Evidence(absent_note)] if absent_note else []

    return Predicate(check, inner.needs, inner.valuesets)


def _condition(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        found = _remember(facts, ("condition", vid), lambda: _conditions_in(facts, ctx.terminology, vid))
        return [Evidence(text, label) for text in found] or None

    return Predicate(check, frozenset({"conditions"}), frozenset({vid}))


def _remember(facts: Facts, key: Any, compute: Callable[[], Any]) -> Any:
    if key not in facts.memo:
        facts.memo[key] = compute()
    return facts.memo[key]


def _conditions_in(facts: Facts, terminology: Terminology, vid: str) -> list[str]:
    found = []
    for cond in facts.conditions:
        if (match := terminology.match_codes(cond.codings, vid)) is not None:
            name = cond.text or match.display
            status = " (suspected)" if cond.suspected and "suspect" not in name.lower() else ""
            found.append(f"Condition: {name}{status}, {describe(match)}, since {_date(cond.onset)}")
    return found


def _condition_in_relapse(arg: Any, ctx: CompileContext) -> Predicate:
    """A condition of the set recorded with clinicalStatus "relapse" (ICD-10-CM has no MS relapse code)."""
    vid, label = _valueset(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        for cond in facts.conditions:
            if cond.relapsing and (match := ctx.terminology.match_codes(cond.codings, vid)) is not None:
                return [Evidence(f"Condition in relapse: {cond.text or match.display}, {describe(match)}", label)]
        return None

    return Predicate(check, frozenset({"conditions"}), frozenset({vid}))


def _condition_for_days(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)
    at_least = int(arg["at_least_days"])

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        for cond in facts.conditions:
            if cond.onset and (facts.today - cond.onset).days >= at_least:
                if (match := ctx.terminology.match_codes(cond.codings, vid)) is not None:
                    days = (facts.today - cond.onset).days
                    return [Evidence(f"{cond.text or match.display} recorded since {_date(cond.onset)} ({days} days)", label)]
        return None

    return Predicate(check, frozenset({"conditions"}), frozenset({vid}))


def _allergy(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        for allergy in facts.allergies:
            if (match := ctx.terminology.match_codes(allergy, vid)) is not None:
                return [Evidence(f"Allergy or intolerance recorded: {match.display}, {describe(match)}", label)]
        return None

    return Predicate(check, frozenset({"allergies"}), frozenset({vid}))


def _active_medication(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)
    routes = frozenset(arg.get("routes", [])) if isinstance(arg, dict) else frozenset()

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        key = ("active_medication", vid, routes)
        found = _remember(facts, key, lambda: _active_in(facts, ctx.terminology, vid, routes))
        return [Evidence(found[0], label, found[1])] if found else None

    return Predicate(check, frozenset({"medications"}), frozenset({vid}))


def _active_in(facts: Facts, terminology: Terminology, vid: str, routes: frozenset[str]) -> tuple[str, bool] | None:
    """The first active medication in the value set: its evidence text, and whether it matched by name."""
    for med in facts.active_medications:
        if routes and med.route is not None and med.route not in routes:
            continue  # e.g. cromolyn eye drops are not the oral cromolyn a rule asks about
        if (match := terminology.match_medication(med.codings, med.text, vid)) is not None:
            return f"Active medication: {med.name} ({describe(match)}), since {_date(med.start)}", match.by_name
    return None


def _age_at_least(arg: Any, ctx: CompileContext) -> Predicate:
    years = int(arg)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if facts.age_years is None or facts.age_years < years:
            return None
        return [Evidence(f"Age {facts.age_years} years (threshold {years})")]

    return Predicate(check, frozenset({"patient"}), frozenset())


def _medication(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, MedicationFact):
            return None
        match = ctx.terminology.match_medication(item.codings, item.text, vid)
        if match is None:
            return None
        return [Evidence(f"{_order_word(item)}: {item.name} ({describe(match)})", label, match.by_name)]

    return Predicate(check, frozenset(), frozenset({vid}))


def _order_word(item: MedicationFact) -> str:
    return "Draft order" if item.kind == "draft" else "Active order"


def _procedure(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, ServiceRequestFact):
            return None
        match = ctx.terminology.match_codes(item.codings, vid)
        if match is None:
            return None
        return [Evidence(f"Draft order: {item.name} ({describe(match)})", label)]

    return Predicate(check, frozenset(), frozenset({vid}))


def _procedure_named(arg: Any, ctx: CompileContext) -> Predicate:
    """For orders no code system names (e.g. bed rest): whole-phrase match on the order's text."""
    patterns = [(phrase, name_pattern(phrase)) for phrase in arg]

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, ServiceRequestFact):
            return None
        words = " ".join([item.text] + [display for _, _, display in item.codings])
        for phrase, pattern in patterns:
            if pattern.search(words):
                return [Evidence(f"Draft order: {item.name} (matched by name '{phrase}'; no code is used for it)",
                                 by_name=True)]
        return None

    return Predicate(check, frozenset(), frozenset())


def _drafted_together(kind: type, matches: Callable[[Any, Any, str], Any]) -> Callable[..., Predicate]:
    """``draft_medication`` / ``draft_procedure``: another draft order of the same request (not the
    item itself) is in the value set; in order-select every draft counts, not only the selection."""
    def compile_word(arg: Any, ctx: CompileContext) -> Predicate:
        vid, label = _valueset(arg, ctx.terminology)

        def check(facts: Facts, item: Any) -> list[Evidence] | None:
            own = getattr(item, "ref", None)
            for draft in facts.all_drafts:
                if isinstance(draft, kind) and (own is None or draft.ref != own) and matches(ctx.terminology, draft, vid):
                    return [Evidence(f"Drafted in the same order: {draft.name}", label)]
            return None

        return Predicate(check, frozenset(), frozenset({vid}))

    return compile_word


def _route(arg: Any, ctx: CompileContext) -> Predicate:
    routes = frozenset(arg)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, MedicationFact):
            return None
        if item.route is None:  # unknown route: assume it may be systemic, and say so
            return [Evidence("Route not stated on the order")]
        return [] if item.route in routes else None

    return Predicate(check, frozenset(), frozenset())


def _course_days_over(arg: Any, ctx: CompileContext) -> Predicate:
    limit = float(arg)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, MedicationFact):
            return None
        if item.kind == "draft":
            if item.planned_days is None or item.planned_days <= limit:
                return None
            return [Evidence(f"Planned course: {item.planned_days:g} days (limit {limit:g})")]
        if item.start is None or (facts.today - item.start).days <= limit:
            return None
        return [Evidence(f"Taken since {_date(item.start)} ({(facts.today - item.start).days} days, limit {limit:g})")]

    return Predicate(check, frozenset(), frozenset())


def _dose_over(attribute: str, words: str) -> Callable[..., Predicate]:
    def compiler(arg: Any, ctx: CompileContext) -> Predicate:
        limit = float(arg)

        def check(facts: Facts, item: Any) -> list[Evidence] | None:
            value = getattr(item, attribute, None)
            if value is None or value <= limit:
                return None
            return [Evidence(f"{words}: {value:g} mg (limit {limit:g} mg)")]

        return Predicate(check, frozenset(), frozenset())

    return compiler


def _reason(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        reasons = getattr(item, "reason_codings", ())
        if (match := ctx.terminology.match_codes(reasons, vid)) is None:
            return None
        return [Evidence(f"Reason on the order: {match.display} ({describe(match)})", label)]

    return Predicate(check, frozenset(), frozenset({vid}))


def _no_reason(arg: Any, ctx: CompileContext) -> Predicate:
    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        return [Evidence("No reason given on the order")] if not getattr(item, "reason_codings", ()) else None

    return Predicate(check, frozenset(), frozenset())


def _latest(facts: Facts, terminology: Terminology, vid: str) -> ObservationFact | None:
    vs = terminology.valuesets[vid]
    candidates = [o for code, o in facts.latest_observations.items() if vs.contains(LOINC, code)]
    return max(candidates, key=lambda o: o.when or date.min, default=None)


def _observation_high(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)
    limit = ctx.thresholds.get(vid) or {}

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        obs = _latest(facts, ctx.terminology, vid)
        if obs is None or not _is_high(obs, limit):
            return None
        value = f"{obs.value:g} {obs.unit}".strip() if obs.value is not None else "abnormal"
        return [Evidence(f"Most recent {obs.text}: {value} on {_date(obs.when)} (above the reference range)", label)]

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
    return upper is not None and obs.unit == unit and obs.value > float(upper)


def _observation_at_most(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)
    limit = float(arg["value"])
    units = frozenset(arg.get("units", []))

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        obs = _latest(facts, ctx.terminology, vid)
        if obs is None or obs.value is None or obs.value > limit:
            return None
        if units and obs.unit not in units:
            return None
        return [Evidence(f"Most recent {obs.text}: {obs.value:g} on {_date(obs.when)} (at or below {limit:g})", label)]

    return Predicate(check, frozenset({"observations"}), frozenset({vid}))


def _union(sets: Any) -> frozenset[str]:
    result: set[str] = set()
    for s in sets:
        result |= s
    return frozenset(result)


_COMPILERS: dict[str, Callable[[Any, CompileContext], Predicate]] = {
    "all": _all,
    "any": _any,
    "not": _not,
    "condition": _condition,
    "condition_for_days": _condition_for_days,
    "condition_in_relapse": _condition_in_relapse,
    "allergy": _allergy,
    "active_medication": _active_medication,
    "age_at_least": _age_at_least,
    "medication": _medication,
    "procedure": _procedure,
    "procedure_named": _procedure_named,
    "route": _route,
    "draft_medication": _drafted_together(MedicationFact, lambda t, d, vid: t.match_medication(d.codings, d.text, vid)),
    "draft_procedure": _drafted_together(ServiceRequestFact, lambda t, d, vid: t.match_codes(d.codings, vid)),
    "course_days_over": _course_days_over,
    "daily_dose_mg_over": _dose_over("daily_dose_mg", "Maximum daily dose"),
    "single_dose_mg_over": _dose_over("single_dose_mg", "Single dose"),
    "reason": _reason,
    "no_reason": _no_reason,
    "observation_high": _observation_high,
    "observation_at_most": _observation_at_most,
}

