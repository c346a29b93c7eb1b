"""Dose, frequency, duration and route of a medication order, read from its dosage.

Sans-IO. Daily dose is dose x frequency / period, summed over dosage
instructions given together (same ``sequence``), taking the upper bound of any
range (doseRange.high, frequencyMax) and ``maxDosePerPeriod`` when it is
higher. A dose in units of the product ("{pill}", tablet, mL) becomes mg
through the product's strength from the curated product table. Planned
duration: expectedSupplyDuration x (1 + refills), else boundsDuration /
boundsPeriod, else quantity / daily units, the daily units at the low end of any
range (doseRange.low, frequency; "every 4-6 hours" is 4 a day): how long the
supply can last, which the course rules ask. Anything unreadable is None.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from cds_service.core.dialect import PRODUCT_UNIT, Dialect
from cds_service.core.fhir import codings, number, obj, objects, parse_date, string
from cds_service.core.terminology import Product

_PLAIN = Dialect()

DAYS_PER_UNIT = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
UNIT_WORDS = {"second": "s", "seconds": "s", "minute": "min", "minutes": "min", "hour": "h", "hours": "h",
              "day": "d", "days": "d", "week": "wk", "weeks": "wk", "month": "mo", "months": "mo",
              "year": "a", "years": "a"}
TIMES_PER_DAY = {"QD": 1, "QOD": 0.5, "BID": 2, "TID": 3, "QID": 4, "Q4H": 6, "Q6H": 4, "Q8H": 3, "AM": 1, "PM": 1}
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
SNOMED = "http://snomed.info/sct"
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
    dose_unread: bool = False  # a dose is written but cannot be read as an amount


def read(order: dict[str, Any], product: Product | None, dialect: Dialect = _PLAIN) -> Dose:
    """The order's dose; its units read through the dialect (UCUM, SNOMED CT, words), and a dose
    given only in the sig text read from that text."""
    instructions = [{**part, _INSTRUCTION: n} for n, i in enumerate(objects(order.get("dosageInstruction")))
                    for part in _with_sig_dose(i, dialect)]
    units = _Units(product, dialect)
    singles = [d for d in (_single_dose_mg(i, units) for i in instructions) if d is not None]
    daily = _daily_dose_mg(instructions, units)
    return Dose(
        start=_start(order, instructions),
        planned_days=_planned_days(order, instructions, units),
        single_dose_mg=max(singles) if singles else None,
        daily_dose_mg=daily,
        dose_unread=_dose_unread(instructions, units),
    )


@dataclass(frozen=True)
class _Units:
    product: Product | None
    dialect: Dialect


# A sig written only in words: "10 mg PO TID", "take 1 tablet by mouth three times daily".
# A number: a whole or decimal one, a fraction ("1/2", "1 1/2") or a vulgar fraction ("½", "1½"),
# never a fraction read as its denominator ("1/2 tablet" is half a tablet, not two).
_NUMBER = r"(\d+\s*[½¼¾]|[½¼¾]|\d+\s+\d+\s*/\s*[1-9]\d*|\d+\s*/\s*[1-9]\d*|\d+(?:\.\d+)?)"
_VULGAR = {"½": 0.5, "¼": 0.25, "¾": 0.75}
_AMOUNT = _NUMBER + r"\s*(mg|milligrams?|g|grams?|mcg|micrograms?|ml|tablets?|tabs?|capsules?|caps?)(?![A-Za-z])"
_SIG_DOSE = re.compile(rf"(?<![\w.]){_AMOUNT}", re.I)
# The lower end of a range of amounts the dose ends: "1-2 tablets", "1 to 2", "1 or 2".
_RANGE_LOW = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:-|\u2013|to|or)\s*$", re.I)
# What an amount means when a sig gives several. A stated maximum or daily total is a limit, not a
# dose: "max 3200 mg/day", "maximum daily dose of 6 tablets", "not to exceed 40 mg in 24 hours",
# "no more than 4 g a day", "up to 3200 mg per day", "(2400 mg/day)". An amount right after
# another, in brackets or after "=" or "/", is the same dose said again: "1 tablet (800 mg)".
_PER_DAY = r"(?:\s*(?:/\s*|per\s+|a\s+|an\s+|each\s+|in\s+|every\s+)(?:24\s*h(?:ou)?rs?|24\s*h|day|d)\b|\s+daily\b)"
_SIG_LIMITS = (
    re.compile(rf"\b(?:max(?:imum)?|not\s+to\s+exceed|do\s+not\s+exceed|don'?t\s+exceed|not\s+more\s+than|"
               rf"no\s+more\s+than|nte)\b[^\d]{{0,30}}?(?<![\w.]){_AMOUNT}{_PER_DAY}?", re.I),
    re.compile(rf"\bup\s+to\s+{_AMOUNT}{_PER_DAY}", re.I),
    # a total without a limit word: "(2400 mg/day)", "3200 mg in 24 hours"; "every 24 hours" is a
    # dosing interval, once a day as "q24h" is, and never a total
    re.compile(rf"(?<![\w.]){_AMOUNT}\s*(?:/\s*(?:day|d|24\s*h\w*)\b|per\s+day\b|(?:in|per)\s+24\s*h\w*)", re.I),
)
_SAID_AGAIN = re.compile(r"\s*[(\[=/]\s*")
_FAMILIES = {"mg": ("mass", 1.0), "milligram": ("mass", 1.0), "milligrams": ("mass", 1.0), "g": ("mass", 1000.0),
             "gram": ("mass", 1000.0), "grams": ("mass", 1000.0), "mcg": ("mass", 0.001),
             "microgram": ("mass", 0.001), "micrograms": ("mass", 0.001), "ml": ("volume", 1.0)}
_COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_COUNT_WORDS_RE = r"\d|one|two|three|four|five|six"
_COUNT = rf"({_COUNT_WORDS_RE})"
# "N times a day", "four times daily": any count, in digits or words, before the fixed words, so
# that "four times daily" is never read as "daily" (once).
_SIG_N_TIMES = re.compile(rf"\b{_COUNT}\s*(?:x|times)\s*(?:a |per |each )?(?:day|daily)\b", re.I)
_SIG_TIMES = (
    (re.compile(r"\bq\.?i\.?d\b", re.I), 4.0),
    (re.compile(r"\bt\.?i\.?d\b", re.I), 3.0),
    (re.compile(r"\b(?:b\.?i\.?d|twice (?:a |per |each )?(?:day|daily))\b", re.I), 2.0),
    (re.compile(r"\b(?:daily|once (?:a |per |each )?day|q\.?d|every day)\b", re.I), 1.0),
)
# "every 6 hours", "q6h"; a range of intervals ("every 4-6 hours", "q4-6h", "every 4 to 6 hours") at
# its shortest, the most doses a day the prescriber allows, as a pharmacist checks the maximum
_SIG_EVERY = re.compile(r"\b(?:q|every)\s*(\d+)(?:\s*(?:-|\u2013|to)\s*(\d+))?\s*(?:h|hr|hrs|hours?)\b", re.I)
# Meal and sleep times in words, the words of FHIR event timing (ACM, ACD, ACV, HS and their
# PC/C forms, source FHIR-EVENT-TIMING of suggestion-screen.yaml): "meals" (a.c., p.c.) is three
# doses unless a count is written before it, each named meal one, bedtime one.
_SIG_MEALS = re.compile(rf"\b(?:before|with|after|following)\s+(?:(?:all|the|your|main|{_COUNT_WORDS_RE})\s+)*meals\b"
                        r"|(?<![\w.])(?:a\.?c|p\.?c)(?![\w]|\.\w)", re.I)
_SIG_EACH_MEAL = re.compile(r"\b(?:before|with|after|following)\s+(?:each|every)\s+meal\b", re.I)
_SIG_N_MEALS = re.compile(rf"\b{_COUNT}\s+(?:main\s+)?meals\b", re.I)
# A named meal or its part of the day, each one dose however many words name it ("in the morning
# before breakfast" is one): morning (ACM, MORN), midday (ACD, NOON), evening (ACV, EVE); a part of
# the day written alone counts too ("in the morning and evening", "morning and night": two).
_SIG_NAMED_MEALS = (
    ("morning", re.compile(r"\b(?:breakfast|morning meal|(?:in the|every|each) morning|mornings?|q\.?\s?am)\b", re.I)),
    ("midday", re.compile(r"\b(?:lunch|midday meal|noon meal|at noon|at midday)\b", re.I)),
    ("evening", re.compile(r"\b(?:dinner|supper|evening meal|(?:in the|every|each) evening|evenings?|q\.?\s?pm)\b",
                           re.I)),
)
_SIG_BEDTIME = re.compile(r"\b(?:bedtime|before bed|at night|every night|nightly|night|q\.?hs|h\.s\.|hs)(?![\w])", re.I)
_SIG_SNACKS = re.compile(r"\bsnacks?\b", re.I)
# A period longer than a day ("once weekly 30 minutes before breakfast"): meal words then say when
# in the day, not how often, and are not counted.
_SIG_NOT_DAILY = re.compile(r"\b(?:weekly|monthly|(?:once|twice) (?:a|per|each|every) (?:week|month)|"
                            r"every (?:other|\d+)\s*(?:day|days|week|weeks|month|months)|every (?:week|month)|"
                            r"q\.?o\.?d|q\s?wk|q\s?week)\b", re.I)


# The mark _with_sig_dose leaves on an instruction whose sig cannot be read without a guess (times
# that do not settle the count, different amounts it cannot pair with times; private to this
# module, the order's own dict is never changed): its dose is unread.
_SIG_UNREAD = "_sig_unread"
# The daily maxima a sig states ("max 4000 mg per day", "not to exceed 6 tablets in 24 hours"), as
# dose quantities, put on each instruction read from it: they count as maxDosePerPeriod does, for
# all the instructions read from one sig together. And the order's own instruction each instruction
# was read from (the sig of one instruction may give several, one per amount).
_SIG_MAX = "_sig_max_per_day"
_INSTRUCTION = "_instruction"
# A limit that is per day: its words say so ("max 3200 mg/day", "maximum daily dose of 6 tablets",
# "not to exceed 40 mg in 24 hours"); "max 800 mg per dose" is not.
_DAILY_WORDS = re.compile(r"\b(?:daily|day|d|24\s*h\w*)\b", re.I)


def _with_sig_dose(instruction: dict[str, Any], dialect: Dialect) -> list[dict[str, Any]]:
    """The instruction, with the dose and frequency its sig text gives when it has no structured
    ones: a sig-only order is read, never taken for "no dose". A sig that gives each time of day
    its own amount ("200 mg in the morning and 400 mg at bedtime") is read as one instruction per
    amount, once a day each, so the daily dose is their sum. A sig whose times contradict its count
    ("twice daily with meals and at bedtime"), or that gives different amounts it does not pair
    with one time each ("200 mg twice daily, may increase to 400 mg"), is marked unread rather
    than read low. A stated maximum ("max 3200 mg/day") is not a dose."""
    text = string(instruction.get("text")) or string(instruction.get("patientInstruction"))
    if not text or _dose_quantity(instruction) is not None:
        return [instruction]
    masked = _without_limits(text)  # what the sig says of its doses, its stated maxima blanked out
    amounts = _sig_amounts(masked)
    dose = amounts[0] if amounts else _SIG_DOSE.search(text)
    if dose is None:
        return [instruction]
    timed = not _repeat(instruction)
    limits = {_SIG_MAX: maxima} if (maxima := _sig_daily_maxima(text)) else {}
    if timed and len(amounts) > 1 and (parts := _paired_amounts(masked, amounts)) is not None:
        return [{**instruction, "doseAndRate": [{"doseQuantity": _quantity(amount)}],
                 "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}, **limits} for amount in parts]
    different = _different_amounts(amounts)
    if different:  # the largest stands for the single dose: an unread sig never reads low
        dose = max(different, key=lambda amount: _amount_value(amount) * _FAMILIES.get(amount.group(2).lower(),
                                                                                          ("", 1.0))[1])
    filled = {**instruction, "doseAndRate": [_dose_or_range(masked, dose)], **limits}
    if different:
        filled[_SIG_UNREAD] = True
    elif timed:
        per_day, ambiguous = _sig_times_a_day(masked)  # "max 6 tablets daily" is no count
        if ambiguous:
            filled[_SIG_UNREAD] = True
        elif per_day is not None:
            fewest = _fewest_times_a_day(masked, per_day)
            filled["timing"] = {"repeat": {"frequency": fewest, "frequencyMax": per_day, "period": 1, "periodUnit": "d"}
                                if fewest else {"frequency": per_day, "period": 1, "periodUnit": "d"}}
    return [filled]


def _fewest_times_a_day(text: str, most: float) -> float | None:
    """For a range of intervals that gave ``most`` ("every 4-6 hours": 6 a day), the fewest doses a
    day it allows (4), else None."""
    every = _SIG_EVERY.search(text)
    if every is None or every.group(2) is None:
        return None
    hours = sorted(float(n) for n in every.groups())
    if hours[0] <= 0 or abs(24 / hours[0] - most) > 1e-9 or hours[1] == hours[0]:
        return None
    return 24 / hours[1]


def _dose_or_range(masked: str, dose: re.Match[str]) -> dict[str, Any]:
    """The sig's dose, or the range it ends ("1-2 tablets", "1 to 2", "1 or 2"): its upper amount is
    the dose, its lower one how long a supply lasts (``_units_per_day``). ``masked``: the sig
    without its limits (``_without_limits``)."""
    high = _quantity(dose)
    low = _RANGE_LOW.search(masked[: dose.start()])
    if low is None or not 0 < float(low.group(1)) < high["value"]:
        return {"doseQuantity": high}
    return {"doseRange": {"low": {**high, "value": float(low.group(1))}, "high": high}}


def _quantity(amount: re.Match[str]) -> dict[str, Any]:
    return {"value": _amount_value(amount), "unit": amount.group(2).lower()}


def _amount_value(amount: re.Match[str]) -> float:
    """The number of an amount: "2", "0.5", "1/2", "1 1/2", "½", "1½"."""
    text = amount.group(1).replace(" ", "")
    whole = 0.0
    if text[-1] in _VULGAR:
        return (float(text[:-1]) if text[:-1] else 0.0) + _VULGAR[text[-1]]
    if "/" in text:
        numerator, denominator = amount.group(1).split("/")
        parts = numerator.split()
        if len(parts) == 2:  # "1 1/2"
            whole, numerator = float(parts[0]), parts[1]
        return whole + float(numerator) / float(denominator)
    return float(text)


def _sig_daily_maxima(text: str) -> list[dict[str, Any]]:
    """The daily maxima and totals a sig states, as dose quantities: "max 4000 mg per day",
    "maximum daily dose of 6 tablets", "up to 40 mg per day", "(2400 mg/day)"; not a limit of one
    dose ("max 800 mg per dose")."""
    return [_quantity(found) for pattern in _SIG_LIMITS for found in pattern.finditer(text)
            if _DAILY_WORDS.search(found.group(0))]


def _without_limits(text: str) -> str:
    """The sig with its stated maxima and daily totals blanked out (the same length, so that
    positions still hold)."""
    for pattern in _SIG_LIMITS:
        text = pattern.sub(lambda found: " " * len(found.group(0)), text)
    return text


def _sig_amounts(masked: str) -> list[re.Match[str]]:
    """The amounts a sig gives as doses, in order: not a stated maximum or daily total (``masked``
    has them blanked out), not the same dose said again in brackets ("1 tablet (800 mg)")."""
    found: list[re.Match[str]] = []
    last_end = None
    for amount in _SIG_DOSE.finditer(masked):
        said_again = last_end is not None and _SAID_AGAIN.fullmatch(masked[last_end:amount.start()])
        last_end = amount.end()
        if not said_again:
            found.append(amount)
    return found


def _different_amounts(amounts: list[re.Match[str]]) -> list[re.Match[str]]:
    """The amounts of the sig's first kind of unit (mass, volume, tablets) when they are not all the
    same ("200 mg ... 400 mg"), else none. Amounts in different kinds of unit ("800 mg tablet:
    take 1 tablet") cannot be compared and are left as before."""
    def kind(amount: re.Match[str]) -> tuple[str, float]:
        unit = amount.group(2).lower()
        return _FAMILIES.get(unit, ("count", 1.0))
    first = kind(amounts[0])[0] if amounts else ""
    same = [a for a in amounts if kind(a)[0] == first]
    values = {_amount_value(a) * kind(a)[1] for a in same}
    return same if len(values) > 1 else []


def _paired_amounts(masked: str, amounts: list[re.Match[str]]) -> list[re.Match[str]] | None:
    """The amounts, when the sig pairs each with exactly one time of day and no two with the same
    ("800 mg in the morning, 1600 mg at noon and 800 mg at bedtime"): each is taken once a day.
    None when it does not: words before the first amount name a time, a part names none or two,
    a count ("twice daily", "every 6 hours"), "meals" or snacks, or a period longer than a day."""
    if _SIG_NOT_DAILY.search(masked) or _slots(masked[:amounts[0].start()]) or _stated_times_a_day(
            masked[:amounts[0].start()]) is not None:
        return None
    seen: set[str] = set()
    for n, amount in enumerate(amounts):
        part = masked[amount.start():amounts[n + 1].start() if n + 1 < len(amounts) else len(masked)]
        moments, unsure = _moments(part)
        slots = set(moments[0]) if len(moments) == 1 else set()
        if unsure or not slots or slots & seen or _meal_count(part) or _SIG_SNACKS.search(part):
            return None
        if _stated_times_a_day(part) not in (None, 1.0):  # "once daily in the evening" is that one time
            return None
        seen |= slots
    return amounts


def _slots(text: str) -> set[str]:
    """The times of day a part of a sig names: a named meal or part of the day, or bedtime."""
    found = {name for name, pattern in _SIG_NAMED_MEALS if pattern.search(text)}
    return found | ({"bedtime"} if _SIG_BEDTIME.search(text) else set())


# Between two times of day: "or" (or "/") makes them one time, either ("in the morning or at
# bedtime"); "and", "&", "+", a comma or a semicolon two times ("before breakfast and dinner");
# nothing of those, words naming the same moment ("every evening at bedtime", "in the morning
# before breakfast").
_SIG_OR = re.compile(r"\bor\b|/", re.I)
_SIG_AND = re.compile(r"\band\b|\bthen\b|[&+,;]", re.I)
# Parts of the day that name the same moment when written together: the evening and bedtime
# ("every evening at bedtime", "in the evening before bed", "with supper at night").
_SAME_MOMENT = {frozenset({"evening", "bedtime"})}


def _moments(text: str) -> tuple[list[frozenset[str]], bool]:
    """The distinct times of day a sig names, each the set of parts of the day that name it, and
    whether they are ambiguous. Words naming the same moment count once ("every evening at
    bedtime", "nightly at bedtime", "in the morning before breakfast"); times joined by "or" are
    one ("with breakfast or dinner"); two parts of the day written together that cannot be the
    same moment ("every morning at bedtime") are ambiguous, and so is a time said again beside
    another ("in the morning and at bedtime and in the morning before bed")."""
    found = sorted([(m.start(), m.end(), name) for name, pattern in _SIG_NAMED_MEALS for m in pattern.finditer(text)]
                   + [(m.start(), m.end(), "bedtime") for m in _SIG_BEDTIME.finditer(text)])
    groups: list[set[str]] = []
    last_end, last_name = -1, ""
    for start, end, name in found:
        between = text[last_end:start] if groups else ""
        joined, either = bool(_SIG_AND.search(between)), bool(_SIG_OR.search(between))
        if not groups or (joined and not either):
            groups.append({name})
        elif joined:
            return [], True  # "in the morning and/or at bedtime": one time or two?
        elif either or name == last_name or frozenset({name, last_name}) in _SAME_MOMENT:
            groups[-1].add(name)  # either time, or words naming the same moment: one time
        else:
            return [], True  # "every morning at bedtime": two moments written as one
        last_end, last_name = max(last_end, end), name
    moments: list[frozenset[str]] = []
    for group in groups:
        moment = frozenset(group)
        if any(moment == seen for seen in moments):
            continue  # the same time named twice ("in the morning ... every morning") counts once, as before
        if any(moment & seen for seen in moments):
            return [], True
        moments.append(moment)
    return moments, False


def _sig_times_a_day(text: str) -> tuple[float | None, bool]:
    """How many doses a day a sig's words give ("four times daily", "5x a day", "TID", "every 6
    hours", "30 minutes before meals and at bedtime"), or None; and whether they are ambiguous:
    meal or bedtime times that do not add up to the count stated, "meals" beside named meals, or
    snacks (no sig says how many) counted as times. Ambiguous is unread, never read low."""
    stated = _stated_times_a_day(text)
    if _SIG_NOT_DAILY.search(text):
        return stated, False
    meals = _meal_count(text)
    moments, unsure = _moments(text)
    timed = unsure or bool(moments)
    snacks = bool(_SIG_SNACKS.search(text))
    if not (meals or timed or snacks):
        return stated, False
    if stated is not None and not timed:
        return stated, False  # "1 tablet twice daily with meals": the count wins; meals say with food
    if unsure or snacks or (meals and any(moment - {"bedtime"} for moment in moments)):
        return None, True
    if meals and _SIG_OR.search(text):
        return None, True  # "with meals or at bedtime": three, four or one?
    times = float((meals or 0) + len(moments))
    if stated is not None and stated != times:
        return None, True  # "three times daily with meals and at bedtime": three or four?
    return times, False


def _stated_times_a_day(text: str) -> float | None:
    """The count a sig states: every N hours, N times a day, QID/TID/BID, daily."""
    if (every := _SIG_EVERY.search(text)) and (hours := min(float(n) for n in every.groups() if n)) > 0:
        return 24 / hours
    if found := _SIG_N_TIMES.search(text):
        return float(_count(found.group(1)))
    return next((times for pattern, times in _SIG_TIMES if pattern.search(text)), None)


def _meal_count(text: str) -> int | None:
    """Doses tied to "meals" (with each meal, before meals, a.c.): the count written before
    "meals" ("with two meals"), else three; None when the sig names no meals."""
    if not (_SIG_MEALS.search(text) or _SIG_EACH_MEAL.search(text)):
        return None
    found = _SIG_N_MEALS.search(text)
    return _count(found.group(1)) if found else 3


def _count(word: str) -> int:
    return _COUNT_WORDS.get(word.lower()) or int(word)


def _dose_unread(instructions: list[dict[str, Any]], units: _Units) -> bool:
    """Whether the order gives a dose that cannot be read as an amount (a unit we do not know,
    or a product unit of a product whose strength we do not know), only sig words without one, or
    sig times that cannot be counted without a guess."""
    for instruction in instructions:
        quantity = _dose_quantity(instruction)
        if quantity is not None and _to_mg(quantity, units) is None:
            return True
        if quantity is None and (string(instruction.get("text")) or string(instruction.get("patientInstruction"))):
            return True
        if instruction.get(_SIG_UNREAD):
            return True
        if any(_to_mg(limit, units) is None for limit in _sig_maxima(instruction)):
            return True  # "max 6 tablets a day" of a product whose strength is unknown
    return False


def _sig_maxima(instruction: dict[str, Any]) -> list[dict[str, Any]]:
    limits = instruction.get(_SIG_MAX)
    return [limit for limit in limits if isinstance(limit, dict)] if isinstance(limits, list) else []


def route(order: dict[str, Any], product: Product | None, text: str, dialect: Dialect = _PLAIN) -> str | None:
    """oral / parenteral / neuraxial / ...: the order's own dosage route first (an injectable
    steroid given epidurally is not systemic), then the product table, else words in the name.
    Route codes of any system the dialect knows (SNOMED CT, HL7 v2 table 0162) and the
    abbreviations clinicians type ("IV", "SQ", "PO") are read as the words they stand for."""
    for instruction in objects(order.get("dosageInstruction")):
        concept = obj(instruction, "route")
        for system, code, display in codings(concept):
            if code in SNOMED_ROUTES and dialect.system(system) in (SNOMED, ""):
                return SNOMED_ROUTES[code]
            if (found := dialect.route_of_code(system, code)) is not None:
                return found
            if (found := _route_in(display, dialect)) is not None:
                return found
        if (found := _route_in(string(concept.get("text")), dialect)) is not None:
            return found
        if (found := dialect.route_in_words(string(instruction.get("text")))) is not None:
            return found  # the sig: "4 mg IV push"
    if product is not None and product.route != "other":
        return product.route
    return _route_in(text, dialect)


def _route_in(text: str, dialect: Dialect) -> str | None:
    """The route of a route's words: the full words first ("intravenous"), then abbreviations."""
    return _route_from_words(text) or dialect.route_in_words(text)


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


def _per_day(instruction: dict[str, Any], fewest: bool = False) -> float | None:
    """Administrations per day: the most the order allows (frequencyMax), for the daily dose; with
    ``fewest`` the fewest (frequency), for how long its supply lasts."""
    repeat = _repeat(instruction)
    most, least = number(repeat.get("frequencyMax")), number(repeat.get("frequency"))
    frequency = (least or most) if fewest else (most or least)
    period = _days(repeat.get("period"), repeat.get("periodUnit"))
    if frequency and period:
        return frequency / period
    timing = obj(instruction, "timing")
    for _, code, _ in codings(timing.get("code")):
        if code.upper() in TIMES_PER_DAY:
            return TIMES_PER_DAY[code.upper()]
    return None


def _dose_quantity(instruction: dict[str, Any], fewest: bool = False) -> dict[str, Any] | None:
    """The dose of one instruction: R4 doseAndRate (dose, or range high; with ``fewest`` range
    low, for how long a supply lasts), or DSTU2 dose[x]."""
    holders = objects(instruction.get("doseAndRate")) or [instruction]
    for holder in holders:
        if isinstance(holder.get("doseQuantity"), dict):
            return cast(dict[str, Any], holder["doseQuantity"])
        ranged = holder.get("doseRange")
        if isinstance(ranged, dict):
            bounds = ("low", "high") if fewest else ("high",)
            found = next((ranged[b] for b in bounds if isinstance(ranged.get(b), dict)), None)
            if found is not None:
                return cast(dict[str, Any], found)
    return None


def _to_mg(quantity: dict[str, Any] | None, units: _Units) -> float | None:
    """A dose in mg: an amount unit (mg, g, ug) directly; a product unit (tablet, {pill}, SNOMED
    CT "Tablet") or mL through the product's strength; any other unit (one we do not know,
    e.g. a SNOMED CT code not in the dialect) is unread, never taken for a tablet."""
    if not isinstance(quantity, dict) or (value := number(quantity.get("value"))) is None:
        return None
    unit = units.dialect.unit(quantity) if units.dialect.unit_codes else _plain_unit(quantity)
    if unit is None:
        return None
    if (mg := Dialect.mg(value, unit)) is not None:
        return mg
    strength = _single_strength(units.product)
    if strength is None:
        return None
    per_unit, strength_unit = strength
    if strength_unit == "mg/ml" and unit == "mL":
        return value * per_unit
    if strength_unit == "mg" and unit == PRODUCT_UNIT:
        return value * per_unit
    return None


def _plain_unit(quantity: dict[str, Any]) -> str | None:
    """The unit without a dialect (tests that build a bare Terminology): UCUM mg/g/ug/mL, else
    one unit of the product."""
    unit = str(quantity.get("code") or quantity.get("unit") or "").lower()
    return {"mg": "mg", "g": "g", "ug": "ug", "mcg": "ug", "ml": "mL", "l": "L"}.get(unit, PRODUCT_UNIT)


def _product_units(quantity: dict[str, Any] | None, units: _Units) -> float | None:
    """A dose in units of the product (tablets): a dose in mg divided by the strength, so that a
    dispensed quantity of 90 tablets lasts as long as it does whatever unit the dose is in."""
    if not isinstance(quantity, dict) or (value := number(quantity.get("value"))) is None:
        return None
    unit = units.dialect.unit(quantity) if units.dialect.unit_codes else _plain_unit(quantity)
    if unit == PRODUCT_UNIT:
        return value
    strength = _single_strength(units.product)
    mg = Dialect.mg(value, unit) if unit else None
    if strength is None or mg is None or strength[1] != "mg" or strength[0] <= 0:
        return None
    return mg / strength[0]


def _single_strength(product: Product | None) -> tuple[float, str] | None:
    if product is None or len(product.ingredients) != 1:
        return None
    ingredient = product.ingredients[0]
    if ingredient.strength_value is None or not ingredient.strength_unit:
        return None
    return float(ingredient.strength_value), ingredient.strength_unit.lower()


def _single_dose_mg(instruction: dict[str, Any], units: _Units) -> float | None:
    return _to_mg(_dose_quantity(instruction), units)


def _daily_dose_mg(instructions: list[dict[str, Any]], units: _Units) -> float | None:
    """Per instruction, dose x frequency or its maxDosePerPeriod when higher; the instructions read
    from one sig together, or the daily maximum that sig states when higher; summed by sequence."""
    by_instruction: dict[tuple[Any, Any], float] = {}
    stated: dict[tuple[Any, Any], float] = {}
    for instruction in instructions:
        dose, per_day = _single_dose_mg(instruction, units), _per_day(instruction)
        daily = dose * per_day if dose is not None and per_day is not None else None
        daily = max(filter(None, [daily, _max_per_day_mg(instruction, units)]), default=None)
        key = instruction.get("sequence", 0)
        key = key if isinstance(key, (int, float, str)) else 0  # a list or object cannot be a dict key
        group = (key, instruction.get(_INSTRUCTION))
        if daily is not None:
            by_instruction[group] = by_instruction.get(group, 0.0) + daily
        for limit in _sig_maxima(instruction):
            if (mg := _to_mg(limit, units)) is not None:
                stated[group] = max(stated.get(group, 0.0), mg)
    for group, mg in stated.items():
        by_instruction[group] = max(by_instruction.get(group, 0.0), mg)
    by_sequence: dict[Any, float] = {}
    for (key, _), daily in by_instruction.items():
        by_sequence[key] = by_sequence.get(key, 0.0) + daily
    return max(by_sequence.values()) if by_sequence else None


def _max_per_day_mg(instruction: dict[str, Any], units: _Units) -> float | None:
    for ratio in objects(instruction.get("maxDosePerPeriod")):
        amount = _to_mg(ratio.get("numerator"), units)
        days = _duration(ratio.get("denominator"))
        if amount is not None and days:
            return amount / days
    return None


def _units_per_day(instructions: list[dict[str, Any]], units: _Units) -> float | None:
    """Units of the product (tablets) taken a day, at the fewest the order allows: what a dispensed
    quantity is counted in. A range ("1-2 tablets every 4-6 hours") lasts longest at its low end,
    and the course rules ask how long a supply can last (its daily dose takes the high end)."""
    total = 0.0
    for instruction in instructions:
        amount = _product_units(_dose_quantity(instruction, fewest=True), units)
        per_day = _per_day(instruction, fewest=True)
        if amount is None or per_day is None:
            return None
        total += amount * per_day
    return total or None


def _planned_days(order: dict[str, Any], instructions: list[dict[str, Any]], units: _Units) -> float | None:
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
    per_day = _units_per_day(instructions, units) if instructions else None
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


