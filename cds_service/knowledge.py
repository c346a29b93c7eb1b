"""Load, validate and compile ``knowledge/``: the only module that reads it.

At start-up ``load_knowledge`` checks every file against its JSON Schema (and
each ValueSet against FHIR R4), resolves every cross-reference (value sets,
guideline recommendations, override reasons, products used in suggestions,
unique rule ids, code sources) and compiles the rules. Any problem raises
``KnowledgeError`` listing each one with its file and path, so a broken
knowledge folder stops the service instead of silently missing cards.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import yaml
from jsonschema import Draft202012Validator

from . import discovery
from .conditions import ConditionError, Predicate, compile_condition
from .engine import ITEMS_NEED as ITEM_DATA, Action, Module, Reference, Rule, Suggestion
from .errors import KnowledgeError
from .fhir import validate_resource
from .terminology import Terminology, compile_products, compile_valuesets

_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it
CANONICAL = "https://cds-back-pain.example.org/fhir"
CODE_SOURCE = f"{CANONICAL}/StructureDefinition/code-source"
PROVENANCE = f"{CANONICAL}/StructureDefinition/valueset-provenance"
PLACEHOLDERS = {"item", "age", "findings"}
DRAFT_KINDS = {"draft_medications", "draft_service_requests"}


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str | None
    modules: tuple[Module, ...]
    prefetch: dict[str, str]


@dataclass(frozen=True)
class Knowledge:
    directory: Path
    services: dict[str, Service]
    modules: dict[str, Module]
    terminology: Terminology
    override_reason_system: str

    def summary(self) -> dict[str, Any]:
        vs = self.terminology.valuesets.values()
        return {
            "directory": str(self.directory),
            "services": len(self.services),
            "modules": len(self.modules),
            "rules": sum(len(m.rules) for m in self.modules.values()),
            "valuesets": len(self.terminology.valuesets),
            "codes": sum(len(v.codes()) for v in vs),
            "products": len(self.terminology.products),
        }


class _Problems(list[str]):
    def add(self, file: str, path: str, message: str) -> None:
        self.append(f"{file}: {path}: {message}")


def load_knowledge(directory: Path) -> Knowledge:
    """Read and compile the knowledge folder. Raises KnowledgeError naming every problem."""
    if not directory.is_dir():
        raise KnowledgeError([f"{directory}: the knowledge folder does not exist (set CDS_KNOWLEDGE_DIR)"])
    problems = _Problems()
    schemas = _schemas(directory, problems)
    sources = _read(directory / "terminology-sources.yaml", problems) or {}
    valuesets = _valuesets(directory, set((sources.get("sources") or {})), problems)
    products_file = _validated(directory / "rxnorm-products.json", schemas.get("rxnorm-products"), problems) or {}
    _check_products(products_file, set((sources.get("sources") or {})), valuesets, problems)
    thresholds = (_read(directory / "observation-thresholds.yaml", problems, optional=True) or {}).get("thresholds", {})
    services_file = _validated(directory / "services.yaml", schemas.get("services"), problems)
    guidelines = (_validated(directory / "guidelines.yaml", schemas.get("guidelines"), problems) or {}).get("guidelines", {})
    if problems:
        raise KnowledgeError(problems)

    name_only: dict[str, list[str]] = {}
    for row in products_file.get("name_only_ingredients", []):
        for vid in row.get("valuesets", []):
            name_only.setdefault(vid, []).append(row["name"].lower())
    products = compile_products(products_file)
    terminology = Terminology(compile_valuesets(valuesets, name_only, frozenset(products)), products)

    reasons = services_file["override_reasons"]
    context = _Context(terminology, thresholds, guidelines, reasons["codes"], problems)
    modules = {}
    for path in sorted((directory / "modules").glob("*.yaml")):
        data = _validated(path, schemas.get("module"), problems)
        if data is not None:
            modules[data["module"]] = context.module(path.name, data)
    _check_unique_rules(modules, problems)
    services = _services(services_file, modules, terminology, problems)
    if problems:
        raise KnowledgeError(problems)
    return Knowledge(directory, services, modules, terminology, reasons["system"])


def _read(path: Path, problems: _Problems, optional: bool = False) -> Any:
    if not path.exists():
        if not optional:
            problems.add(path.name, "$", "file is missing")
        return None
    try:
        data = path.read_bytes()
        return orjson.loads(data) if path.suffix == ".json" else yaml.load(data, Loader=_YamlLoader)
    except (ValueError, yaml.YAMLError) as exc:
        problems.add(path.name, "$", f"not valid {path.suffix[1:].upper()}: {exc}")
        return None


def _schemas(directory: Path, problems: _Problems) -> dict[str, Any]:
    validators = {}
    for name in ("module", "guidelines", "services", "rxnorm-products"):
        schema = _read(directory / "schema" / f"{name}.schema.json", problems)
        if schema is None:
            continue
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # jsonschema.SchemaError: name the schema file
            problems.add(f"schema/{name}.schema.json", "$", str(exc).splitlines()[0])
            continue
        # jsonschema-rs validates the same Draft 2020-12 schema ~30x faster than jsonschema:
        # the 2,740-row product table takes 30 ms instead of a second of start-up.
        validators[name] = jsonschema_rs.validator_for(schema)
    return validators


def _validated(path: Path, validator: Any, problems: _Problems) -> Any:
    data = _read(path, problems)
    if data is None or validator is None:
        return None
    errors = sorted((_json_path(e.instance_path), e.message) for e in validator.iter_errors(data))
    for where, message in errors:
        problems.add(f"{path.parent.name}/{path.name}", where, message)
    return None if errors else data


def _json_path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _valuesets(directory: Path, source_keys: set[str], problems: _Problems) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((directory / "valuesets").glob("*.json")):
        res = _read(path, problems)
        if res is None:
            continue
        where = f"valuesets/{path.name}"
        try:
            validate_resource(res)
        except ValueError as exc:
            problems.add(where, "$", f"not a valid FHIR R4 ValueSet: {str(exc).splitlines()[0]}")
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


def _check_sources(res: dict[str, Any], where: str, source_keys: set[str], problems: _Problems) -> None:
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


def _check_products(table: dict[str, Any], source_keys: set[str], valuesets: dict[str, Any], problems: _Problems) -> None:
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


class _Context:
    """What rule compilation needs, and where it reports problems."""

    def __init__(self, terminology: Terminology, thresholds: dict[str, Any], guidelines: dict[str, Any],
                 reasons: dict[str, str], problems: _Problems) -> None:
        self.terminology, self.thresholds, self.guidelines = terminology, thresholds, guidelines
        self.reasons, self.problems = reasons, problems

    def condition(self, spec: Any, where: str, path: str) -> Predicate:
        try:
            return compile_condition(spec, self.terminology, self.thresholds)
        except (ConditionError, KeyError, TypeError, ValueError) as exc:
            self.problems.add(where, path, f"condition: {exc}")
            return Predicate(lambda facts, item: None, frozenset(), frozenset())

    def module(self, file: str, data: dict[str, Any]) -> Module:
        where = f"modules/{file}"
        if file != f"{data['module']}.yaml":
            self.problems.add(where, "$.module", f"module '{data['module']}' must live in {data['module']}.yaml")
        if data["guideline"] not in self.guidelines:
            self.problems.add(where, "$.guideline", f"unknown guideline '{data['guideline']}'")
        gate = self.condition(data["applies_when"], where, "$.applies_when")
        rules = tuple(self.rule(data["module"], r, where, f"$.rules[{i}]") for i, r in enumerate(data["rules"]))
        return Module(data["module"], data["title"], gate, rules)

    def rule(self, module: str, data: dict[str, Any], where: str, path: str) -> Rule:
        if not data["id"].startswith(f"{module}."):
            self.problems.add(where, f"{path}.id", f"rule ids of this module start with '{module}.'")
        for_each = data.get("for_each", {})
        when = self.condition(data["when"], where, f"{path}.when")
        unless = self.condition(data["unless"], where, f"{path}.unless") if "unless" in data else None
        indicator_when = tuple(
            (self.condition(x["when"], where, f"{path}.indicator_when[{i}].when"), x["indicator"])
            for i, x in enumerate(data.get("indicator_when", []))
        )
        notes = tuple(
            (self.condition(n["when"], where, f"{path}.card.notes[{i}].when"), n["text"])
            for i, n in enumerate(data["card"].get("notes", []))
        )
        selection, suggestions = self.suggestions(data, where, path)
        self.placeholders(data["card"], where, f"{path}.card")
        predicates = [when, unless, *(p for p, _ in indicator_when), *(p for p, _ in notes),
                      *(s.when for s in suggestions)]
        predicates = [p for p in predicates if p is not None]
        needs = frozenset().union(*(p.needs for p in predicates))
        needs |= {ITEM_DATA[k] for h, k in for_each.items() if k in ITEM_DATA}
        return Rule(
            id=data["id"], module=module, title=data["title"], hooks=frozenset(data["hooks"]),
            for_each=dict(for_each), when=when, unless=unless, indicator=data["indicator"],
            indicator_when=indicator_when, summary=data["card"]["summary"], detail=data["card"]["detail"],
            notes=notes, selection=selection, suggestions=suggestions,
            links=tuple(data.get("links", [])), override_reasons=self.override_reasons(data, where, path),
            reference=self.reference(data["reference"], where, f"{path}.reference"), needs=needs,
            valuesets=frozenset().union(*(p.valuesets for p in predicates)),
            remarks=data.get("remarks", "").strip(),
        )

    def placeholders(self, card: dict[str, Any], where: str, path: str) -> None:
        texts = [card["summary"], card["detail"], *(n["text"] for n in card.get("notes", []))]
        for text in texts:
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
            except ValueError as exc:
                self.problems.add(where, path, f"bad template: {exc}")
                continue
            for name in names - PLACEHOLDERS:
                self.problems.add(where, path, f"unknown placeholder {{{name}}} (known: {sorted(PLACEHOLDERS)})")

    def suggestions(self, data: dict[str, Any], where: str, path: str) -> tuple[str | None, tuple[Suggestion, ...]]:
        spec = data.get("suggestions")
        if not spec:
            return None, ()
        on_drafts = any(data.get("for_each", {}).get(h) in DRAFT_KINDS for h in data["hooks"])
        built = []
        for i, item in enumerate(spec["items"]):
            where_item = f"{path}.suggestions.items[{i}]"
            actions = tuple(self.action(a, where, f"{where_item}.actions[{j}]", on_drafts)
                            for j, a in enumerate(item["actions"]))
            when = self.condition(item["when"], where, f"{where_item}.when") if "when" in item else None
            built.append(Suggestion(item["label"], actions, when, item.get("recommended", False)))
        if spec["selection"] == "at-most-one" and sum(s.recommended for s in built) > 1:
            self.problems.add(where, f"{path}.suggestions", "at-most-one allows one recommended suggestion")
        return spec["selection"], tuple(built)

    def action(self, spec: dict[str, Any], where: str, path: str, on_drafts: bool) -> Action:
        (kind, args), = spec.items()
        if kind == "delete_item" and not on_drafts:
            self.problems.add(where, path, "delete_item needs a rule that looks at draft orders")
        if kind == "create_medication" and args["rxcui"] not in self.terminology.products:
            self.problems.add(where, path, f"rxcui {args['rxcui']} is not in rxnorm-products.json")
        if kind == "create_service_request":
            vs = self.terminology.valuesets.get(args["valueset"])
            if vs is None or not any(code == args["code"] for (_, code) in vs.exact):
                self.problems.add(where, path, f"code {args['code']} is not in value set '{args['valueset']}'")
        return Action(kind, dict(args) if isinstance(args, dict) else {})

    def override_reasons(self, data: dict[str, Any], where: str, path: str) -> tuple[tuple[str, str], ...]:
        indicators = {data["indicator"], *(x["indicator"] for x in data.get("indicator_when", []))}
        if indicators & {"warning", "critical"} and not data.get("override_reasons"):
            self.problems.add(where, path, "a rule that can warn or be critical needs override_reasons")
        found = []
        for code in data.get("override_reasons", []):
            if code not in self.reasons:
                self.problems.add(where, f"{path}.override_reasons", f"unknown override reason '{code}'")
            else:
                found.append((code, self.reasons[code]))
        return tuple(found)

    def reference(self, ref: dict[str, str], where: str, path: str) -> Reference:
        guideline = self.guidelines.get(ref["guideline"])
        rec = (guideline or {}).get("recommendations", {}).get(ref["recommendation"])
        if rec is None:
            self.problems.add(where, path, f"unknown recommendation {ref['guideline']}#{ref['recommendation']}")
            return Reference(ref["guideline"], ref["recommendation"], "unknown", "unknown")
        return Reference(ref["guideline"], ref["recommendation"], guideline["label"], rec["statement"], guideline.get("url"))




def _check_unique_rules(modules: dict[str, Module], problems: _Problems) -> None:
    seen: dict[str, str] = {}
    for module in modules.values():
        for rule in module.rules:
            if rule.id in seen:
                problems.add(f"modules/{module.id}.yaml", rule.id, f"rule id also used in module {seen[rule.id]}")
            seen[rule.id] = module.id


def _services(data: dict[str, Any], modules: dict[str, Module], terminology: Terminology,
              problems: _Problems) -> dict[str, Service]:
    services = {}
    for i, spec in enumerate(data["services"]):
        missing = [m for m in spec["modules"] if m not in modules]
        if missing:
            problems.add("services.yaml", f"$.services[{i}].modules", f"unknown modules {missing}")
            continue
        chosen = tuple(modules[m] for m in spec["modules"])
        if spec["id"] in services:
            problems.add("services.yaml", f"$.services[{i}].id", f"duplicate service id {spec['id']}")
        services[spec["id"]] = Service(
            id=spec["id"], hook=spec["hook"], title=spec["title"], description=spec["description"],
            usage_requirements=spec.get("usage_requirements"), modules=chosen,
            prefetch=discovery.prefetch_templates(chosen, spec["hook"], terminology),
        )
    return services


def rule_table(knowledge: Knowledge) -> str:
    """The Markdown table of every rule, kept in docs/knowledge.md (a test checks it is current)."""
    hook_names = {"patient-view": "PV", "order-select": "OS", "order-sign": "SG"}
    lines = ["| id | hooks | trigger | indicator | reference |", "|---|---|---|---|---|"]
    for module in knowledge.modules.values():
        for rule in module.rules:
            hooks = " ".join(hook_names[h] for h in ("patient-view", "order-select", "order-sign") if h in rule.hooks)
            indicators = "/".join(dict.fromkeys([rule.indicator, *(i for _, i in rule.indicator_when)]))
            ref = f"{rule.reference.guideline_id}#{rule.reference.recommendation_id}"
            lines.append(f"| `{rule.id}` | {hooks} | {rule.title} | {indicators} | {ref} |")
    return "\n".join(lines) + "\n"
