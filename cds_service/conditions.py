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

import operator
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Callable, Iterable, Iterator, Mapping

from .dosing import ROUTES, route_of_word
from .errors import did_you_mean
from .facts import ACTIVE_CONDITION, Facts, MedicationFact, ObservationFact, ServiceRequestFact
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
    # Prefetch keys read when they can be had and taken as empty when not (they can only silence a
    # finding, never make one): asked for in discovery, never a reason to skip the rule.
    wants: frozenset[str] = field(default=frozenset())

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
        raise ConditionError(f"unknown condition '{word}'{did_you_mean(word, _COMPILERS)}"
                             f" (known: {', '.join(sorted(_COMPILERS))})")
    return compiler(arg, ctx)


def condition_words() -> list[str]:
    """Every word of the vocabulary: knowledge.py puts them into the module schema at load."""
    return sorted(_COMPILERS)


def _valueset(arg: Any, terminology: Terminology) -> tuple[str, str | None]:
    vid, label = (arg.get("valueset"), arg.get("label")) if isinstance(arg, dict) else (arg, None)
    if vid not in terminology.valuesets:
        raise ConditionError(f"unknown value set '{vid}'{did_you_mean(vid, terminology.valuesets)}")
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

    return _combined(check, parts)


def _any(arg: Any, ctx: CompileContext) -> Predicate:
    parts = [compile_condition(c, ctx) for c in arg]

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        matched = [found for part in parts if (found := part(facts, item)) is not None]
        return [e for found in matched for e in found] if matched else None

    return _combined(check, parts)


def _not(arg: Any, ctx: CompileContext) -> Predicate:
    inner = compile_condition(arg, ctx)
    (word, inner_arg), = arg.items()
    absent_note = None
    if word in ("condition", "allergy", "active_medication", "observation_recorded"):
        vid, _ = _valueset(inner_arg, ctx.terminology)
        absent_note = f"None recorded: {ctx.terminology.valuesets[vid].title}"

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if inner(facts, item) is not None:
            return None
        return [Evidence(absent_note)] if absent_note else []

    return Predicate(check, inner.needs, inner.valuesets, inner.wants)


def _condition(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = _valueset(arg, ctx.terminology)
    statuses = frozenset(arg.get("statuses", ())) if isinstance(arg, dict) else frozenset()
    if statuses == ACTIVE_CONDITION:
        statuses = frozenset()  # the default, spelled out

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        key = ("condition", vid, statuses)
        found = _remember(facts, key, lambda: _conditions_in(facts, ctx.terminology, vid, statuses))
        return [Evidence(text, label) for text in found] or None

    return Predicate(check, frozenset({"conditions"}), frozenset({vid}))


def _remember(facts: Facts, key: Any, compute: Callable[[], Any]) -> Any:
    if key not in facts.memo:
        facts.memo[key] = compute()
    return facts.memo[key]


def _conditions_in(facts: Facts, terminology: Terminology, vid: str, statuses: frozenset[str]) -> list[str]:
    """Current conditions in the set; with ``statuses``, those whose clinical status is listed (R13)."""
    conditions = [c for c in facts.past_conditions if c.clinical in statuses] if statuses else facts.conditions
    found = []
    for cond in conditions:
        if (match := terminology.match_codes(cond.codings, vid)) is not None:
            name = cond.text or match.display
            status = " (suspected)" if cond.suspected and "suspect" not in name.lower() else ""
            if not cond.current:
                status += f" ({cond.clinical})"
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


RECENT_MEDICATION_KEYS = frozenset({"medicationStatements", "medicationDispenses"})


def _active_medication(arg: Any, ctx: CompileContext) -> Predicate:
    """An active or on-hold order in the set; ``routes`` narrows it, ``for_days_at_least`` asks that
    it started that long ago (R14), ``recent_days`` also accepts the past prescriptions,
    dispenses and statements of that many days (R8)."""
    vid, label = _valueset(arg, ctx.terminology)
    options = arg if isinstance(arg, dict) else {}
    routes = _routes(options.get("routes", []), "routes")
    at_least = options.get("for_days_at_least")
    recent = options.get("recent_days")
    wants = RECENT_MEDICATION_KEYS if recent is not None else frozenset()

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        key = ("active_medication", vid, routes, at_least, recent)
        found = _remember(facts, key, lambda: _active_in(facts, vid, routes, at_least, recent))
        return [Evidence(found[0], label, found[1])] if found else None

    return Predicate(check, frozenset({"medications"}), frozenset({vid}), wants)


def _medication_match(med: MedicationFact, vid: str, routes: frozenset[str]) -> Match | None:
    if routes and med.route is not None and med.route not in routes:
        return None  # e.g. cromolyn eye drops are not the oral cromolyn a rule asks about
    return med.sets.get(vid)  # matched once, when its facts were built


def _active_in(
    facts: Facts, vid: str, routes: frozenset[str], at_least: int | None, recent: int | None,
) -> tuple[str, bool] | None:
    """The first matching medication: its evidence text, and whether it matched by name."""
    for med in facts.active_medications:
        if at_least is not None and (med.start is None or (facts.today - med.start).days < at_least):
            continue
        if (match := _medication_match(med, vid, routes)) is not None:
            since = _date(med.start)
            if at_least is not None:
                since += f" ({(facts.today - med.start).days} days)" if med.start else ""
            return f"Active medication: {med.name} ({describe(match)}), since {since}", match.by_name
    if recent is None:
        return None
    oldest = facts.today - timedelta(days=recent)
    for past in facts.recent_medications:
        if past.when is not None and not oldest <= past.when <= facts.today:
            continue
        if (match := _medication_match(past.medication, vid, routes)) is not None:
            when = "current" if past.when is None else _date(past.when)
            text = f"Recent {past.source}: {past.medication.name} ({describe(match)}), {when}"
            return text, match.by_name
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
        match = item.sets.get(vid)
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


DEFAULT_NEGATIONS = ("no", "avoid", "not", "without", "discontinue", "stop")
NEGATION_REACH = 3  # words before the phrase that a negation word may stand at
_CLAUSE_END = re.compile(r"[.;:\n]")
_WORD = re.compile(r"[A-Za-z]+")
_NON_PREFIX = re.compile(r"(?<![A-Za-z])non[- ]?$", re.IGNORECASE)


def _procedure_named(arg: Any, ctx: CompileContext) -> Predicate:
    """The last resort for orders no code names (bed rest) or that carry no code we know (a
    text-only "epidural steroid injection"): a phrase as whole words in the order's text, coding
    displays or order details, and not negated ("no bed rest", "avoid strict bedrest")."""
    patterns, negations = _phrases(arg)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, ServiceRequestFact) or ctx.terminology.knows_code(item.codings):
            return None
        found = _phrase_in((item.text, *(d for _, _, d in item.codings), *item.details), patterns, negations)
        if found is None:
            return None
        return [Evidence(f"Draft order: {item.name} (recognised by its name: '{found}')", by_name=True)]

    return Predicate(check, frozenset(), frozenset())


def _phrases(arg: Any) -> tuple[list[re.Pattern[str]], frozenset[str]]:
    """``{phrases, negations?}`` (or a plain list of phrases): whole-word patterns and negation words."""
    phrases = arg.get("phrases", []) if isinstance(arg, dict) else arg
    negations = arg.get("negations", DEFAULT_NEGATIONS) if isinstance(arg, dict) else DEFAULT_NEGATIONS
    return [name_pattern(phrase) for phrase in phrases], frozenset(w.lower() for w in negations)


def _phrase_in(texts: Iterable[str], patterns: list[re.Pattern[str]], negations: frozenset[str]) -> str | None:
    """The first phrase found, not negated, in one of the texts, as written there."""
    for words in texts:
        for pattern in patterns:
            for found in pattern.finditer(words):
                if not _negated(words[: found.start()], negations):
                    return found.group(0)
    return None


def _reason_named(arg: Any, ctx: CompileContext) -> Predicate:
    """A medication order whose reason in words (text or displays) or one of its notes says one of
    the phrases, not negated: "Premedication before CT" (a reason no value set codes)."""
    patterns, negations = _phrases(arg)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, MedicationFact):
            return None
        found = _phrase_in(item.stated_texts, patterns, negations)
        return None if found is None else [Evidence(f"{_order_word(item)}: {item.name}, its reason or note says '{found}'")]

    return Predicate(check, frozenset(), frozenset())


def _negated(before: str, negations: frozenset[str]) -> bool:
    """A negation word among the last few words of the same clause before a phrase, or "non"
    joined to the phrase itself ("non-contrast CT"; but "non-urgent CT with contrast" is not)."""
    if _NON_PREFIX.search(before):
        return True
    clause = _CLAUSE_END.split(before)[-1]
    return any(w.lower() in negations for w in _WORD.findall(clause)[-NEGATION_REACH:])


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


def _routes(arg: Any, key: str) -> frozenset[str]:
    """A list of route words, each one of dosing.ROUTES: a word outside them would never match."""
    if not isinstance(arg, list):
        raise ConditionError(f"{key} takes a list of routes, e.g. [{arg if isinstance(arg, str) else 'oral'}]")
    for word in arg:
        if word not in ROUTES:
            implied = route_of_word(word) if isinstance(word, str) else None
            hint = f" (did you mean '{implied}'? {word} orders count as {implied})" if implied else did_you_mean(word, ROUTES)
            raise ConditionError(f"unknown route '{word}'{hint}; routes are {', '.join(ROUTES)}")
    return frozenset(arg)


def _drafted_together(kind: type, matches: Callable[[Any, Any, str], Any]) -> Callable[..., Predicate]:
    """``draft_medication`` / ``draft_procedure``: another draft order of the same request (not the
    item itself) is in the value set; in order-select every draft counts, not only the selection."""
    def compile_word(arg: Any, ctx: CompileContext) -> Predicate:
        vid, label = _valueset(arg, ctx.terminology)

        def check(facts: Facts, item: Any) -> list[Evidence] | None:
            for draft in _other_drafts(facts, item):
                if isinstance(draft, kind) and matches(ctx.terminology, draft, vid):
                    return [Evidence(f"Drafted in the same order: {draft.name}", label)]
            return None

        return Predicate(check, frozenset(), frozenset({vid}))

    return compile_word


def _other_drafts(facts: Facts, item: Any) -> Iterator[MedicationFact | ServiceRequestFact]:
    """The draft orders of the same request other than the item itself (every draft in order-select)."""
    own = getattr(item, "ref", None)
    return (draft for draft in facts.all_drafts if own is None or draft.ref != own)


def _drafted_with(arg: Any, ctx: CompileContext) -> Predicate:
    """Another draft order of the same request meets the condition, judged as if it were the item:
    ``{drafted_with: {procedure_category: [...]}}`` asks whether a surgical order is drafted too."""
    inner = compile_condition(arg, ctx)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        for draft in _other_drafts(facts, item):
            if (found := inner(facts, draft)) is not None:
                return [Evidence(f"Drafted in the same order: {draft.name}")] + [e for e in found if e.text]
        return None

    return Predicate(check, inner.needs, inner.valuesets, inner.wants)


def _route(arg: Any, ctx: CompileContext) -> Predicate:
    routes = _routes(arg, "route")

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
        given = getattr(item, "reason_codings", ()) or getattr(item, "reason_text", "")
        return None if given else [Evidence("No reason given on the order")]

    return Predicate(check, frozenset(), frozenset())


def _latest(facts: Facts, terminology: Terminology, vid: str) -> ObservationFact | None:
    candidates = [o for code, o in facts.latest_observations.items() if terminology.contains(vid, LOINC, code)]
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


OBSERVATION_PICKS = ("latest", "lowest-of-latest-day")


def _observation_compared(word: str, holds: Callable[[float, float], bool], relation: str) -> Callable[..., Predicate]:
    """``observation_at_most`` (value <= limit), ``observation_below`` (value < limit, for bands
    that end just under a limit, "under 15 kg") and ``observation_at_least`` (value >= limit): the
    latest value (``of: latest``), or the lowest of the latest day's values (``of:
    lowest-of-latest-day``: every site of the latest DXA exam, R11), compared with ``value``. With
    ``units``, a latest value in other units never holds, so a band is written with these positive
    words, not with a ``not`` that a weight in pounds would also satisfy."""
    def compiler(arg: Any, ctx: CompileContext) -> Predicate:
        vid, label = _valueset(arg, ctx.terminology)
        limit = float(arg["value"])
        units = frozenset(arg.get("units", []))
        pick = arg.get("of", "latest")
        if pick not in OBSERVATION_PICKS:
            raise ConditionError(f"{word} 'of' must be one of {', '.join(OBSERVATION_PICKS)}, not {pick!r}")

        def check(facts: Facts, item: Any) -> list[Evidence] | None:
            obs = (_latest(facts, ctx.terminology, vid) if pick == "latest"
                   else _lowest_of_latest_day(facts, ctx.terminology, vid))
            if obs is None or obs.value is None or not holds(obs.value, limit):
                return None
            if units and obs.unit not in units:
                return None
            what = "Most recent" if pick == "latest" else "Lowest of the latest exam:"
            return [Evidence(f"{what} {obs.text}: {obs.value:g} on {_date(obs.when)} ({relation} {limit:g})", label)]

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
    vid, label = _valueset(arg, ctx.terminology)
    units = frozenset(arg.get("units", [])) if isinstance(arg, dict) else frozenset()

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        for code, seen in facts.recorded_units.items():
            if ctx.terminology.contains(vid, LOINC, code) and (not units or seen & units):
                latest = facts.latest_observations.get(code)
                name = latest.text if latest else code
                return [Evidence(f"Result on record: {name}" + (f" in {', '.join(sorted(seen & units))}" if units else ""),
                                 label)]
        return None

    return Predicate(check, frozenset({"observations"}), frozenset({vid}))


def _combined(check: Check, parts: list[Predicate]) -> Predicate:
    return Predicate(check, _union(p.needs for p in parts), _union(p.valuesets for p in parts),
                     _union(p.wants for p in parts))


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
    "procedure_category": _procedure_category,
    "route": _route,
    "draft_medication": _drafted_together(MedicationFact, lambda t, d, vid: d.sets.get(vid)),
    "draft_procedure": _drafted_together(ServiceRequestFact, lambda t, d, vid: t.match_codes(d.codings, vid)),
    "drafted_with": _drafted_with,
    "course_days_over": _course_days_over,
    "daily_dose_mg_over": _dose_over("daily_dose_mg", "Maximum daily dose"),
    "single_dose_mg_over": _dose_over("single_dose_mg", "Single dose"),
    "reason": _reason,
    "no_reason": _no_reason,
    "reason_named": _reason_named,
    "observation_high": _observation_high,
    "observation_at_most": _observation_compared("observation_at_most", operator.le, "at or below"),
    "observation_below": _observation_compared("observation_below", operator.lt, "below"),
    "observation_at_least": _observation_compared("observation_at_least", operator.ge, "at or above"),
    "observation_recorded": _observation_recorded,
}

