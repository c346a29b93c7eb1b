"""The suggestion screen: every medication a suggestion would create, checked against the patient
as a pharmacist would verify the order, before the card offers it.

Sans-IO. ``screen`` takes one product, the call's facts and the compiled screen data
(``knowledge/suggestion-screen.yaml``, read by the loader) and answers with the first reason not to
offer it, or None. The checks, in order: allergy or intolerance (same ingredient, or a published
cross-reactivity group), duplicate therapy (same ingredient or same therapeutic class: active,
completed or dispensed recently, or drafted in this request), pregnancy, breastfeeding and liver
failure, kidney function (the latest eGFR within the recency window, against the product's
threshold) and body weight (a child's must be recent). Data the screen needs and cannot read is
a reason too: missing data never reads as normal. Allergies, medications and results are matched
by code (RxNorm product or ingredient), by brand name and by ingredient name, as the rules do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Iterable, Iterator, Mapping, cast

from cds_service.core.facts import RESULT_STATUS, Facts, MedicationFact, ObservationFact
from cds_service.core.terminology import RXNORM, Coding, NameIndex, Product, Terminology, ascii_words
from cds_service.core.units import readable, same_unit

# The prefetch keys the screen reads (discovery asks for them on every hook whose rules create orders).
READS = frozenset({"patient", "conditions", "allergies", "medications", "medicationStatements",
                   "medicationDispenses", "observations"})
KG = "kg"
# Routes that act where applied: the same ingredient by one of these and by another route is not
# duplicate therapy (a cromolyn nasal spray does not do the work of oral cromolyn).
LOCAL_ROUTES = frozenset({"topical", "nasal", "inhaled", "ophthalmic"})


@dataclass(frozen=True)
class DosePart:
    """Doses of a day tied to daily events (FHIR R4 Timing.repeat.when, codes of
    http://hl7.org/fhir/event-timing), each its own dosage instruction of the same sequence."""

    text: str
    per_day: int
    when: tuple[str, ...]
    offset_min: int | None = None  # minutes from the event; before it for the AC* and HS codes


@dataclass(frozen=True)
class Dosage:
    """A label's standard starting dose, written into the created order."""

    text: str
    dose: tuple[float, str]
    route: str  # SNOMED CT route code
    every: tuple[float, str] | None = None  # one dose per this period (UCUM unit of time)
    as_needed: bool = False
    max_per_day: tuple[float, str] | None = None
    parts: tuple[DosePart, ...] = ()  # doses tied to meals and sleep, in place of ``every``
    once: bool = False  # a single dose (Timing.repeat.count 1), e.g. a premedication


@dataclass(frozen=True)
class ProductScreen:
    rxcui: str
    label: str  # the short name a card uses ("Zoledronic acid")
    source: str
    names: NameIndex | None = None  # other names of its ingredient (brands, paracetamol)
    dosage: Dosage | None = None  # None: no standard dose, the card says "set the dose"
    egfr_at_least: float | None = None
    kidney_required: bool = True  # without a recent result, not offered
    avoid_in: tuple[str, ...] = ()  # state ids
    weight_at_least: float | None = None
    weight_below: float | None = None
    floors: tuple[str, ...] = ()  # ids of ScreenData.result_floors: a recent result below one withholds it
    other_dosages: Mapping[str, Dosage] = field(default_factory=dict)  # named by a create action's `dosage`

    def dosage_for(self, name: str | None) -> Dosage | None:
        """The dosage a create action asks for by name (a premedication's single dose), else the
        label's standard starting dose."""
        return self.other_dosages[name] if name else self.dosage


@dataclass(frozen=True)
class ResultKind:
    """One kind of result a floor reads (total or ionized calcium): its value set, the name a card
    uses, and its lower limit in each unit a laboratory reports it in (no conversion is made)."""

    valueset: str
    name: str
    at_least: Mapping[str, float]  # UCUM unit -> lower limit


@dataclass(frozen=True)
class ResultFloor:
    """A lower limit a product's label asks to respect before the first dose (calcium before
    zoledronic acid). The latest result of its kinds within ``within_days`` decides; with none the
    product is offered as before (its button asks to check)."""

    id: str
    kinds: tuple[ResultKind, ...]
    within_days: int


@dataclass(frozen=True)
class PregnancyStatus:
    """Where the screen reads a pregnancy-status observation (LOINC 82810-3): the value set of its
    code, those of its answers that mean pregnant and not pregnant, and how recent it must be."""

    valueset: str
    pregnant: str
    not_pregnant: str
    within_days: int


@dataclass(frozen=True)
class DrugGroup:
    """A cross-reactivity group (allergies) or a therapeutic class (duplicates): its value sets,
    the names that mean it in text (brands the product table lacks, class words), and for a class
    how long a completed prescription or dispense still counts as current therapy."""

    id: str
    label: str
    valuesets: frozenset[str]
    names: NameIndex
    allergy_valuesets: frozenset[str] = frozenset()
    recent_days: int | None = None

    def holds(self, sets: Iterable[str], text: str) -> bool:
        return not self.valuesets.isdisjoint(sets) or bool(self.names.find(text))


@dataclass(frozen=True)
class ScreenData:
    products: Mapping[str, ProductScreen]
    allergy_groups: tuple[DrugGroup, ...]
    duplicate_classes: tuple[DrugGroup, ...]
    states: Mapping[str, tuple[str, str]]  # state id -> (value set, label)
    kidney_results: str  # value set of eGFR results
    body_weight: str  # value set of body weight
    kidney_days: int
    child_weight_days: int
    recent_therapy_days: int
    child_under_years: int
    ingredient_names: NameIndex  # every ingredient name of the product table
    ingredient_by_name: Mapping[str, str]  # lower-case name -> RxNorm ingredient
    pregnancy_tests: str = ""  # value set of qualitative pregnancy tests
    pregnancy_test_days: int = 280
    positive: frozenset[str] = frozenset()  # interpretation or value codes that mean positive
    result_floors: Mapping[str, ResultFloor] = field(default_factory=dict)
    pregnancy_status: PregnancyStatus | None = None
    # What the screen derives from a product and the knowledge alone (its value sets, groups and
    # classes), worked out once per release and product, not on every call (``_derived``).
    derived: dict[str, _Derived] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class _Derived:
    terminology: Terminology  # the knowledge it was derived with (a new release derives again)
    own: frozenset[str]  # the product's ingredients
    allergy_groups: tuple[DrugGroup, ...]  # the cross-reactivity groups it is in
    duplicate_classes: tuple[DrugGroup, ...]  # the therapeutic classes it is in


def _derived(product: Product, terminology: Terminology, data: ScreenData) -> _Derived:
    """The product's ingredients, groups and classes: the same for every call of a release."""
    found = data.derived.get(product.rxcui)
    if found is None or found.terminology is not terminology:
        sets = _product_sets(product, terminology)
        found = _Derived(terminology, frozenset(i.rxcui for i in product.ingredients),
                         tuple(g for g in data.allergy_groups if g.holds(sets, product.name)),
                         tuple(c for c in data.duplicate_classes if c.holds(sets, product.name)))
        data.derived[product.rxcui] = found
    return found


def screen(rxcui: str, facts: Facts, terminology: Terminology, data: ScreenData,
           replaced: frozenset[str] = frozenset()) -> str | None:
    """Why the product must not be offered to this patient ("Rocuronium not offered: allergy to
    rocuronium recorded"), or None. ``replaced``: the draft orders the same suggestion deletes
    (a swap does not duplicate the order it removes)."""
    product, entry = terminology.products[rxcui], data.products[rxcui]
    for check in (_allergy, _duplicate, _state, _kidney, _floor, _weight):
        reason = check(product, entry, facts, terminology, data, replaced)
        if reason:
            return f"{entry.label} not offered: {reason}"
    return None


def ingredients(codings: Iterable[Coding], text: str, terminology: Terminology, data: ScreenData) -> frozenset[str]:
    """RxNorm ingredients of a medication or an allergen: its codes (a product expanded), the
    brands and the ingredient names in its text and displays."""
    codings = tuple(codings)
    found = {i for system, code, _ in codings if system == RXNORM for i in terminology.expand_rxnorm(code)}
    words = " ".join([text, *(display for _, _, display in codings)])
    found |= {brand.ingredient_rxcui for brand in terminology.brands.find(words)}
    found |= {data.ingredient_by_name[name.lower()] for name in data.ingredient_names.find(words)}
    return frozenset(found)


def _product_sets(product: Product, terminology: Terminology) -> frozenset[str]:
    return frozenset(terminology.medication_sets(((RXNORM, product.rxcui, product.name),), product.name))


def _unreadable(facts: Facts, key: str, what: str) -> str | None:
    return None if key in facts.available else f"the {what} could not be read; check it first"


def _read(facts: Facts, codings: tuple[Coding, ...], text: str, terminology: Terminology,
          data: ScreenData) -> tuple[frozenset[str], str]:
    """A medication's or allergen's ingredients and words, read once per call (``Facts.memo``):
    every product a call screens asks them of the same record."""
    # By the codings' identity (the call's facts hold them, and so does the entry): hashing the
    # tuple of codings on every look-up would cost about what it saves.
    key = ("screen.ingredients", id(codings), text)
    found = facts.memo.get(key)
    if found is None or found[0] is not codings:
        found = facts.memo[key] = (codings, ingredients(codings, text, terminology, data),
                                   " ".join([text, *(display for _, _, display in codings)]))
    return found[1], found[2]


def _names_in(facts: Facts, names: NameIndex, words: str) -> bool:
    """``names.find(words)``, once per call for each index and text (the text's words read once)."""
    key = ("screen.names", id(names), words)
    found = facts.memo.get(key)
    if found is None:
        held = facts.memo.get(("screen.words", words), False)
        if held is False:
            held = facts.memo[("screen.words", words)] = ascii_words(words)
        found = facts.memo[key] = bool(names.find_in(words, held))
    return found


def _holds(group: DrugGroup, sets: Mapping[str, object], words: str, facts: Facts) -> bool:
    """``DrugGroup.holds``, its name search remembered for the call."""
    return not group.valuesets.isdisjoint(sets) or _names_in(facts, group.names, words)


def _same_drug(entry: ProductScreen, own: frozenset[str], codings: tuple[Coding, ...], text: str,
               terminology: Terminology, data: ScreenData, facts: Facts) -> bool:
    """Whether a medication or allergen is the product's ingredient: by code, brand or name."""
    found, words = _read(facts, codings, text, terminology, data)
    if own & found:
        return True
    return entry.names is not None and _names_in(facts, entry.names, words)


def _allergy(product: Product, entry: ProductScreen, facts: Facts, terminology: Terminology, data: ScreenData,
             replaced: frozenset[str]) -> str | None:
    if reason := _unreadable(facts, "allergies", "allergy list"):
        return reason
    derived = _derived(product, terminology, data)
    own, groups = derived.own, derived.allergy_groups
    for allergy in facts.allergy_records:
        if _same_drug(entry, own, allergy.codings, allergy.text, terminology, data, facts):
            return f"allergy to {allergy.name} recorded"
        if not groups:
            continue
        key = ("screen.sets", allergy.codings, allergy.text)
        sets = facts.memo.get(key)
        if sets is None:
            sets = facts.memo[key] = terminology.medication_sets(allergy.codings, allergy.text)
        for group in groups:
            if _holds(group, sets, allergy.words, facts) or not group.allergy_valuesets.isdisjoint(sets):
                return f"allergy to {allergy.name} recorded ({group.label} cross-react)"
    return None


def _duplicate(product: Product, entry: ProductScreen, facts: Facts, terminology: Terminology, data: ScreenData,
               replaced: frozenset[str]) -> str | None:
    if reason := _unreadable(facts, "medications", "medication list"):
        return reason
    derived = _derived(product, terminology, data)
    own, classes = derived.own, derived.duplicate_classes
    longest = max([data.recent_therapy_days, *(c.recent_days or 0 for c in classes)])
    for med, how, age in _current_therapy(facts, replaced, longest):
        if not _same_route_family(med.route, product.route):
            continue
        if age <= data.recent_therapy_days and _same_drug(entry, own, med.codings, med.text, terminology, data, facts):
            return f"{med.name} {how}"
        words = _read(facts, med.codings, med.text, terminology, data)[1] if classes else ""
        for cls in classes:
            if age <= (cls.recent_days or data.recent_therapy_days) and _holds(cls, med.sets, words, facts):
                return f"{med.name} {how} (same class: {cls.label})"
    return None


def _same_route_family(route: str | None, other: str) -> bool:
    """Whether two routes can duplicate each other's therapy: the same route, or both systemic; an
    unknown route counts as possibly the same (never read as "different")."""
    if route in (None, "unknown") or route == other:
        return True
    return route not in LOCAL_ROUTES and other not in LOCAL_ROUTES


def _current_therapy(facts: Facts, replaced: frozenset[str], days: int) -> Iterator[tuple[MedicationFact, str, int]]:
    """Each medication the patient is on or about to be, with how (for the card) and its age in
    days (0 for an active or drafted order): active orders, the other drafts of this request, and
    prescriptions completed, dispenses and statements within ``days``."""
    for med in facts.active_medications:
        yield med, "is already active", 0
    for draft in facts.all_drafts:
        if isinstance(draft, MedicationFact) and draft.ref not in replaced:
            yield draft, "is already drafted in this request", 0
    for recent in facts.recent_medications:
        age = 0 if recent.when is None else (facts.today - recent.when).days
        if age <= days:
            when = "currently" if recent.when is None else f"on {recent.when.isoformat()}"
            yield recent.medication, f"already recorded ({recent.source} {when})", age


def _state(product: Product, entry: ProductScreen, facts: Facts, terminology: Terminology, data: ScreenData,
           replaced: frozenset[str]) -> str | None:
    if not entry.avoid_in:
        return None
    if reason := _unreadable(facts, "conditions", "problem list"):
        return reason
    for state in entry.avoid_in:
        valueset, label = data.states[state]
        if any(terminology.match_codes(c.codings, valueset) for c in facts.conditions):
            return f"{label} recorded"
        if state == "pregnancy" and (test := _positive_pregnancy_test(facts, terminology, data)):
            return f"positive pregnancy test on {_day(test.when)}"
        if state == "pregnancy" and (status := _pregnant_status(facts, terminology, data)):
            return f"pregnancy status 'pregnant' recorded on {_day(status.when)}"
    return None


def _positive_pregnancy_test(facts: Facts, terminology: Terminology, data: ScreenData) -> ObservationFact | None:
    """The latest pregnancy test of the window, when it is positive (the lab's interpretation or
    the coded result): a pregnancy not yet on the problem list."""
    if not data.pregnancy_tests or "observations" not in facts.available:
        return None
    test = latest_result(facts, terminology, data.pregnancy_tests, data.pregnancy_test_days)
    if test is None or data.positive.isdisjoint((*test.interpretation, *test.coded_value)):
        return None
    return test


def _pregnant_status(facts: Facts, terminology: Terminology, data: ScreenData) -> ObservationFact | None:
    """The pregnancy status that says the patient is pregnant now, or None. Of the status
    observations of the window that answer pregnant or not pregnant, the latest day decides
    ('pregnant' wins a tie: the same day's 'not pregnant' does not clear it); an answer that is
    neither (unknown, possible pregnancy), no answer at all or no date settles nothing, so an
    earlier 'pregnant' stands behind it. A 'not pregnant' clears only the statuses before it: the
    caller has already read the problem list and the pregnancy tests, which it never clears."""
    status = data.pregnancy_status
    if status is None or "observations" not in facts.available:
        return None
    since = facts.today - timedelta(days=status.within_days)
    answered: list[tuple[date, bool, ObservationFact]] = []
    for obs in facts.observations_of(terminology.valuesets[status.valueset].exact_codes):
        if obs.when is None or obs.when < since or not obs.value_codings:
            continue
        if terminology.match_codes(obs.value_codings, status.pregnant):
            answered.append((obs.when, True, obs))
        elif terminology.match_codes(obs.value_codings, status.not_pregnant) and _settled(obs, facts):
            answered.append((obs.when, False, obs))
    if not answered:
        return None
    latest = max(when for when, _, _ in answered)
    return next((obs for when, pregnant, obs in answered if when == latest and pregnant), None)


def _settled(obs: ObservationFact, facts: Facts) -> bool:
    """Whether a 'not pregnant' status may clear an earlier 'pregnant' one: a result (final,
    amended, corrected; not preliminary, registered or unknown) dated no later than the call's
    now (its day, and its time when the record gives one with a zone)."""
    if obs.status not in RESULT_STATUS or obs.when is None or obs.when > facts.today:
        return False
    return obs.at is None or facts.now.tzinfo is None or obs.at <= facts.now


def _kidney(product: Product, entry: ProductScreen, facts: Facts, terminology: Terminology, data: ScreenData,
            replaced: frozenset[str]) -> str | None:
    if entry.egfr_at_least is None:
        return None
    needed = f"no eGFR in the last {data.kidney_days} days; check kidney function first"
    if "observations" not in facts.available:
        return needed if entry.kidney_required else None
    result = latest_result(facts, terminology, data.kidney_results, data.kidney_days)
    if result is None or result.value is None:
        return needed if entry.kidney_required else None
    shown = f"eGFR {result.comparator}{result.value:g} on {_day(result.when)}"
    where = _against_limit(result, entry.egfr_at_least)
    if where == "below":
        return f"{shown}, below {entry.egfr_at_least:g}"
    if where == "unsettled":
        return f"{shown} does not say whether it is below {entry.egfr_at_least:g}; check kidney function first"
    return None


def _against_limit(result: ObservationFact, lowest: float) -> str | None:
    """Where a result with a number stands against a lower limit, its comparator read: "below",
    "unsettled" (a bound that does not say: "<60" against 35, ">8.9" against 9), or None (at or
    above it: "9.1", ">60" against 35)."""
    value, comparator = cast(float, result.value), result.comparator
    if comparator in (">", ">="):
        return None if value >= lowest else "unsettled"
    if comparator == "<":
        return "below" if value <= lowest else "unsettled"
    if comparator == "<=":
        return "below" if value < lowest else "unsettled"
    return "below" if value < lowest else None


def _floor(product: Product, entry: ProductScreen, facts: Facts, terminology: Terminology, data: ScreenData,
           replaced: frozenset[str]) -> str | None:
    """Every result of a floor's kinds on the latest day one was taken within its window: one below
    its limit withholds the product ("correct it first"), and so does one that cannot be read
    against the limit (no number, a unit the floor has no limit for, a bound such as "<9.0" that
    does not settle it: "check it first"). No recent result: offered as before (the suggestion
    asks to check)."""
    if not entry.floors:
        return None
    if reason := _unreadable(facts, "observations", "results list"):
        return reason
    for floor in (data.result_floors[fid] for fid in entry.floors):
        since = facts.today - timedelta(days=floor.within_days)
        found = [(kind, obs) for kind in floor.kinds
                 for code in terminology.valuesets[kind.valueset].exact_codes
                 for obs in facts.latest_day_observations.get(code, ()) if obs.when and obs.when >= since]
        newest = max((obs.when for _, obs in found if obs.when), default=None)
        reasons = [_against_floor(kind, obs) for kind, obs in found if obs.when == newest]
        below = [r for r in reasons if r and r.endswith("correct it first")]
        if below or any(reasons):
            return (below or [r for r in reasons if r])[0]
    return None


def _against_floor(kind: ResultKind, result: ObservationFact) -> str | None:
    """Why ``result`` withholds the product, or None when it is at or above the kind's limit."""
    day = _day(result.when)
    if result.value is None:
        return f"{kind.name} on {day} has no value that can be read; check it first"
    limit = next(((unit, value) for unit, value in kind.at_least.items() if same_unit(result.units, (unit,))), None)
    if limit is None:
        return f"{kind.name} on {day} in {' or '.join(result.units) or 'no unit'}, which cannot be compared; check it first"
    unit, lowest = limit
    shown = f"{kind.name} {result.comparator}{result.value:g} {readable(unit)} on {day}"
    where = _against_limit(result, lowest)
    if where == "below":
        return f"{shown}, below {lowest:g} {readable(unit)}; correct it first"
    if where == "unsettled":
        return f"{shown} does not say whether it is below {lowest:g} {readable(unit)}; check it first"
    return None


def _weight(product: Product, entry: ProductScreen, facts: Facts, terminology: Terminology, data: ScreenData,
            replaced: frozenset[str]) -> str | None:
    if entry.weight_at_least is None and entry.weight_below is None:
        return None
    child = facts.age_years is None or facts.age_years < data.child_under_years
    weight = None
    if "observations" in facts.available:
        weight = latest_result(facts, terminology, data.body_weight, data.child_weight_days, unit=KG)
    if weight is None or weight.value is None:
        return f"no weight in kg in the last {data.child_weight_days} days; weigh the patient first" if child else None
    low, high = entry.weight_at_least, entry.weight_below
    if (low is not None and weight.value < low) or (high is not None and weight.value >= high):
        return f"weight {weight.value:g} kg on {_day(weight.when)} is outside its band"
    return None


def latest_result(facts: Facts, terminology: Terminology, valueset: str, days: int,
                  unit: str | None = None) -> ObservationFact | None:
    """The most recent result of the value set's LOINC codes taken within ``days`` (and in
    ``unit``, when given), or None: an older result counts as none."""
    codes = terminology.valuesets[valueset].exact_codes
    found = [obs for code, obs in facts.latest_observations.items() if code in codes and obs.when is not None]
    if not found:
        return None
    latest = max(found, key=lambda obs: obs.when or date.min)
    if unit is not None and not same_unit(latest.units, (unit,)):  # the UCUM code, or the unit as labs write it
        return None  # the latest in other units: an older result in this unit may be out of date
    return latest if latest.when and latest.when >= facts.today - timedelta(days=days) else None


def _day(when: date | None) -> str:
    return when.isoformat() if when else "an unknown date"

