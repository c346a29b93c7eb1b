"""The dialects of real EHR data, compiled from knowledge/dialects.yaml (issue 20).

Sans-IO. One ``Dialect`` answers, where FHIR is read: which canonical code system an
identifier names (an OID, a WHO ICD-10 URI), which route family a route code or an
abbreviation means ("IV", "SQ", v2 table 0162 codes, SNOMED CT routes), which unit a dose
is in (UCUM, SNOMED CT "milligram", the word "tablets"), which written names stand for
which ingredients (brands, "APAP/COD"), which NDC is which product, and which problem-list
text stands for which code. Everything it knows is data with a source; an empty Dialect
reads FHIR as written (the tests of other rooms build Terminology without one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

AMOUNT_UNITS = ("mg", "g", "ug", "mL", "L")
PRODUCT_UNIT = "unit"  # one unit of the product: tablet, capsule, pill, device
_MG_PER = {"mg": 1.0, "g": 1000.0, "ug": 0.001}
_NDC_DIGITS = re.compile(r"\D")


def _word_pattern(phrase: str) -> re.Pattern[str]:
    """Whole words, any case: 'IV' is not in 'IVF' nor in 'river', 'APAP/COD' is itself."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(phrase)}(?![A-Za-z0-9])", re.IGNORECASE)


def _longest_first(phrases: Iterable[str]) -> re.Pattern[str] | None:
    names = sorted(set(phrases), key=len, reverse=True)
    if not names:
        return None
    return re.compile(rf"(?<![A-Za-z0-9])(?:{'|'.join(re.escape(n) for n in names)})(?![A-Za-z0-9])", re.IGNORECASE)


def ndc_key(code: str) -> str:
    """An NDC as digits only: labels write 49502-500-02, claims the 11-digit 49502050002; both keys
    are kept for each declared code, so either spelling is found."""
    return _NDC_DIGITS.sub("", code)


def _eleven_digits(labelled: str) -> str:
    """The 5-4-2 (11 digit) form of a hyphenated 10-digit NDC (4-4-2, 5-3-2 or 5-4-1)."""
    parts = labelled.split("-")
    if len(parts) != 3:
        return ndc_key(labelled)
    return f"{parts[0]:0>5}{parts[1]:0>4}{parts[2]:0>2}"


@dataclass(frozen=True)
class WrittenName:
    """A name as prescribers write it, and what it stands for: ingredient names the value sets
    match, or a product of the table (for a product-level value set such as auto-injectors)."""

    written: str
    means: tuple[str, ...] = ()
    rxcui: str | None = None


@dataclass(frozen=True)
class Dialect:
    systems: dict[str, str] = field(default_factory=dict)  # alias -> canonical URI
    route_codes: dict[tuple[str, str], str] = field(default_factory=dict)  # (system, CODE) -> route
    route_words: dict[str, str] = field(default_factory=dict)  # lower-case word -> route
    unit_codes: dict[tuple[str, str], str] = field(default_factory=dict)  # (system, code) -> unit
    unit_words: dict[str, str] = field(default_factory=dict)  # lower-case word -> unit
    remission_sets: frozenset[str] = frozenset()
    encounter_recent_days: int | None = None
    encounter_recent_days_for: dict[str, int] = field(default_factory=dict)  # value set id -> its own recency
    condition_text: tuple[tuple[str, str, str], ...] = ()  # phrase, system, code
    names: tuple[WrittenName, ...] = ()
    ndc: dict[str, str] = field(default_factory=dict)  # NDC digits -> rxcui
    negation_before: tuple[str, ...] = ()
    negation_after: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_route_pattern", _longest_first(self.route_words))
        object.__setattr__(self, "_name_pattern", _longest_first(n.written for n in self.names))
        object.__setattr__(self, "_by_written", {n.written.lower(): n for n in self.names})
        object.__setattr__(self, "_conditions", tuple((_word_pattern(p), s, c, p) for p, s, c in self.condition_text))
        before = "|".join(re.escape(w) for w in sorted(self.negation_before, key=len, reverse=True))
        after = "|".join(re.escape(w) for w in sorted(self.negation_after, key=len, reverse=True))
        object.__setattr__(self, "_negated_before", re.compile(rf"(?:^|[^A-Za-z])(?:{before})\s*[:\-]?\s*$", re.IGNORECASE) if before else None)
        object.__setattr__(self, "_negated_after", re.compile(rf"^\s*[:\-,(]?\s*(?:{after})(?![A-Za-z])", re.IGNORECASE) if after else None)

    # --- code systems -------------------------------------------------------------------------
    def system(self, system: str) -> str:
        """The canonical URI of a code-system identifier (itself when it is canonical or unknown)."""
        found = self.systems.get(system)
        if found is not None:
            return found
        stripped = system.rstrip("/")  # "http://snomed.info/sct/" is written too
        return self.systems.get(stripped, stripped) if stripped != system else system

    def codings(self, found: Iterable[tuple[str, str, str]]) -> tuple[tuple[str, str, str], ...]:
        """Codings with their systems canonical (an OID read as the URI the value sets use)."""
        return tuple((self.system(s), c, d) for s, c, d in found)

    # --- routes ---------------------------------------------------------------------------------
    def route_of_code(self, system: str, code: str) -> str | None:
        return self.route_codes.get((self.system(system), code.strip().upper()))

    def route_in_words(self, text: str) -> str | None:
        """The route an abbreviation or word in a text names ("IV", "SQ", "by mouth"), or None."""
        pattern: re.Pattern[str] | None = getattr(self, "_route_pattern")
        if pattern is None or not text:
            return None
        found = pattern.search(text)
        return self.route_words[found.group(0).lower()] if found else None

    # --- units ----------------------------------------------------------------------------------
    def unit(self, quantity: dict[str, Any]) -> str | None:
        """mg, g, ug, mL, L or "unit" (one unit of the product) for a FHIR Quantity, None when its
        unit is not one we know (then the dose is unread, never guessed)."""
        system, code, text = (quantity.get(k) for k in ("system", "code", "unit"))
        if isinstance(code, str) and code.strip():
            known = self.unit_codes.get((self.system(system) if isinstance(system, str) else "", code.strip()))
            known = known or self.unit_codes.get(("http://unitsofmeasure.org", code.strip()))
            if known is None and not isinstance(system, str):
                known = self.unit_words.get(code.strip().lower())
            if known is not None:
                return known
            if isinstance(system, str) and system:
                return None  # a coded unit we do not know: not read as the text beside it
        if isinstance(text, str) and text.strip():
            return self.unit_words.get(text.strip().lower())
        return None

    @staticmethod
    def mg(amount: float, unit: str) -> float | None:
        factor = _MG_PER.get(unit)
        return amount * factor if factor is not None else None

    # --- names ----------------------------------------------------------------------------------
    def written_names(self, text: str) -> tuple[WrittenName, ...]:
        """The names of the dialect in a text, whole words, each once, skipping negated ones."""
        pattern: re.Pattern[str] | None = getattr(self, "_name_pattern")
        if pattern is None or not text:
            return ()
        by_written: dict[str, WrittenName] = getattr(self, "_by_written")
        found = [by_written[m.group(0).lower()] for m in pattern.finditer(text) if not self.negated(text, m.start(), m.end())]
        return tuple(dict.fromkeys(found))

    def negated(self, text: str, start: int, end: int) -> bool:
        """Whether the words just before or after a name in its clause deny it ("no Toradol",
        "codeine - discontinued")."""
        clause_start = max(text.rfind(sep, 0, start) for sep in ".;\n") + 1
        before: re.Pattern[str] | None = getattr(self, "_negated_before")
        after: re.Pattern[str] | None = getattr(self, "_negated_after")
        return bool((before and before.search(text[clause_start:start]))
                    or (after and after.match(text[end:])))

    def ndc_product(self, code: str) -> str | None:
        return self.ndc.get(ndc_key(code))

    # --- conditions -----------------------------------------------------------------------------
    def condition_codings(self, text: str) -> tuple[tuple[str, str, str], ...]:
        """The codings a problem-list text stands for (whole words, not negated)."""
        found = []
        for pattern, system, code, phrase in getattr(self, "_conditions"):
            match = pattern.search(text)
            if match and not self.negated(text, match.start(), match.end()):
                found.append((system, code, phrase))
        return tuple(found)


def compile_dialect(data: dict[str, Any]) -> Dialect:
    """The Dialect of a validated knowledge/dialects.yaml."""
    systems = {alias: row["canonical"] for row in data.get("code_systems", []) for alias in row["aliases"]}
    routes = data.get("routes", {})
    units = data.get("dose_units", {})
    conditions = data.get("conditions", {})
    negation = data.get("negation", {})

    def canonical(system: str) -> str:
        return str(systems.get(system, system))

    ndc: dict[str, str] = {}
    for row in data.get("ndc", []):
        ndc[ndc_key(row["ndc"])] = row["rxcui"]
        ndc[_eleven_digits(row["ndc"])] = row["rxcui"]
    return Dialect(
        systems=systems,
        route_codes={(canonical(row["system"]), code.upper()): route
                     for row in routes.get("codes", []) for code, route in row["map"].items()},
        route_words={word.lower(): route for word, route in routes.get("words", {}).get("map", {}).items()},
        unit_codes={(canonical(row["system"]), code): unit for row in units.get("codes", []) for code, unit in row["map"].items()},
        unit_words={word.lower(): unit for word, unit in units.get("words", {}).get("map", {}).items()},
        remission_sets=frozenset(conditions.get("remission_counts_for", [])),
        encounter_recent_days=conditions.get("encounter_diagnosis_recent_days"),
        encounter_recent_days_for=dict(conditions.get("encounter_diagnosis_recent_days_for", {})),
        condition_text=tuple((row["phrase"], canonical(row["system"]), row["code"]) for row in conditions.get("text", [])),
        names=tuple(WrittenName(row["written"], tuple(row.get("means", ())), row.get("rxcui"))
                    for row in data.get("medication_names", [])),
        ndc=ndc,
        negation_before=tuple(negation.get("before", ())),
        negation_after=tuple(negation.get("after", ())),
    )
