"""Rows of knowledge/rxnorm-products.json, built from an RxNorm release instead of by hand.

Input: the RRF files of an RxNorm release, as NLM publishes them on the "RxNorm Files" page
(https://www.nlm.nih.gov/research/umls/rxnorm/docs/rxnormfiles.html). The "Current Prescribable
Content" release needs no UMLS licence and is what the table was built from (source key RXP in
knowledge/terminology-sources.yaml); the full monthly release works the same. Unzip it and point
``--rrf`` at its ``rrf/`` folder. Two files are read, pipe-separated, one row a line:

- ``RXNCONSO.RRF`` (concept names): RXCUI|LAT|TS|LUI|STT|SUI|ISPREF|RXAUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|
  rows with SAB = RXNORM give each concept's term type (IN, SCDC, SCD, SBD, DF) and name.
- ``RXNREL.RRF`` (relationships): RXCUI1|RXAUI1|STYPE1|REL|RXCUI2|RXAUI2|STYPE2|RELA|RUI|SRUI|SAB|SL|DIR|RG|SUPPRESS|CVF|
  the links ingredient (IN) - component (SCDC) - clinical drug (SCD) - branded drug (SBD).

Each link is followed by the term types at its two ends, never by the direction of its label,
so the walk does not depend on how a release words RELA. For one ingredient the builder gives
every SCD containing it and every SBD of those, with all their ingredients, the strength of each
as written in the component's name ("vancomycin 125 MG" -> 125 mg), the dose form (the words
after the last strength of the clinical drug's name, "Oral Capsule"), the volume
("100 ML ... Injection"), and the route the dose form implies (dosing.route_of_word; "other"
when none does). ``cds-service knowledge add-products`` merges them into the table, sorted by
RXCUI, and keeps the change only if the whole knowledge folder still loads.

Brands (``cds-service knowledge add-brand``, the kept build of rxnorm-brands.json): RxNorm links an
ingredient to each brand name (TTY BN) it is sold under (has_tradename / tradename_of) and each
brand name to its branded drugs (SBD). A brand is added only when it links to this one ingredient.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from cds_service.core.dosing import route_of_word

UNITS = {"MG": "mg", "ML": "mL", "UNT": "[iU]", "ACTUAT": "actuat", "HR": "h", "MEQ": "meq", "MCG": "ug"}
STRENGTH = re.compile(r"^(?P<name>.+?) (?P<value>\d+(?:\.\d+)?) (?P<unit>[A-Z]+(?:/[A-Z]+)?)$")
DOSE_FORM = re.compile(r" \d+(?:\.\d+)? [A-Z]+(?:/[A-Z]+)? (?P<form>[A-Z][A-Za-z ]+)$")
VOLUME = re.compile(r"^(?P<ml>\d+(?:\.\d+)?) ML ")


class RrfError(ValueError):
    """The RRF folder is missing a file or the ingredient is not in it."""


@dataclass
class Release:
    """The concepts (term type, name) and the links between them of one RxNorm release."""

    concepts: dict[str, tuple[str, str]] = field(default_factory=dict)
    links: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def linked(self, rxcui: str, tty: str) -> list[str]:
        return sorted(c for c in self.links[rxcui] if self.concepts.get(c, ("", ""))[0] == tty)

    def tty(self, rxcui: str) -> str:
        return self.concepts.get(rxcui, ("", ""))[0]

    def name(self, rxcui: str) -> str:
        return self.concepts[rxcui][1]


def _rows(path: Path) -> Iterator[list[str]]:
    if not path.exists():
        raise RrfError(f"{path} is missing: point --rrf at the rrf/ folder of an RxNorm release")
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            yield line.rstrip("\n").split("|")


def read_release(directory: Path) -> Release:
    release = Release()
    wanted = {"IN", "SCDC", "SCD", "SBD", "BN"}
    for row in _rows(directory / "RXNCONSO.RRF"):
        rxcui, sab, tty, name, suppress = row[0], row[11], row[12], row[14], row[16]
        if sab == "RXNORM" and tty in wanted and suppress in ("N", ""):
            release.concepts[rxcui] = (tty, name)
    for row in _rows(directory / "RXNREL.RRF"):
        one, two, sab = row[0], row[4], row[10]
        if sab == "RXNORM" and one in release.concepts and two in release.concepts:
            release.links[one].add(two)
            release.links[two].add(one)
    return release


def products_for(release: Release, ingredient: str, source: str) -> list[dict[str, Any]]:
    """Every SCD with the ingredient, and their SBDs, as rows of the product table."""
    if release.tty(ingredient) != "IN":
        raise RrfError(f"RXCUI {ingredient} is not an ingredient (TTY IN) in this release")
    clinical = sorted({scd for scdc in release.linked(ingredient, "SCDC") for scd in release.linked(scdc, "SCD")})
    rows = []
    for scd in clinical:
        ingredients = [_component(release, scdc) for scdc in release.linked(scd, "SCDC")]
        form = match["form"] if (match := DOSE_FORM.search(release.name(scd))) else None
        for rxcui in [scd, *release.linked(scd, "SBD")]:
            rows.append(_row(release, rxcui, form, ingredients, source))
    return sorted(rows, key=lambda r: int(r["rxcui"]))


def brands_for(release: Release, ingredient: str, valuesets: list[str], source: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of rxnorm-brands.json for an ingredient, from RxNorm's brand relations (IN - BN,
    has_tradename; BN - SBD): each brand name (TTY BN) that names this ingredient and no other,
    with its branded products; and the names of brands left out because they name two or more
    ingredients (a combination product's brand must never map to one of its ingredients)."""
    if release.tty(ingredient) != "IN":
        raise RrfError(f"RXCUI {ingredient} is not an ingredient (TTY IN) in this release")
    rows, left_out = [], []
    for brand in release.linked(ingredient, "BN"):
        if release.linked(brand, "IN") != [ingredient]:
            left_out.append(release.name(brand))
            continue
        sbds = [{"rxcui": sbd, "name": release.name(sbd)} for sbd in sorted(release.linked(brand, "SBD"), key=int)]
        rows.append({"rxcui": brand, "tty": "BN", "name": release.name(brand),
                     "ingredients": [{"rxcui": ingredient, "name": release.name(ingredient)}],
                     "valuesets": sorted(valuesets), "sbds": sbds, "sources": [source]})
    return sorted(rows, key=lambda r: int(r["rxcui"])), sorted(left_out)


def merge_brands(table: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str], list[str]]:
    """The brand table with ``rows`` added, sorted by name as the file keeps it; the names added and
    those already there."""
    have = {row["rxcui"] for row in table["brands"]}
    added = [row for row in rows if row["rxcui"] not in have]
    brands = sorted(table["brands"] + added, key=lambda r: r["name"].lower())
    return {**table, "brands": brands}, [r["name"] for r in added], sorted(r["name"] for r in rows if r["rxcui"] in have)


def _component(release: Release, scdc: str) -> dict[str, Any]:
    ins = release.linked(scdc, "IN")
    if not ins:
        raise RrfError(f"component {scdc} ({release.name(scdc)}) links to no ingredient")
    found: dict[str, Any] = {"rxcui": ins[0], "name": release.name(ins[0])}
    if match := STRENGTH.match(release.name(scdc)):
        unit = "/".join(UNITS.get(part, part.lower()) for part in match["unit"].split("/"))
        found["strength"] = {"value": _number(match["value"]), "unit": unit}
    return found


def _row(release: Release, rxcui: str, form: str | None, ingredients: list[dict[str, Any]],
         source: str) -> dict[str, Any]:
    name = release.name(rxcui)
    row: dict[str, Any] = {"rxcui": rxcui, "tty": release.tty(rxcui), "name": name,
                           "route": route_of_word(form or name) or "other"}
    if form:
        row["dose_form"] = form
    if volume := VOLUME.match(name):
        row["volume_ml"] = _number(volume["ml"])
    row["ingredients"] = ingredients
    row["sources"] = [source]
    return row


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() else value


def merge(table: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str], list[str]]:
    """The table with ``rows`` added, sorted by RXCUI; and the RXCUIs added and those already there."""
    have = {row["rxcui"] for row in table["products"]}
    added = [row for row in rows if row["rxcui"] not in have]
    products = sorted(table["products"] + added, key=lambda r: int(r["rxcui"]))
    kept = sorted(have & {row["rxcui"] for row in rows})
    return {**table, "products": products}, [r["rxcui"] for r in added], kept


def dump(table: dict[str, Any]) -> str:
    """The table as the file keeps it: one product a line, so a diff shows the rows added."""
    head = json.dumps({k: v for k, v in table.items() if k != "products"}, indent=2, ensure_ascii=False)
    rows = ",\n".join("    " + json.dumps(row, ensure_ascii=False) for row in table["products"])
    return head[:-2] + ',\n  "products": [\n' + rows + "\n  ]\n}\n"
