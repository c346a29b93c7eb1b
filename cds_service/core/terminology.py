"""Code membership: value sets, ICD-10-CM hierarchy, RxNorm product to ingredient.

Sans-IO: built from plain data that ``knowledge.py`` read, queried by the
engine. ICD-10-CM ``is-a`` filters match by dotted prefix (so ``G35`` covers
``G35.A``); RxNorm products (SCD/SBD, what EHRs send) map to their
ingredients through the curated product table; an order that carries no code
we know can still match on an ingredient's name, as a whole word.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Iterable, Mapping

from cds_service.core.dialect import Dialect

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MEMBERSHIP_CACHE = 65536  # distinct (system, code) pairs remembered; a chart repeats a few hundred
CACHED_CODE_LENGTH = 64  # a SNOMED CT id has at most 18 digits; RxNorm, LOINC and ICD-10-CM fewer
CACHED_SYSTEM_LENGTH = 256
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
NDC = "http://hl7.org/fhir/sid/ndc"

Coding = tuple[str, str, str]  # system, code, display


def normalize_icd10(code: str) -> str:
    """Upper case with the dot after the category, as the tabular writes it (M5450 -> M54.50)."""
    code = code.strip().upper()
    if "." not in code and len(code) > 3:
        code = f"{code[:3]}.{code[3:]}"
    return code


def _normalize(system: str, code: str) -> str:
    return normalize_icd10(code) if system == ICD10CM else code.strip()


def name_pattern(name: str) -> re.Pattern[str]:
    """Whole-word, case-insensitive: 'morphine' does not match 'hydromorphone'."""
    return re.compile(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])", re.IGNORECASE)


@dataclass(frozen=True)
class Ingredient:
    rxcui: str
    name: str
    strength_value: float | None = None
    strength_unit: str | None = None


@dataclass(frozen=True)
class Product:
    rxcui: str
    name: str
    route: str
    dose_form: str
    ingredients: tuple[Ingredient, ...]
    volume_ml: float | None = None


@dataclass(frozen=True)
class Brand:
    """An RxNorm brand name (BN) that names exactly one ingredient (rxnorm-brands.json)."""

    name: str
    ingredient_rxcui: str


_LETTERS = re.compile(r"[a-z]+")


def ascii_words(text: str) -> frozenset[str] | None:
    """The runs of letters of an ASCII text, lower-cased: a whole-word name can only be in the
    text if its first run of letters is (``name_pattern``'s boundaries are runs of letters).
    None for a non-ASCII text, where case folding may change lengths: then search every name."""
    return frozenset(_LETTERS.findall(text.lower())) if text.isascii() else None


def _first_word(name: str) -> str | None:
    """A name's first run of letters, the key a text must hold; None when it has none we can key."""
    found = _LETTERS.search(name.lower()) if name.isascii() else None
    return found.group(0) if found else None


class NameIndex:
    """Whole-word, case-insensitive names (``name_pattern``), looked for in a text all at once.

    Only the names whose first word the text holds are searched: an order's text has a handful of
    words, the index hundreds of names, so most texts need no regular expression at all."""

    def __init__(self, names: Iterable[str]) -> None:
        self._by_word: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}
        for name in dict.fromkeys(names):
            self._by_word.setdefault(_first_word(name), []).append((name, name_pattern(name)))

    def find(self, text: str) -> frozenset[str]:
        """The names in the text (each whole word, any case)."""
        return self.find_in(text, ascii_words(text)) if text else frozenset()

    def find_in(self, text: str, words: frozenset[str] | None) -> frozenset[str]:
        """``find``, given the text's ``ascii_words`` (one text searched in several indexes)."""
        if not text:
            return frozenset()
        keys = self._by_word if words is None else [None, *words]
        return frozenset(name for key in keys for name, pattern in self._by_word.get(key, ()) if pattern.search(text))


class BrandIndex:
    """Every brand name in one whole-word, case-insensitive pattern: one search per order text,
    longest names first so that "Solu-Medrol" is found as itself, not as "Medrol". A text
    holding none of the brands' first words is not searched."""

    def __init__(self, brands: Iterable[Brand]) -> None:
        self._by_name = {b.name.lower(): b for b in brands}
        names = sorted(self._by_name, key=len, reverse=True)
        alternation = "|".join(re.escape(n) for n in names)
        self._pattern = re.compile(rf"(?<![A-Za-z])(?:{alternation})(?![A-Za-z])", re.IGNORECASE) if names else None
        first = {_first_word(n) for n in names}
        self._first_words = None if None in first else frozenset(w for w in first if w)

    def __len__(self) -> int:
        return len(self._by_name)

    def find(self, text: str) -> tuple[Brand, ...]:
        """The brands named in a text, in order of appearance, each once."""
        if self._pattern is None or not text:
            return ()
        words = ascii_words(text)
        if words is not None and self._first_words is not None and words.isdisjoint(self._first_words):
            return ()
        found = dict.fromkeys(self._by_name[m.group(0).lower()] for m in self._pattern.finditer(text))
        return tuple(found)


@dataclass(frozen=True)
class ValueSetIndex:
    """One compiled value set: exact codes, is-a prefixes, exclusions, ingredient names."""

    id: str
    title: str
    url: str
    exact: Mapping[tuple[str, str], str]
    is_a: Mapping[str, tuple[str, ...]]
    excluded: frozenset[tuple[str, str]]
    names: tuple[tuple[str, re.Pattern[str]], ...] = field(default=())

    def contains(self, system: str, code: str) -> bool:
        code = _normalize(system, code)
        if (system, code) in self.excluded:
            return False
        if (system, code) in self.exact:
            return True
        return any(code.startswith(prefix) for prefix in self.is_a.get(system, ()))

    def codes(self) -> list[tuple[str, str]]:
        return list(self.exact) + [(s, p) for s, prefixes in self.is_a.items() for p in prefixes]

    @cached_property
    def exact_codes(self) -> frozenset[str]:
        """The codes of the exact members, whatever their system (worked out once)."""
        return frozenset(code for _, code in self.exact)


@dataclass(frozen=True)
class Match:
    """Why something matched a value set: the coding, or an ingredient name found in text."""

    display: str
    code: str | None
    system: str | None
    by_name: bool = False


class _Membership:
    """Which value sets hold a coding, from flat look-ups: exact codes and exclusions by (system,
    code), is-a prefixes by system and length; a code costs a few dictionary reads, whatever the
    number of value sets."""

    def __init__(self, valuesets: Iterable[ValueSetIndex]) -> None:
        self._exact: dict[tuple[str, str], set[str]] = {}
        self._excluded: dict[tuple[str, str], set[str]] = {}
        self._prefixes: dict[str, dict[str, set[str]]] = {}
        for vs in valuesets:
            for key in vs.exact:
                self._exact.setdefault(key, set()).add(vs.id)
            for key in vs.excluded:
                self._excluded.setdefault(key, set()).add(vs.id)
            for system, prefixes in vs.is_a.items():
                for prefix in prefixes:
                    self._prefixes.setdefault(system, {}).setdefault(prefix, set()).add(vs.id)
        self._lengths = {system: sorted({len(p) for p in prefixes}) for system, prefixes in self._prefixes.items()}

    def of(self, system: str, code: str) -> frozenset[str]:
        """The ids of the value sets that contain the coding (``ValueSetIndex.contains``, all at once)."""
        code = _normalize(system, code)
        found = set(self._exact.get((system, code), ()))
        prefixes = self._prefixes.get(system)
        if prefixes:
            for length in self._lengths[system]:
                if length > len(code):
                    break
                found |= prefixes.get(code[:length], set())
        return frozenset(found - self._excluded.get((system, code), set()))

    def known(self, system: str, code: str) -> bool:
        """Whether some value set names the coding, exactly or by a prefix (exclusions aside)."""
        code = _normalize(system, code)
        if (system, code) in self._exact:
            return True
        prefixes = self._prefixes.get(system, {})
        return any(code[:length] in prefixes for length in self._lengths.get(system, ()) if length <= len(code))


class Terminology:
    """All value sets and the product table, compiled once at start-up."""

    def __init__(
        self, valuesets: dict[str, ValueSetIndex], products: dict[str, Product], brands: BrandIndex | None = None,
        dialect: Dialect | None = None,
    ) -> None:
        self.valuesets = valuesets
        self.dialect = dialect or Dialect()
        self.products = products
        self.brands = brands or BrandIndex(())
        self.loinc_codes = frozenset(
            code for vs in valuesets.values() for (system, code) in vs.exact if system == LOINC
        )
        self._known_rxnorm = frozenset(products) | frozenset(
            code for vs in valuesets.values() for (system, code) in vs.exact if system == RXNORM
        )
        self._membership = _Membership(valuesets.values())
        # Every rule asks "is this code in set X?" of the same few hundred codes, call after
        # call: each code's sets are remembered (a code alone is no patient data; a long one,
        # which may be free text put in a code, is looked up each time and never kept).
        self._remembered = lru_cache(maxsize=MEMBERSHIP_CACHE)(self._membership.of)
        # Ingredient names (for orders without a code we know): each name once, with its sets.
        self._sets_by_name: dict[str, list[str]] = {}
        for vid, vs in valuesets.items():
            for name, _ in vs.names:
                self._sets_by_name.setdefault(name, []).append(vid)
        self._names = NameIndex(self._sets_by_name)

    def valuesets_of(self, system: str, code: str) -> frozenset[str]:
        """The ids of the value sets that contain the coding (its system read through the dialect:
        an OID names the same system as its URI)."""
        system = self.dialect.system(system)
        if len(code) > CACHED_CODE_LENGTH or len(system) > CACHED_SYSTEM_LENGTH:
            return self._membership.of(system, code)
        return self._remembered(system, code)

    def contains(self, valueset_id: str, system: str, code: str) -> bool:
        """``ValueSetIndex.contains``, remembered per coding."""
        return valueset_id in self.valuesets_of(system, code)

    def expand_rxnorm(self, code: str) -> tuple[str, ...]:
        """The code itself and, for a known product, its ingredients."""
        product = self.products.get(code)
        return (code,) + tuple(i.rxcui for i in product.ingredients) if product else (code,)

    def match_codes(self, codings: Iterable[Coding], valueset_id: str) -> Match | None:
        for system, code, display in codings:
            if self.contains(valueset_id, system, code):
                return Match(display or code, code, system)
        return None

    def coding_sets(self, codings: Iterable[Coding]) -> dict[str, Match]:
        """``match_codes`` for every value set at once: per value set id, the match of the first
        coding in it (a record's condition is asked about many value sets in one call)."""
        found: dict[str, Match] = {}
        for system, code, display in codings:
            for vid in self.valuesets_of(system, code):
                if vid not in found:
                    found[vid] = Match(display or code, code, system)
        return found

    def knows_code(self, codings: Iterable[Coding]) -> bool:
        """Whether a coding is in some value set of the knowledge: then it, not the order's text, decides."""
        return any(self._membership.known(self.dialect.system(system), code) for system, code, _ in codings)

    def knows_rxnorm(self, codings: Iterable[Coding]) -> bool:
        """Whether a coding is an RxNorm code of the product table or of a value set."""
        return any(self.dialect.system(system) == RXNORM and code in self._known_rxnorm for system, code, _ in codings)

    def _only_negated(self, text: str, name: str) -> bool:
        spans = [(m.start(), m.end()) for m in name_pattern(name).finditer(text)]
        return bool(spans) and all(self.dialect.negated(text, start, end) for start, end in spans)

    def product_codings(self, codings: Iterable[Coding]) -> tuple[Coding, ...]:
        """Codings with their systems canonical and, for an NDC of the dialect, the RxNorm product
        it is (an order sent by NDC only is then read as that product)."""
        found = []
        for system, code, display in codings:
            system = self.dialect.system(system)
            found.append((system, code, display))
            if system == NDC and (rxcui := self.dialect.ndc_product(code)) is not None:
                found.append((RXNORM, rxcui, display))
        return tuple(found)

    def medication_sets(
        self, codings: tuple[Coding, ...], text: str, brands: tuple[Brand, ...] = ()
    ) -> dict[str, Match]:
        """Every value set an order's medication is in, with why, in one pass: by RxNorm code
        (product or ingredient) or other coding, the first coding that matches; else by brand name
        (``brands``: those found in its text, see ``BrandIndex.find``); else by ingredient name,
        the first in alphabetical order.

        Names are tried only when no coding is one we know: a known code that is not in a set is
        a clear "no", not a reason to guess from text.
        """
        found: dict[str, Match] = {}
        for system, code, display in codings:
            system = self.dialect.system(system)
            for candidate in self.expand_rxnorm(code) if system == RXNORM else (code,):
                for vid in self.valuesets_of(system, candidate):
                    found.setdefault(vid, Match(display or text or code, code, system))
        if self.knows_rxnorm(codings):
            return found
        for brand in brands:
            for vid in self.valuesets_of(RXNORM, brand.ingredient_rxcui):
                found.setdefault(vid, Match(brand.name, None, None, by_name=True))
        words = " ".join([text] + [display for _, _, display in codings])
        # Names as prescribers write them (dialects.yaml): a brand or abbreviation stands for the
        # ingredient names it means, or for a product of the table.
        for written in self.dialect.written_names(words):
            for vid in self.valuesets_of(RXNORM, written.rxcui) if written.rxcui else ():
                found.setdefault(vid, Match(written.written, None, None, by_name=True))
            for name in written.means:
                for vid in self._sets_by_name.get(name.lower(), ()):
                    found.setdefault(vid, Match(f"{written.written} ({name})", None, None, by_name=True))
        for name in sorted(self._names.find(words)):
            if self._only_negated(words, name):
                continue  # "no morphine", "ketorolac - discontinued": not an order for it
            for vid in self._sets_by_name[name]:
                found.setdefault(vid, Match(name, None, None, by_name=True))
        return found


def compile_valuesets(
    resources: dict[str, dict[str, Any]],
    name_only: Mapping[str, list[str]],
    product_codes: frozenset[str] = frozenset(),
) -> dict[str, ValueSetIndex]:
    """Compile ValueSet resources (by id) into indexes; ``valueSet`` includes are resolved.

    The names matched in free text are the displays of the RxNorm ingredient
    concepts (not products) plus the names listed as name-only for the set.
    """
    by_url = {res["url"]: vid for vid, res in resources.items()}
    compiled: dict[str, ValueSetIndex] = {}

    def build(vid: str, seen: tuple[str, ...]) -> ValueSetIndex:
        if vid in compiled:
            return compiled[vid]
        res = resources[vid]
        exact: dict[tuple[str, str], str] = {}
        is_a: dict[str, list[str]] = {}
        for inc in res.get("compose", {}).get("include", []):
            for url in inc.get("valueSet", []):
                child = build(by_url[url], seen + (vid,))
                exact.update(child.exact)
                for system, prefixes in child.is_a.items():
                    is_a.setdefault(system, []).extend(prefixes)
            system = inc.get("system", "")
            for concept in inc.get("concept", []):
                exact[(system, _normalize(system, concept["code"]))] = concept.get("display", "")
            for flt in inc.get("filter", []):
                is_a.setdefault(system, []).append(_normalize(system, flt["value"]))
        excluded = frozenset(
            (exc.get("system", ""), _normalize(exc.get("system", ""), c["code"]))
            for exc in res.get("compose", {}).get("exclude", [])
            for c in exc.get("concept", [])
        )
        names = sorted(
            {d.lower() for (s, c), d in exact.items() if s == RXNORM and d and c not in product_codes}
            | set(name_only.get(vid, []))
        )
        compiled[vid] = ValueSetIndex(
            id=vid,
            title=res.get("title", vid),
            url=res["url"],
            exact=exact,
            is_a={s: tuple(p) for s, p in is_a.items()},
            excluded=excluded,
            names=tuple((n, name_pattern(n)) for n in names),
        )
        return compiled[vid]

    for vid in resources:
        build(vid, ())
    return compiled


def compile_brands(table: dict[str, Any]) -> BrandIndex:
    return BrandIndex(Brand(row["name"], row["ingredients"][0]["rxcui"]) for row in table.get("brands", []))


def compile_products(table: dict[str, Any]) -> dict[str, Product]:
    products = {}
    for row in table.get("products", []):
        ingredients = tuple(
            Ingredient(
                rxcui=i["rxcui"],
                name=i["name"],
                strength_value=(i.get("strength") or {}).get("value"),
                strength_unit=(i.get("strength") or {}).get("unit"),
            )
            for i in row["ingredients"]
        )
        products[row["rxcui"]] = Product(
            rxcui=row["rxcui"],
            name=row["name"],
            route=row.get("route", "other"),
            dose_form=row.get("dose_form", ""),
            ingredients=ingredients,
            volume_ml=row.get("volume_ml"),
        )
    return products
