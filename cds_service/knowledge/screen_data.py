"""Compiles ``knowledge/suggestion-screen.yaml`` (already read and schema-checked by the loader)
into the ``ScreenData`` the suggestion screen runs on, reporting every cross-reference problem:
an unknown source key, value set, state or route, a product the table lacks, and any product a
rule's suggestion can create that has no screen entry (it would be offered unchecked).
"""
from __future__ import annotations

from typing import Any, Mapping

from cds_service.core.dosing import SNOMED_ROUTES
from cds_service.core.rules import Module, Problems
from cds_service.core.screen import (
    Dosage,
    DosePart,
    DrugGroup,
    PregnancyStatus,
    ProductScreen,
    ResultFloor,
    ResultKind,
    ScreenData,
)
from cds_service.core.terminology import NameIndex, Terminology
from cds_service.core.units import unit_problem

FILE = "suggestion-screen.yaml"


def compile_screen(data: dict[str, Any], terminology: Terminology, modules: Mapping[str, Module],
                   problems: Problems) -> ScreenData:
    sources = set(data["sources"])
    _check_sources(data, sources, problems)
    valuesets = set(terminology.valuesets)
    states = {sid: (spec["valueset"], spec["label"]) for sid, spec in data["states"].items()}
    for where, vid in [*((f"states.{s}", v) for s, (v, _) in states.items()),
                       ("kidney_results", data["kidney_results"]), ("body_weight", data["body_weight"]),
                       ("pregnancy_tests", data["pregnancy_tests"]["valueset"]),
                       *((f"pregnancy_status.{k}", data["pregnancy_status"][k])
                         for k in ("valueset", "pregnant", "not_pregnant"))]:
        if vid not in valuesets:
            problems.add(FILE, where, f"unknown value set '{vid}'")
    floors = {fid: _floor(fid, spec, valuesets, problems) for fid, spec in data.get("result_floors", {}).items()}
    products = {rxcui: _product(rxcui, spec, terminology, set(states), problems, set(floors))
                for rxcui, spec in data["products"].items()}
    _check_created_products(modules, products, problems)
    names = {i.name.lower(): i.rxcui for p in terminology.products.values() for i in p.ingredients}
    recency, status = data["recency"], data["pregnancy_status"]
    return ScreenData(
        products=products,
        allergy_groups=tuple(_group(g, "allergy_groups", valuesets, problems) for g in data["allergy_groups"]),
        duplicate_classes=tuple(_group(g, "duplicate_classes", valuesets, problems) for g in data["duplicate_classes"]),
        states=states, kidney_results=data["kidney_results"], body_weight=data["body_weight"],
        kidney_days=recency["kidney_days"]["value"], child_weight_days=recency["child_weight_days"]["value"],
        recent_therapy_days=recency["recent_therapy_days"]["value"], child_under_years=data["child_under_years"],
        ingredient_names=NameIndex(names), ingredient_by_name=names,
        pregnancy_tests=data["pregnancy_tests"]["valueset"],
        pregnancy_test_days=data["pregnancy_tests"]["within_days"],
        positive=frozenset(data["pregnancy_tests"]["positive"]),
        pregnancy_status=PregnancyStatus(status["valueset"], status["pregnant"], status["not_pregnant"],
                                         status["within_days"]),
        result_floors=floors,
    )


def _check_sources(data: dict[str, Any], sources: set[str], problems: Problems) -> None:
    cited = [(f"recency.{k}", v["source"]) for k, v in data["recency"].items()]
    cited.append(("pregnancy_tests", data["pregnancy_tests"]["source"]))
    cited.append(("pregnancy_status", data["pregnancy_status"]["source"]))
    cited += [(f"{kind}.{g['id']}", g["source"]) for kind in ("allergy_groups", "duplicate_classes") for g in data[kind]]
    cited += [(f"products.{rxcui}", p["source"]) for rxcui, p in data["products"].items()]
    cited += [(f"result_floors.{fid}", f["source"]) for fid, f in data.get("result_floors", {}).items()]
    for where, key in cited:
        if key not in sources:
            problems.add(FILE, where, f"source '{key}' is not in this file's sources")


def _group(spec: dict[str, Any], kind: str, valuesets: set[str], problems: Problems) -> DrugGroup:
    for vid in [*spec["valuesets"], *spec.get("allergy_valuesets", [])]:
        if vid not in valuesets:
            problems.add(FILE, f"{kind}.{spec['id']}", f"unknown value set '{vid}'")
    return DrugGroup(spec["id"], spec["label"], frozenset(spec["valuesets"]), NameIndex(spec.get("names", [])),
                     frozenset(spec.get("allergy_valuesets", [])), spec.get("recent_days"))


def _floor(fid: str, spec: dict[str, Any], valuesets: set[str], problems: Problems) -> ResultFloor:
    kinds = []
    for kind in spec["kinds"]:
        if kind["valueset"] not in valuesets:
            problems.add(FILE, f"result_floors.{fid}", f"unknown value set '{kind['valueset']}'")
        for unit in kind["at_least"]:
            if (problem := unit_problem(unit)) is not None:
                problems.add(FILE, f"result_floors.{fid}.{kind['valueset']}", problem)
        kinds.append(ResultKind(kind["valueset"], kind["name"], dict(kind["at_least"])))
    return ResultFloor(fid, tuple(kinds), spec["within_days"])


def _product(rxcui: str, spec: dict[str, Any], terminology: Terminology, states: set[str],
             problems: Problems, floors: set[str] | frozenset[str] = frozenset()) -> ProductScreen:
    where = f"products.{rxcui}"
    for fid in spec.get("result_floors", []):
        if fid not in floors:
            problems.add(FILE, f"{where}.result_floors", f"unknown result floor '{fid}' (known: {sorted(floors)})")
    if rxcui not in terminology.products:
        problems.add(FILE, where, f"rxcui {rxcui} is not in rxnorm-products.json")
    for state in spec.get("avoid_in", []):
        if state not in states:
            problems.add(FILE, f"{where}.avoid_in", f"unknown state '{state}' (known: {sorted(states)})")
    dosage = spec.get("dosage")
    for name, each in [("dosage", dosage), *((f"other_dosages.{k}", v) for k, v in (spec.get("other_dosages") or {}).items())]:
        if each and each["route"] not in SNOMED_ROUTES:
            problems.add(FILE, f"{where}.{name}.route", f"route {each['route']} is not a SNOMED CT route the service knows")
    kidney, weight = spec.get("kidney") or {}, spec.get("weight_kg") or {}
    return ProductScreen(
        rxcui=rxcui, label=spec["label"], source=spec["source"], dosage=_dosage(dosage) if dosage else None,
        names=NameIndex(spec["names"]) if spec.get("names") else None,
        egfr_at_least=kidney.get("egfr_at_least"), kidney_required=kidney.get("required", True),
        avoid_in=tuple(spec.get("avoid_in", [])), weight_at_least=weight.get("at_least"),
        weight_below=weight.get("below"), floors=tuple(spec.get("result_floors", [])),
        other_dosages={name: _dosage(each) for name, each in (spec.get("other_dosages") or {}).items()},
    )


def _dosage(spec: dict[str, Any]) -> Dosage:
    every = spec.get("every")
    most = spec.get("max_per_day")
    parts = tuple(DosePart(p["text"], p["per_day"], tuple(p["when"]), p.get("offset_min"))
                  for p in spec.get("parts", []))
    return Dosage(spec["text"], (spec["dose"][0], spec["dose"][1]), spec["route"],
                  (every[0], every[1]) if every else None, spec.get("as_needed", False),
                  (most[0], most[1]) if most else None, parts, spec.get("once", False))


def _check_created_products(modules: Mapping[str, Module], products: Mapping[str, ProductScreen],
                            problems: Problems) -> None:
    """Every product a suggestion can create is screened: none may be offered unchecked."""
    for module in modules.values():
        for rule in module.rules:
            for suggestion in rule.suggestions:
                for action in suggestion.actions:
                    rxcui = action.args.get("rxcui") if action.kind == "create_medication" else None
                    if rxcui and rxcui not in products:
                        problems.add(FILE, "products", f"rxcui {rxcui} (created by {rule.id}) has no screen entry")
                    named = action.args.get("dosage") if rxcui in products else None
                    if rxcui and named and named not in products[rxcui].other_dosages:
                        problems.add(FILE, f"products.{rxcui}", f"no other_dosages.{named} (named by {rule.id})")
