"""What every condition word shares: the compile context, evidence lines, the predicate with the data keys it reads, and small helpers."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Mapping

from cds_service.core.facts import (
    Facts,
)
from cds_service.core.terminology import (
    CPT,
    ICD10CM,
    LOINC,
    RXNORM,
    SNOMED,
    Match,
    Terminology,
)
from cds_service.errors import did_you_mean

SYSTEM_NAMES = {ICD10CM: "ICD-10-CM", SNOMED: "SNOMED CT", RXNORM: "RxNorm", LOINC: "LOINC", CPT: "CPT"}


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
    """A condition that cannot be compiled; the message names what is wrong, ``where`` the key path
    inside the rule's ``when`` (``all[1].observation_below.value``), filled in on the way out."""

    def __init__(self, message: str, parts: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.parts = message, parts

    def inside(self, part: str) -> "ConditionError":
        """The same error one level further out: ``part`` is a word or a list index ``[i]``."""
        return ConditionError(self.message, (part, *self.parts))

    @property
    def where(self) -> str:
        return "".join(p if p.startswith("[") else f".{p}" for p in self.parts).lstrip(".")


def arguments(word: str, arg: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """``arg`` when it is a mapping with every required key and no unknown one; else the fix."""
    allowed = (*required, *optional)
    listed = f"(keys: {', '.join(required)}" + (f"; optional: {', '.join(optional)})" if optional else ")")
    if not isinstance(arg, dict):
        raise ConditionError(f"takes a mapping {listed}, not {arg!r}")
    for key in arg:
        if key not in allowed:
            raise ConditionError(f"unknown key '{key}'{did_you_mean(str(key), allowed)} {listed}", (str(key),))
    for key in required:
        if key not in arg:
            raise ConditionError(f"missing key '{key}' {listed}")
    return arg


def number(arg: dict[str, Any], key: str) -> float:
    """A number of a condition's argument; a text such as '< 80' is refused with the fix."""
    value = arg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        why = "; the condition word says the comparison" if key == "value" else ""
        raise ConditionError(f"{value!r} is not a number: write the number alone (e.g. {key}: 30){why}", (key,))
    return float(value)


def describe(match: Match) -> str:
    if match.by_name:
        return f"matched by name '{match.display}' (no known code on the order)"
    system = SYSTEM_NAMES.get(match.system or "", match.system or "")
    return f"{system} {match.code}"


def date_text(value: date | None) -> str:
    return value.isoformat() if value else "date not recorded"


def valueset_arg(arg: Any, terminology: Terminology) -> tuple[str, str | None]:
    vid, label = (arg.get("valueset"), arg.get("label")) if isinstance(arg, dict) else (arg, None)
    if vid not in terminology.valuesets:
        raise ConditionError(f"unknown value set '{vid}'{did_you_mean(vid, terminology.valuesets)}")
    return vid, label


def remember(facts: Facts, key: Any, compute: Callable[[], Any]) -> Any:
    if key not in facts.memo:
        facts.memo[key] = compute()
    return facts.memo[key]


def combined(check: Check, parts: list[Predicate]) -> Predicate:
    return Predicate(check, union(p.needs for p in parts), union(p.valuesets for p in parts),
                     union(p.wants for p in parts))


def union(sets: Any) -> frozenset[str]:
    result: set[str] = set()
    for s in sets:
        result |= s
    return frozenset(result)
