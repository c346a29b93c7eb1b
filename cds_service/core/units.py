"""Lab result units: the UCUM code a rule names, and the spellings a record may use for it.

A FHIR Quantity carries a machine unit (``valueQuantity.code``, UCUM when ``system`` is
http://unitsofmeasure.org) and a human one (``valueQuantity.unit``), and EHRs fill either, often
with a lab's own spelling ("mL/min/1.73m2" for UCUM ``mL/min/{1.73_m2}``). A result counts for a
rule's ``units`` when either of its units means the same as one the rule names.

No UCUM library is used: the one on PyPI that parses UCUM (ucumvert 0.3, on pint and lark) is
young and would convert units, which the rules must not do silently (a threshold is written in
the unit its guideline uses). Instead a small declared table maps each UCUM code the knowledge
may name to the spellings that mean exactly that unit, no conversion factor:

- UCUM codes and case-sensitive forms: The Unified Code for Units of Measure, Regenstrief
  Institute (https://ucum.org/ucum), sections 4 (syntax, annotations in curly braces) and tables
  of base and derived units (``L`` and ``l`` are both the litre; ``[lb_av]`` the avoirdupois pound).
- ``mL/min/{1.73_m2}`` is the example UCUM unit LOINC gives for the eGFR terms (e.g. 62238-1,
  98979-8) and the one HL7 profiles use (fhir.ch ch-lab-report eGFR profiles); "mL/min/1.73m2"
  and its variants are its print form on lab reports.
- ``mmol/L`` (millimole per litre: UCUM prefix m, mole, per litre) is how calcium results of
  the LOINC property Moles/volume are reported (ionized calcium 1994-3, corrected calcium
  29265-6); a limit in mmol/L is written beside its mg/dL twin, never converted at run time.
- ``ng/mL`` and ``ug/L`` are the same quantity (10^-9 g per 10^-3 L = 10^-6 g per L).

A unit outside the table is compared exactly as written.
"""
from __future__ import annotations

from typing import Iterable

# UCUM code -> the other spellings that mean exactly it (compared without case and spaces).
SPELLINGS: dict[str, tuple[str, ...]] = {
    "kg": ("kilogram", "kilograms", "kgs"),
    "g": ("gram", "grams"),
    "[lb_av]": ("lb", "lbs", "pound", "pounds"),
    "cm": ("centimeter", "centimetre"),
    "mL/min/{1.73_m2}": ("mL/min/1.73m2", "mL/min/1.73_m2", "mL/min/1.73m^2", "mL/min/1.73m²",
                         "mL/min/1.73sqm", "mL/min/1.73sq.m", "mL/min per 1.73m2", "mL/min/1.73/m2"),
    "mL/min": ("ml/minute", "mL/minute"),
    "mg/dL": (),
    "mmol/L": (),
    "umol/L": ("µmol/L", "μmol/L", "micromol/L"),
    "ng/mL": ("ug/L", "µg/L", "μg/L", "mcg/L"),
    "pg/mg{creat}": ("pg/mg creatinine", "pg/mg{creatinine}"),
    "%": ("percent",),
    "1": (),
}


# UCUM codes as a clinician writes them on a card ("{creat}" and "{1.73_m2}" are UCUM's notation).
READABLE: dict[str, str] = {
    "pg/mg{creat}": "pg/mg creatinine",
    "mL/min/{1.73_m2}": "mL/min/1.73 m²",
    "umol/L": "µmol/L",
    "[lb_av]": "lb",
    "1": "",  # a unitless result (a T-score) takes no unit
}


def readable(unit: str) -> str:
    """A unit as shown to a clinician: a UCUM code's usual spelling, any other text as it came."""
    return READABLE.get(unit, unit)


def _key(text: str) -> str:
    return "".join(text.split()).lower()


_CODE_OF: dict[str, str] = {_key(alias): code for code, aliases in SPELLINGS.items() for alias in (code, *aliases)}


def ucum_code(text: str) -> str:
    """The UCUM code ``text`` spells, or ``text`` itself (trimmed) when the table does not know it."""
    return _CODE_OF.get(_key(text), text.strip())


def same_unit(found: Iterable[str], named: Iterable[str]) -> bool:
    """Whether any of a result's units (its code, its text) means one of the units a rule names."""
    wanted = {ucum_code(u) for u in named}
    return any(ucum_code(u) in wanted for u in found if u)


def unit_problem(text: object) -> str | None:
    """Why a unit a rule names cannot be used, with the fix; None when it is a known UCUM code."""
    if not isinstance(text, str) or not text.strip():
        return f"{text!r} is not a unit: write a UCUM code, e.g. kg"
    if text in SPELLINGS:
        return None
    code = _CODE_OF.get(_key(text))
    if code is not None:
        return f"'{text}' is not a UCUM code: write '{code}' (results written '{text}' still count)"
    return (f"'{text}' is not a UCUM code the service knows (known: {', '.join(SPELLINGS)}); "
            "add it with its sources to cds_service/core/units.py")
