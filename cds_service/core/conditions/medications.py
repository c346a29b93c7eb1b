"""Words about medication orders: value-set membership, routes, dose and course limits, orders drafted together."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, Iterator

from cds_service.core.conditions import registry
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
from cds_service.core.dosing import ROUTES, route_of_word
from cds_service.core.facts import (
    Facts,
    MedicationFact,
    ServiceRequestFact,
)
from cds_service.core.terminology import (
    Match,
)
from cds_service.errors import did_you_mean

RECENT_MEDICATION_KEYS = frozenset({"medicationStatements", "medicationDispenses"})


def _active_medication(arg: Any, ctx: CompileContext) -> Predicate:
    """An active or on-hold order in the set; ``routes`` narrows it, ``for_days_at_least`` asks that
    it started that long ago (R14), ``recent_days`` also accepts the past prescriptions,
    dispenses and statements of that many days (R8)."""
    vid, label = valueset_arg(arg, ctx.terminology)
    options = arg if isinstance(arg, dict) else {}
    routes = _routes(options.get("routes", []), "routes")
    at_least = options.get("for_days_at_least")
    recent = options.get("recent_days")
    wants = RECENT_MEDICATION_KEYS if recent is not None else frozenset()

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        key = ("active_medication", vid, routes, at_least, recent)
        found = remember(facts, key, lambda: _active_in(facts, vid, routes, at_least, recent))
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
            since = date_text(med.start)
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
            when = "current" if past.when is None else date_text(past.when)
            text = f"Recent {past.source}: {past.medication.name} ({describe(match)}), {when}"
            return text, match.by_name
    return None


def _medication(arg: Any, ctx: CompileContext) -> Predicate:
    vid, label = valueset_arg(arg, ctx.terminology)

    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, MedicationFact):
            return None
        match = item.sets.get(vid)
        if match is None:
            return None
        return [Evidence(f"{order_word(item)}: {item.name} ({describe(match)})", label, match.by_name)]

    return Predicate(check, frozenset(), frozenset({vid}))


def order_word(item: MedicationFact) -> str:
    return "Draft order" if item.kind == "draft" else "Active order"


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
        vid, label = valueset_arg(arg, ctx.terminology)

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
    inner = registry.compile_condition(arg, ctx)

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
        return [Evidence(f"Taken since {date_text(item.start)} ({(facts.today - item.start).days} days, limit {limit:g})")]

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


def _dose_unread(arg: Any, ctx: CompileContext) -> Predicate:
    """The order gives a dose the service cannot read as an amount (a unit it does not know, or a
    sig in words without a dose): the rules that compare doses cannot clear it, so one says so."""
    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, MedicationFact) or not item.dose_unread:
            return None
        return [Evidence("Dose written in a unit or words the service does not read")]

    return Predicate(check, frozenset(), frozenset())


def _drug_unidentified(arg: Any, ctx: CompileContext) -> Predicate:
    """The order names its drug through a medicationReference to a Medication found nowhere (not
    contained, not in the request or the prefetch, not readable on the FHIR server). No rule can
    clear such an order. An order with no drug at all is not flagged: the CDS Hooks sandbox sends
    one while the clinician is still choosing the drug."""
    def check(facts: Facts, item: Any) -> list[Evidence] | None:
        if not isinstance(item, MedicationFact) or not item.unresolved_reference:
            return None
        return [Evidence("The order names its drug through a Medication resource that could not be read")]

    return Predicate(check, frozenset(), frozenset())


WORDS: dict[str, Callable[[Any, CompileContext], Predicate]] = {
    "dose_unread": _dose_unread,
    "drug_unidentified": _drug_unidentified,
    "active_medication": _active_medication,
    "medication": _medication,
    "route": _route,
    "draft_medication": _drafted_together(MedicationFact, lambda t, d, vid: d.sets.get(vid)),
    "draft_procedure": _drafted_together(ServiceRequestFact, lambda t, d, vid: t.match_codes(d.codings, vid)),
    "drafted_with": _drafted_with,
    "course_days_over": _course_days_over,
    "daily_dose_mg_over": _dose_over("daily_dose_mg", "Maximum daily dose"),
    "single_dose_mg_over": _dose_over("single_dose_mg", "Single dose"),
}
