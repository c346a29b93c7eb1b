"""Which warning cards an earlier override silences (the override window).

An override is remembered by the patient, the rule and the item it was about. For a medication
the item is the drug (its RxNorm ingredients), the route family and the single dose in mg:
``"<ingredients>|<route>|<dose>"``, e.g. ``"7052|oral|15"`` (``?`` for what the order did not
say). A clinician who overrode a warning accepted that drug by that route up to that dose, so
the override silences the same drug by the same route at the same or a lower dose: a higher
dose, another route, or an order whose route or dose cannot be read is shown again. Other
items (a procedure's code, a patient-level finding's "") silence only themselves.

Only an override that gave a reason is remembered (storage filters them); critical and info
cards are never silenced (decision.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

UNKNOWN = "?"


@dataclass(frozen=True)
class MedicationItem:
    ingredients: str
    route: str  # a route family (dosing.route), or UNKNOWN
    dose_mg: float | None


def medication_key(ingredients: str, route: str | None, dose_mg: float | None) -> str:
    dose = UNKNOWN if dose_mg is None else f"{dose_mg:g}"
    return f"{ingredients}|{route or UNKNOWN}|{dose}"


def parse_medication_key(key: str) -> MedicationItem | None:
    """The parts of a medication key, or None for any other item (or a key of the old form)."""
    parts = key.split("|")
    if len(parts) != 3 or not parts[0]:
        return None
    try:
        dose = None if parts[2] == UNKNOWN else float(parts[2])
    except ValueError:
        return None
    return MedicationItem(parts[0], parts[1], dose)


def silenced(rule_id: str, key: str, overridden: Collection[tuple[str, str]]) -> bool:
    """Whether an override with a reason of (``rule_id``, some item) covers ``key``."""
    now = parse_medication_key(key)
    if now is None:
        return (rule_id, key) in overridden  # a procedure or the patient: the very same item
    if now.route == UNKNOWN or now.dose_mg is None:
        return False  # a drug whose route or dose cannot be read might be anything: shown
    for rule, earlier_key in overridden:
        earlier = parse_medication_key(earlier_key) if rule == rule_id else None
        if (earlier is not None and earlier.ingredients == now.ingredients and earlier.route == now.route
                and earlier.dose_mg is not None and now.dose_mg <= earlier.dose_mg):
            return True
    return False
