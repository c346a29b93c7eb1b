"""Load, validate and compile ``knowledge/``: the only module that reads it.

At start-up ``load_knowledge`` checks every file against its JSON Schema (and
each ValueSet against FHIR R4), resolves every cross-reference (value sets,
guideline recommendations, override reasons, products used in suggestions,
unique rule ids, code sources) and compiles the rules. Any problem raises
``KnowledgeError`` listing each one with its file and path, so a broken
knowledge folder stops the service instead of silently missing cards.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from cds_service.core.conditions import condition_words, suggest_word
from cds_service.core.dialect import compile_dialect
from cds_service.core.dosing import PRODUCT_ROUTES, ROUTES, route_of_word
from cds_service.core.fhir import validate_resource
from cds_service.core.hooks import SUPPORTED_HOOKS
from cds_service.core.rules import Knowledge, Module, Problems, RuleCompiler, Service
from cds_service.core.screen import READS
from cds_service.core.terminology import (
    RXNORM,
    Terminology,
    ValueSetIndex,
    compile_brands,
    compile_products,
    compile_valuesets,
)
from cds_service.core.units import unit_problem
from cds_service.errors import KnowledgeError, did_you_mean
from cds_service.knowledge.release import release_of
from cds_service.knowledge.screen_data import compile_screen

_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it
CANONICAL = "https://cds-back-pain.example.org/fhir"
CODE_SOURCE = f"{CANONICAL}/StructureDefinition/code-source"
PROVENANCE = f"{CANONICAL}/StructureDefinition/valueset-provenance"


def load_knowledge(directory: Path) -> Knowledge:
    """Read and compile the knowledge folder. Raises KnowledgeError naming every problem."""
    if not directory.is_dir():
        raise KnowledgeError([f"{directory}: the knowledge folder does not exist (set CDS_KNOWLEDGE_DIR)"])
    problems = Problems()
    schemas = _schemas(directory, problems)
    sources = _read(directory / "terminology-sources.yaml", problems) or {}
    valuesets = _valuesets(directory, set((sources.get("sources") or {})), problems)
    products_file = _validated(directory / "rxnorm-products.json", schemas.get("rxnorm-products"), problems) or {}
    _check_products(products_file, set((sources.get("sources") or {})), valuesets, problems)
    brands_file = _validated(directory / "rxnorm-brands.json", schemas.get("rxnorm-brands"), problems) or {}
    dialects_file = _validated(directory / "dialects.yaml", schemas.get("dialects"), problems) or {}
    thresholds = (_read(directory / "observation-thresholds.yaml", problems, optional=True) or {}).get("thresholds", {})
    for vid, limit in thresholds.items():
        unit = (limit or {}).get("unit")
        if unit is not None and (problem := unit_problem(unit)):
            problems.add("observation-thresholds.yaml", f"thresholds.{vid}.unit", problem)
    services_file = _validated(directory / "services.yaml", schemas.get("services"), problems)
    guidelines = (_validated(directory / "guidelines.yaml", schemas.get("guidelines"), problems) or {}).get("guidelines", {})
    screen_file = _validated(directory / "suggestion-screen.yaml", schemas.get("suggestion-screen"), problems)
    _check_source_labels(guidelines, problems)
    release = release_of(directory, problems)
    if problems:
        raise KnowledgeError(problems)

    name_only: dict[str, list[str]] = {}
    for row in products_file.get("name_only_ingredients", []):
        for vid in row.get("valuesets", []):
            name_only.setdefault(vid, []).append(row["name"].lower())
    products = compile_products(products_file)
    compiled = compile_valuesets(valuesets, name_only, frozenset(products))
    _check_brands(brands_file, set((sources.get("sources") or {})), compiled, problems)
    _check_dialects(dialects_file, set((sources.get("sources") or {})), compiled, products, problems)
    if problems:
        raise KnowledgeError(problems)
    terminology = Terminology(compiled, products, compile_brands(brands_file), compile_dialect(dialects_file))

    reasons = services_file["override_reasons"]
    compiler = RuleCompiler(terminology, thresholds, guidelines, reasons["codes"], problems,
                            screen_reads=(READS, _screen_valuesets(screen_file)))
    modules, broken = {}, set()
    for path in sorted((directory / "modules").glob("*.yaml")):
        data = _validated(path, schemas.get("module"), problems)
        if data is not None:
            modules[data["module"]] = compiler.module(path.name, data)
        else:  # already reported: services naming it must not report it again as unknown
            broken.add(path.stem)
    _check_unique_rules(modules, problems)
    services = _services(services_file, modules, broken, problems)
    screen = compile_screen(screen_file, terminology, modules, problems)
    if problems:
        raise KnowledgeError(problems)
    return Knowledge(directory, services, modules, terminology, reasons["system"], compiler.conditions, release,
                     screen)


def _screen_valuesets(screen_file: dict[str, Any]) -> frozenset[str]:
    """The value sets the suggestion screen reads: a rule that creates orders reads them too (the
    pregnancy-status observation's code, not its answers: those are values, not codes to fetch)."""
    states = [spec["valueset"] for spec in screen_file["states"].values()]
    floors = [kind["valueset"] for spec in (screen_file.get("result_floors") or {}).values() for kind in spec["kinds"]]
    return frozenset([*states, screen_file["kidney_results"], screen_file["body_weight"],
                      screen_file["pregnancy_tests"]["valueset"], screen_file["pregnancy_status"]["valueset"],
                      *floors])


def _read(path: Path, problems: Problems, optional: bool = False) -> Any:
    where = f"{path.parent.name}/{path.name}" if path.parent.name in ("modules", "schema") else path.name
    if not path.exists():
        if not optional:
            problems.add(where, "$", "file is missing")
        return None
    try:
        data = path.read_bytes()
        return orjson.loads(data) if path.suffix == ".json" else yaml.load(data, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as exc:  # name the file and line, not libyaml's "<byte string>"
        mark, start = exc.problem_mark, exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "$"
        opened = f" ({exc.context} at line {start.line + 1})" if start and exc.context else ""
        problems.add(where, line, f"not valid YAML: {exc.problem}{opened}")
    except (ValueError, yaml.YAMLError) as exc:
        problems.add(where, "$", f"not valid {path.suffix[1:].upper()}: {exc}")
    return None


def _schemas(directory: Path, problems: Problems) -> dict[str, Any]:
    validators = {}
    for name in ("module", "guidelines", "services", "rxnorm-products", "rxnorm-brands", "suggestion-screen", "dialects"):
        schema = _read(directory / "schema" / f"{name}.schema.json", problems)
        if schema is None:
            continue
        _fill_vocabularies(schema)
        if not jsonschema_rs.meta.is_valid(schema):  # the fast check; jsonschema says what is wrong
            try:
                Draft202012Validator.check_schema(schema)
            except Exception as exc:  # jsonschema.SchemaError: name the schema file
                problems.add(f"schema/{name}.schema.json", "$", str(exc).splitlines()[0])
                continue
        # jsonschema-rs validates the 2,740-row product table ~30x faster than jsonschema (30 ms
        # instead of a second of start-up), and checks every file first; a file it finds wrong is
        # validated again by jsonschema, whose errors carry the schema keyword and instance that
        # an author-facing message needs.
        validators[name] = _Validators(jsonschema_rs.validator_for(schema),
                                       None if name == "rxnorm-products" else Draft202012Validator(schema))
    return validators


def _fill_vocabularies(schema: dict[str, Any]) -> None:
    """The closed vocabularies kept in code, written into the schemas that name them."""
    defs = schema.get("$defs", {})
    if "conditionWord" in defs:
        defs["conditionWord"]["enum"] = condition_words()
    if "route" in defs:
        defs["route"]["enum"] = list(ROUTES if "conditionWord" in defs or "codeMap" in defs else PRODUCT_ROUTES)


@dataclass(frozen=True)
class _Validators:
    fast: Any  # jsonschema_rs: is the file valid?
    explaining: Draft202012Validator | None  # jsonschema: what an author is told when it is not


def _validated(path: Path, validators: _Validators | None, problems: Problems) -> Any:
    data = _read(path, problems)
    if data is None or validators is None:
        return None
    try:
        if validators.fast.is_valid(data):
            return data
    except ValueError:  # jsonschema-rs takes JSON types only; YAML may give a date or a number as a key
        pass  # jsonschema judges it and names the place
    where = f"{path.parent.name}/{path.name}" if path.parent.name == "modules" else path.name
    if validators.explaining is not None:
        found = sorted(((_place(data, e.absolute_path), _message(e)) for e in validators.explaining.iter_errors(data)))
    else:
        found = sorted((_place(data, e.instance_path), e.message) for e in validators.fast.iter_errors(data))
    for place, message in dict.fromkeys(found):
        if message.startswith("missing key") and any(p == place and f"did you mean {message[12:]}" in m
                                                      for p, m in found):
            continue  # "remark" for "remarks": the unknown key's message says it all
        problems.add(where, place, message)
    return None if found else data


def _place(data: Any, parts: Any) -> str:
    """Where in a file: "rule <id>: card.summary" inside a module's rules, else a JSON path."""
    parts = list(parts)
    if len(parts) >= 2 and parts[0] == "rules" and isinstance(parts[1], int):
        rule = data["rules"][parts[1]] if isinstance(data.get("rules"), list) else None
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        head = f"rule {rule_id}" if isinstance(rule_id, str) else f"rules[{parts[1]}] (a rule with no id)"
        rest = _json_path(parts[2:])[1:].lstrip(".")
        return f"{head}: {rest}" if rest else head
    if len(parts) >= 2 and parts[0] == "products" and isinstance(parts[1], int):
        return f"products[{parts[1]}] (rxcui {data['products'][parts[1]].get('rxcui')})" + _json_path(parts[2:])[1:]
    return _json_path(parts)


def _message(error: Any) -> str:
    """A schema error as an author reads it: the key or value at fault and a near-miss to use instead."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        return _message(best_match(error.context))
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        extra = [k for k in error.instance if k not in known]
        return "; ".join(f"unknown key '{k}'{did_you_mean(k, known)} (allowed: {', '.join(known)})" for k in extra)
    if error.validator == "enum":
        words = [str(v) for v in error.validator_value]
        hint = suggest_word(error.instance) if "observation_below" in words else did_you_mean(error.instance, words)
        if not hint and set(ROUTES) <= set(error.validator_value) and isinstance(error.instance, str):
            if implied := route_of_word(error.instance):
                hint = f" (did you mean '{implied}'? {error.instance} orders count as {implied})"
        return f"{error.instance!r} is not one of: {', '.join(map(str, error.validator_value))}{hint}"
    if error.validator == "propertyNames":
        return _message(error.context[0]) if error.context else error.message
    if error.validator == "required":
        return f"missing key {error.message.split(' is a required')[0]}"
    if error.validator == "type" and error.validator_value == "array" and isinstance(error.instance, str):
        return f"takes a list, e.g. [{error.instance}], not the word {error.instance!r}"
    if error.validator == "maxLength" and isinstance(error.instance, str):
        return f"{len(error.instance)} characters, more than {error.validator_value}"
    return str(error.message)


def _json_path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _valuesets(directory: Path, source_keys: set[str], problems: Problems) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((directory / "valuesets").glob("*.json")):
        res = _read(path, problems)
        if res is None:
            continue
        where = f"valuesets/{path.name}"
        try:
            validate_resource(res)
        except ValueError as exc:
            for place, message in _fhir_errors(exc):
                problems.add(where, place, f"not a valid FHIR R4 ValueSet: {message}")
            continue
        if res.get("id") != path.stem or res.get("url") != f"{CANONICAL}/ValueSet/{path.stem}":
            problems.add(where, "$.id", f"id must be '{path.stem}' and url '{CANONICAL}/ValueSet/{path.stem}'")
        if not any(e.get("url") == PROVENANCE for e in res.get("extension", [])):
            problems.add(where, "$.extension", "the provenance extension (how the set was built) is missing")
        _check_sources(res, where, source_keys, problems)
        found[path.stem] = res
    urls = {res["url"] for res in found.values()}
    for vid, res in found.items():
        for i, inc in enumerate(res.get("compose", {}).get("include", [])):
            for url in inc.get("valueSet", []):
                if url not in urls:
                    problems.add(f"valuesets/{vid}.json", f"$.compose.include[{i}].valueSet", f"unknown value set {url}")
    return found


def _fhir_errors(exc: ValueError) -> list[tuple[str, str]]:
    """Where a FHIR resource failed and why, from pydantic's errors (the first three); the
    message alone when there are none."""
    cause: Any = exc.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else []
    found = []
    for error in errors[:3]:
        parts = [p for p in error.get("loc", ()) if p != "__root__"]
        value = error.get("input")
        shown = f" (found {value!r})" if isinstance(value, (str, int, float)) else ""
        message = error.get("msg", "invalid")
        if isinstance(value, str) and error.get("type") in ("json_invalid", "model_type", "dict_type"):
            message = f"an object is expected here, not the bare string {value!r}"
            shown = f' (e.g. {{"code": "{value}", "display": "..."}})' if parts and parts[-1] != "compose" else ""
        found.append((_json_path(parts), f"{message}{shown}"))
    return found or [("$", str(exc).splitlines()[0])]


def _check_sources(res: dict[str, Any], where: str, source_keys: set[str], problems: Problems) -> None:
    for part in ("include", "exclude"):
        for i, inc in enumerate(res.get("compose", {}).get(part, [])):
            for kind in ("concept", "filter"):
                for j, element in enumerate(inc.get(kind, [])):
                    keys = [
                        k.strip()
                        for ext in element.get("extension", [])
                        if ext.get("url") == CODE_SOURCE
                        for k in ext.get("valueString", "").split(",")
                    ]
                    path = f"$.compose.{part}[{i}].{kind}[{j}]"
                    if not keys:
                        problems.add(where, path, "no code-source extension: every code needs its source")
                    for key in keys:
                        if key not in source_keys:
                            problems.add(where, path, f"source '{key}' is not in terminology-sources.yaml")


def _check_products(table: dict[str, Any], source_keys: set[str], valuesets: dict[str, Any], problems: Problems) -> None:
    seen = set()
    for i, row in enumerate(table.get("products", [])):
        path = f"$.products[{i}]"  # the schema has checked the row's shape already
        if row["rxcui"] in seen:
            problems.add("rxnorm-products.json", path, f"duplicate rxcui {row['rxcui']}")
        seen.add(row["rxcui"])
        for key in row["sources"]:
            if key not in source_keys:
                problems.add("rxnorm-products.json", path, f"source '{key}' is not in terminology-sources.yaml")
    for i, row in enumerate(table.get("name_only_ingredients", [])):
        for vid in row.get("valuesets", []):
            if vid not in valuesets:
                problems.add("rxnorm-products.json", f"$.name_only_ingredients[{i}]", f"unknown value set '{vid}'")


# A card credits its source by the guideline's label: one that is not a guideline summary says what it is.
LABEL_WORDS = {"local": "local", "expert-opinion": "expert opinion"}


def _check_source_labels(guidelines: dict[str, Any], problems: Problems) -> None:
    for gid, spec in guidelines.items():
        kind = spec.get("kind", "guideline-summary")
        if kind in LABEL_WORDS and LABEL_WORDS[kind] not in spec["label"].lower():
            problems.add("guidelines.yaml", f"guideline {gid}: label",
                         f"a {kind} source's label must say '{LABEL_WORDS[kind]}': cards show it as their source")


def _check_brands(
    table: dict[str, Any], source_keys: set[str], valuesets: dict[str, ValueSetIndex], problems: Problems
) -> None:
    """Each brand's ingredient must be in every value set it names: a brand maps to a drug the
    knowledge already has, never to a new one."""
    for i, row in enumerate(table.get("brands", [])):
        path = f"$.brands[{i}]"
        ingredient = row["ingredients"][0]["rxcui"]
        for vid in row["valuesets"]:
            if vid not in valuesets:
                problems.add("rxnorm-brands.json", path, f"unknown value set '{vid}'")
            elif not valuesets[vid].contains(RXNORM, ingredient):
                problems.add("rxnorm-brands.json", path, f"ingredient {ingredient} is not in value set '{vid}'")
        for key in row["sources"]:
            if key not in source_keys:
                problems.add("rxnorm-brands.json", path, f"source '{key}' is not in terminology-sources.yaml")


def _check_unique_rules(modules: dict[str, Module], problems: Problems) -> None:
    seen: dict[str, str] = {}
    for module in modules.values():
        for rule in module.rules:
            if rule.id in seen:
                problems.add(f"modules/{module.id}.yaml", f"rule {rule.id}", f"rule id also used in module {seen[rule.id]}")
            seen[rule.id] = module.id


def _services(data: dict[str, Any], modules: dict[str, Module], broken: set[str],
              problems: Problems) -> dict[str, Service]:
    services = {}
    for spec in data["services"]:
        missing = [m for m in spec["modules"] if m not in modules]
        for name in missing:
            if name not in broken:
                problems.add("services.yaml", f"service {spec['id']}: modules",
                             f"no module '{name}' in modules/{did_you_mean(name, modules)}")
        if missing:
            continue
        chosen = tuple(modules[m] for m in spec["modules"])
        if spec["id"] in services:
            problems.add("services.yaml", f"service {spec['id']}", "duplicate service id")
        services[spec["id"]] = Service(
            id=spec["id"], hook=spec["hook"], title=spec["title"], description=spec["description"],
            usage_requirements=spec.get("usage_requirements"), modules=chosen,
            required_prefetch=frozenset().union(*(m.gate.needs for m in chosen)),
        )
    return services


def rule_table(knowledge: Knowledge) -> str:
    """The Markdown table of every rule, kept in docs/knowledge.md (a test checks it is current)."""
    hook_names = {"patient-view": "PV", "order-select": "OS", "order-sign": "SG"}
    lines = ["| id | hooks | trigger | indicator | reference |", "|---|---|---|---|---|"]
    for module in knowledge.modules.values():
        for rule in module.rules:
            hooks = " ".join(hook_names[h] for h in SUPPORTED_HOOKS if h in rule.hooks)
            indicators = "/".join(dict.fromkeys([rule.indicator, *(i for _, i in rule.indicator_when)]))
            ref = f"{rule.reference.guideline_id}#{rule.reference.recommendation_id}"
            lines.append(f"| `{rule.id}` | {hooks} | {rule.title} | {indicators} | {ref} |")
    return "\n".join(lines) + "\n"


def _check_dialects(
    table: dict[str, Any], source_keys: set[str], valuesets: dict[str, ValueSetIndex], products: dict[str, Any],
    problems: Problems,
) -> None:
    """dialects.yaml beyond its schema: every source listed, every value set, ingredient name and
    product it names known, so that an alias can never point at nothing."""
    where = "dialects.yaml"
    names = {name for vs in valuesets.values() for name, _ in vs.names}
    sourced = [("$.code_systems", table.get("code_systems", [])), ("$.routes.codes", table.get("routes", {}).get("codes", [])),
               ("$.dose_units.codes", table.get("dose_units", {}).get("codes", [])),
               ("$.conditions.text", table.get("conditions", {}).get("text", [])),
               ("$.medication_names", table.get("medication_names", [])), ("$.ndc", table.get("ndc", []))]
    for path, rows in sourced:
        for i, row in enumerate(rows):
            if row.get("source") not in source_keys:
                problems.add(where, f"{path}[{i}]", f"source '{row.get('source')}' is not in terminology-sources.yaml")
    for part in ("routes", "dose_units"):
        words = table.get(part, {}).get("words", {})
        if words and words.get("source") not in source_keys:
            problems.add(where, f"$.{part}.words", f"source '{words.get('source')}' is not in terminology-sources.yaml")
    for vid in table.get("conditions", {}).get("remission_counts_for", []):
        if vid not in valuesets:
            problems.add(where, "$.conditions.remission_counts_for", f"unknown value set '{vid}'")
    for vid in table.get("conditions", {}).get("encounter_diagnosis_recent_days_for", {}):
        if vid not in valuesets:
            problems.add(where, "$.conditions.encounter_diagnosis_recent_days_for", f"unknown value set '{vid}'")
    for i, row in enumerate(table.get("medication_names", [])):
        for name in row.get("means", []):
            if name.lower() not in names:
                problems.add(where, f"$.medication_names[{i}]", f"'{name}' is no ingredient name a value set matches")
        if row.get("rxcui") and row["rxcui"] not in products:
            problems.add(where, f"$.medication_names[{i}]", f"rxcui {row['rxcui']} is not in rxnorm-products.json")
    for i, row in enumerate(table.get("ndc", [])):
        if row["rxcui"] not in products:
            problems.add(where, f"$.ndc[{i}]", f"rxcui {row['rxcui']} is not in rxnorm-products.json")
