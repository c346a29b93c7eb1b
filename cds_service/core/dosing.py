"""Dose, frequency, duration and route of a medication order, read from its dosage.

Sans-IO. Daily dose is dose x frequency / period, summed over dosage
instructions given together (same ``sequence``), taking the upper bound of any
range (doseRange.high, frequencyMax) and ``maxDosePerPeriod`` when it is
higher. A dose in units of the product ("{pill}", tablet, mL) becomes mg
through the product's strength from the curated product table. Planned
duration: expectedSupplyDuration x (1 + refills), else boundsDuration /
boundsPeriod, else quantity / daily units. Anything unreadable is None.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.core.fhir import codings, number, obj, objects, parse_date, string
from cds_service.core.terminology import Product

DAYS_PER_UNIT = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
UNIT_WORDS = {"second": "s", "seconds": "s", "minute": "min", "minutes": "min", "hour": "h", "hours": "h",
              "day": "d", "days": "d", "week": "wk", "weeks": "wk", "month": "mo", "months": "mo",
              "year": "a", "years": "a"}
TIMES_PER_DAY = {"QD": 1, "QOD": 0.5, "BID": 2, "TID": 3, "QID": 4, "Q4H": 6, "Q6H": 4, "Q8H": 3, "AM": 1, "PM": 1}
MG_FACTOR = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001}
# The one route vocabulary: the product table's routes, the words of the `route` and
# `active_medication.routes` conditions (knowledge.py puts it into both JSON Schemas at load).
ROUTES = ("oral", "parenteral", "neuraxial", "intraarticular", "topical", "nasal", "inhaled", "ophthalmic", "rectal",
          "transdermal")
PRODUCT_ROUTES = ROUTES + ("other",)  # "other": a product whose route none of ROUTES names
ROUTE_WORDS = (  # the most specific first: "epidural injection" is neuraxial, not parenteral
    ("epidural", "neuraxial"), ("intrathecal", "neuraxial"),
    # a steroid injected into a joint acts there, not systemically (an injectable product's table
    # route is parenteral, so the order's own route word decides)
    ("intra-articular", "intraarticular"), ("intraarticular", "intraarticular"), ("intra articular", "intraarticular"),
    ("oral", "oral"), ("tablet", "oral"), ("capsule", "oral"), ("inject", "parenteral"),
    ("intravenous", "parenteral"), ("intramuscular", "parenteral"), ("auto-injector", "parenteral"),
    ("topical", "topical"), ("cream", "topical"), ("ointment", "topical"), ("nasal", "nasal"),
    ("inhal", "inhaled"), ("ophthalmic", "ophthalmic"), ("rectal", "rectal"), ("transdermal", "transdermal"),
)
# Forms named by short words that also occur inside other words ("Liqui-Gels" and "gelatin capsule"
# are oral): matched as whole words, after ROUTE_WORDS.
_FORM_WORDS = re.compile(r"\b(gel|patch)\b")
_FORM_ROUTES = {"gel": "topical", "patch": "transdermal"}
# SNOMED CT route codes of the FHIR R4 route value set (http://hl7.org/fhir/ValueSet/route-codes).
SNOMED_ROUTES = {"26643006": "oral", "47625008": "parenteral", "78421000": "parenteral",
                 "34206005": "parenteral", "6064005": "topical", "46713006": "nasal", "18679011000001101": "inhaled",
                 "404820008": "neuraxial", "72607000": "neuraxial", "37161004": "rectal", "45890007": "transdermal",
                 "54485002": "ophthalmic"}


@dataclass(frozen=True)
class Dose:
    start: date | None = None
    planned_days: float | None = None
    single_dose_mg: float | None = None
    daily_dose_mg: float | None = None


def read(order: dict[str, Any], product: Product | None) -> Dose:
    instructions = objects(order.get("dosageInstruction"))
    singles = [d for d in (_single_dose_mg(i, product) for i in instructions) if d is not None]
    daily = _daily_dose_mg(instructions, product)
    return Dose(
        start=_start(order, instructions),
        planned_days=_planned_days(order, instructions),
        single_dose_mg=max(singles) if singles else None,
        daily_dose_mg=daily,
    )


def route(order: dict[str, Any], product: Product | None, text: str) -> str | None:
    """oral / parenteral / neuraxial / ...: the order's own dosage route first (an injectable
    steroid given epidurally is not systemic), then the product table, else words in the name."""
    for instruction in objects(order.get("dosageInstruction")):
        concept = obj(instruction, "route")
        for _, code, display in codings(concept):
            if code in SNOMED_ROUTES:
                return SNOMED_ROUTES[code]
            if (found := _route_from_words(display)) is not None:
                return found
        if (found := _route_from_words(string(concept.get("text")))) is not None:
            return found
    if product is not None and product.route != "other":
        return product.route
    return _route_from_words(text)


def route_of_word(text: str) -> str | None:
    """The route a word of an order implies ("intravenous" -> parenteral), or None."""
    return _route_from_words(text)


def _route_from_words(text: str) -> str | None:
    lowered = text.lower()
    found = next((value for word, value in ROUTE_WORDS if word in lowered), None)
    if found is None and (form := _FORM_WORDS.search(lowered)):
        return _FORM_ROUTES[form.group(1)]
    return found


def _days(value: Any, unit: Any) -> float | None:
    amount = number(value)
    unit = UNIT_WORDS.get(unit, unit) if isinstance(unit, str) else None
    if amount is None or unit not in DAYS_PER_UNIT:
        return None
    return amount * DAYS_PER_UNIT[unit]


def _duration(quantity: Any) -> float | None:
    if not isinstance(quantity, dict):
        return None
    return _days(quantity.get("value"), quantity.get("code") or quantity.get("unit"))


def _repeat(instruction: dict[str, Any]) -> dict[str, Any]:
    timing = obj(instruction, "timing")
    return obj(timing, "repeat")


def _per_day(instruction: dict[str, Any]) -> float | None:
    """Administrations per day, upper bound."""
    repeat = _repeat(instruction)
    frequency = number(repeat.get("frequencyMax")) or number(repeat.get("frequency"))
    period = _days(repeat.get("period"), repeat.get("periodUnit"))
    if frequency and period:
        return frequency / period
    timing = obj(instruction, "timing")
    for _, code, _ in codings(timing.get("code")):
        if code.upper() in TIMES_PER_DAY:
            return TIMES_PER_DAY[code.upper()]
    return None


def _dose_quantity(instruction: dict[str, Any]) -> dict[str, Any] | None:
    """The dose of one instruction: R4 doseAndRate (dose or range high), or DSTU2 dose[x]."""
    holders = objects(instruction.get("doseAndRate")) or [instruction]
    for holder in holders:
        if isinstance(holder.get("doseQuantity"), dict):
            return holder["doseQuantity"]
        if isinstance(holder.get("doseRange"), dict) and isinstance(holder["doseRange"].get("high"), dict):
            return holder["doseRange"]["high"]
    return None


def _to_mg(quantity: dict[str, Any] | None, product: Product | None) -> float | None:
    if not isinstance(quantity, dict) or (value := number(quantity.get("value"))) is None:
        return None
    unit = str(quantity.get("code") or quantity.get("unit") or "").lower()
    if unit in MG_FACTOR:
        return value * MG_FACTOR[unit]
    strength = _single_strength(product)
    if strength is None:
        return None
    per_unit, strength_unit = strength
    if strength_unit == "mg/ml" and unit == "ml":
        return value * per_unit
    if strength_unit == "mg" and unit not in ("ml", "l"):
        return value * per_unit  # {pill}, tablet, capsule, 1: one unit of the product
    return None


def _single_strength(product: Product | None) -> tuple[float, str] | None:
    if product is None or len(product.ingredients) != 1:
        return None
    ingredient = product.ingredients[0]
    if ingredient.strength_value is None or not ingredient.strength_unit:
        return None
    return float(ingredient.strength_value), ingredient.strength_unit.lower()


def _single_dose_mg(instruction: dict[str, Any], product: Product | None) -> float | None:
    return _to_mg(_dose_quantity(instruction), product)


def _daily_dose_mg(instructions: list[dict[str, Any]], product: Product | None) -> float | None:
    by_sequence: dict[Any, float] = {}
    for instruction in instructions:
        dose, per_day = _single_dose_mg(instruction, product), _per_day(instruction)
        daily = dose * per_day if dose is not None and per_day is not None else None
        daily = max(filter(None, [daily, _max_per_day_mg(instruction, product)]), default=None)
        if daily is not None:
            key = instruction.get("sequence", 0)
            key = key if isinstance(key, (int, float, str)) else 0  # a list or object cannot be a dict key
            by_sequence[key] = by_sequence.get(key, 0.0) + daily
    return max(by_sequence.values()) if by_sequence else None


def _max_per_day_mg(instruction: dict[str, Any], product: Product | None) -> float | None:
    for ratio in objects(instruction.get("maxDosePerPeriod")):
        amount = _to_mg(ratio.get("numerator"), product)
        days = _duration(ratio.get("denominator"))
        if amount is not None and days:
            return amount / days
    return None


def _units_per_day(instructions: list[dict[str, Any]]) -> float | None:
    total = 0.0
    for instruction in instructions:
        quantity = _dose_quantity(instruction)
        amount = number(quantity.get("value")) if quantity else None
        per_day = _per_day(instruction)
        if amount is None or per_day is None:
            return None
        total += amount * per_day
    return total or None


def _planned_days(order: dict[str, Any], instructions: list[dict[str, Any]]) -> float | None:
    dispense = obj(order, "dispenseRequest")
    refills = number(dispense.get("numberOfRepeatsAllowed")) or 0
    supply = _duration(dispense.get("expectedSupplyDuration"))
    if supply:
        return supply * (1 + refills)
    for instruction in instructions:
        repeat = _repeat(instruction)
        if (bounded := _duration(repeat.get("boundsDuration"))) is not None:
            return bounded
        period = obj(repeat, "boundsPeriod")
        start, end = parse_date(period.get("start")), parse_date(period.get("end"))
        if start and end:
            return float((end - start).days)
    quantity = number(obj(dispense, "quantity").get("value"))
    per_day = _units_per_day(instructions) if instructions else None
    if quantity and per_day:
        return quantity * (1 + refills) / per_day
    return None


def _start(order: dict[str, Any], instructions: list[dict[str, Any]]) -> date | None:
    dispense = obj(order, "dispenseRequest")
    validity = obj(dispense, "validityPeriod")
    if (start := parse_date(validity.get("start"))) is not None:
        return start
    for instruction in instructions:
        period = _repeat(instruction).get("boundsPeriod")
        if isinstance(period, dict) and (start := parse_date(period.get("start"))) is not None:
            return start
    return None


