"""Compiled rules: the dataclasses the engine runs, and the compiler that builds them.

``RuleCompiler`` turns one module's validated YAML into a ``Module`` of
``Rule`` objects: conditions compiled to predicates, suggestions checked
against the product table and value sets, references resolved against the
guidelines. Every problem is added to ``Problems`` (file, JSON path, message)
rather than raised, so one start-up names them all. Reading the files and
checking their schemas is ``knowledge.py``'s job.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds_service.core.conditions import CompileContext, ConditionError, Predicate, compile_condition
from cds_service.core.screen import ScreenData
from cds_service.core.terminology import Terminology
from cds_service.errors import did_you_mean

PLACEHOLDERS = {"item", "age", "findings"}
DRAFT_KINDS = {"draft_medications", "draft_service_requests"}
# A rule that walks a list of facts needs the prefetch key that list comes from.
ITEMS_NEED = {"active_medications": "medications"}


class Problems(list[str]):
    """Knowledge problems, each as ``file: path: message``."""

    def add(self, file: str, path: str, message: str) -> None:
        self.append(f"{file}: {path.rstrip(':')}: {message}")


@dataclass(frozen=True)
class Action:
    kind: str  # delete_item | create_medication | create_service_request
    args: dict[str, Any]


@dataclass(frozen=True)
class Suggestion:
    label: str
    actions: tuple[Action, ...]
    when: Predicate | None = None
    recommended: bool = False
    for_children: bool = False  # its products and doses fit patients under 18 too (cards.ADULT_AGE)


@dataclass(frozen=True)
class Reference:
    guideline_id: str
    recommendation_id: str
    label: str
    statement: str
    url: str | None = None
    kind: str = "guideline-summary"  # or local / expert-opinion (guidelines.yaml): the card's label says which


@dataclass(frozen=True)
class Rule:
    id: str
    module: str
    title: str
    hooks: frozenset[str]
    for_each: dict[str, str]
    when: Predicate
    unless: Predicate | None
    indicator: str
    indicator_when: tuple[tuple[Predicate, str], ...]
    summary: str
    detail: str
    notes: tuple[tuple[Predicate, str], ...]
    selection: str | None
    suggestions: tuple[Suggestion, ...]
    links: tuple[dict[str, str], ...]
    override_reasons: tuple[tuple[str, str], ...]
    reference: Reference
    needs: frozenset[str] = field(default=frozenset())  # prefetch keys its conditions read
    wants: frozenset[str] = field(default=frozenset())  # keys read when present, else taken as empty
    valuesets: frozenset[str] = field(default=frozenset())  # value sets its conditions read
    remarks: str = ""  # the author's why (indicator, thresholds): shown on the rule page
    # The conditions as written ({"when": ..., "unless": ...}): explain.py re-reads them to say
    # which part held and which did not, without the engine's predicates paying for it.
    specs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Module:
    id: str
    title: str
    gate: Predicate
    rules: tuple[Rule, ...]
    gate_spec: Any = None  # applies_when as written (explain.py)


def _todos(data: Any, key: str = "") -> list[str]:
    """The keys whose text still holds a skeleton's TODO."""
    if isinstance(data, dict):
        return [k for name, value in data.items() for k in _todos(value, f"{key}.{name}" if key else name)]
    if isinstance(data, list):
        return [k for i, value in enumerate(data) for k in _todos(value, f"{key}[{i}]")]
    return [key] if isinstance(data, str) and "TODO" in data else []


def _specs(data: dict[str, Any]) -> dict[str, Any]:
    """The conditions as written, for explain: when, unless, and the labelled ones that choose
    the indicator, the notes and the suggestions."""
    specs: dict[str, Any] = {key: data[key] for key in ("when", "unless") if key in data}
    specs["indicator_when"] = [(f"indicator_when[{i}] ({x['indicator']})", x["when"])
                               for i, x in enumerate(data.get("indicator_when", []))]
    specs["notes"] = [(f"card.notes[{i}]", n["when"]) for i, n in enumerate(data["card"].get("notes", []))]
    specs["suggestions"] = [(f"suggestion '{item['label']}'", item["when"])
                            for item in (data.get("suggestions") or {}).get("items", []) if "when" in item]
    return specs


class RuleCompiler:
    """Turns validated module YAML into ``Module``/``Rule`` objects, reporting every problem found."""

    def __init__(self, terminology: Terminology, thresholds: dict[str, Any], guidelines: dict[str, Any],
                 reasons: dict[str, str], problems: Problems,
                 screen_reads: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())) -> None:
        self.terminology, self.guidelines = terminology, guidelines
        # What the suggestion screen reads (prefetch keys, value sets): a rule that can create a
        # medication order reads it too, so discovery asks for it on that rule's hooks.
        self.screen_reads = screen_reads
        self.conditions = CompileContext(terminology, thresholds)
        self.reasons, self.problems = reasons, problems

    def condition(self, spec: Any, where: str, path: str) -> Predicate:
        try:
            return compile_condition(spec, self.conditions)
        except ConditionError as exc:  # the key path inside the condition, then the fix
            self.problems.add(where, f"{path}.{exc.where}" if exc.where else path, exc.message)
            return Predicate(lambda facts, item: None, frozenset(), frozenset())
        except (KeyError, TypeError, ValueError) as exc:
            self.problems.add(where, path, str(exc))
            return Predicate(lambda facts, item: None, frozenset(), frozenset())

    def module(self, file: str, data: dict[str, Any]) -> Module:
        where = f"modules/{file}"
        if file != f"{data['module']}.yaml":
            self.problems.add(where, "module", f"module '{data['module']}' must live in {data['module']}.yaml")
        if data["guideline"] not in self.guidelines:
            self.problems.add(where, "guideline", f"unknown guideline '{data['guideline']}'{did_you_mean(data['guideline'], self.guidelines)}")
        gate = self.condition(data["applies_when"], where, "applies_when")
        rules = tuple(self.rule(data["module"], r, where, f"rule {r['id']}:") for r in data["rules"])
        return Module(data["module"], data["title"], gate, rules, data["applies_when"])

    def rule(self, module: str, data: dict[str, Any], where: str, path: str) -> Rule:
        if not data["id"].startswith(f"{module}."):
            self.problems.add(where, f"{path} id", f"rule ids of this module start with '{module}.'")
        for_each = data.get("for_each", {})
        when = self.condition(data["when"], where, f"{path} when")
        unless = self.condition(data["unless"], where, f"{path} unless") if "unless" in data else None
        indicator_when = tuple(
            (self.condition(x["when"], where, f"{path} indicator_when[{i}].when"), x["indicator"])
            for i, x in enumerate(data.get("indicator_when", []))
        )
        notes = tuple(
            (self.condition(n["when"], where, f"{path} card.notes[{i}].when"), n["text"])
            for i, n in enumerate(data["card"].get("notes", []))
        )
        selection, suggestions = self.suggestions(data, where, path)
        self.placeholders(data["card"], where, f"{path} card")
        for key in _todos(data):
            self.problems.add(where, f"{path} {key}", "still says TODO: fill it in (cds-service knowledge new-rule left it)")
        predicates = [p for p in (when, unless, *(p for p, _ in indicator_when), *(p for p, _ in notes),
                                  *(s.when for s in suggestions)) if p is not None]
        needs = frozenset().union(*(p.needs for p in predicates))
        needs |= {ITEMS_NEED[k] for h, k in for_each.items() if k in ITEMS_NEED}
        wants = frozenset().union(*(p.wants for p in predicates))
        valuesets = frozenset().union(*(p.valuesets for p in predicates))
        if any(a.kind == "create_medication" for s in suggestions for a in s.actions):
            wants, valuesets = wants | self.screen_reads[0], valuesets | self.screen_reads[1]
        return Rule(
            id=data["id"], module=module, title=data["title"], hooks=frozenset(data["hooks"]),
            for_each=dict(for_each), when=when, unless=unless, indicator=data["indicator"],
            indicator_when=indicator_when, summary=data["card"]["summary"], detail=data["card"]["detail"],
            notes=notes, selection=selection, suggestions=suggestions,
            links=tuple(data.get("links", [])), override_reasons=self.override_reasons(data, where, path),
            reference=self.reference(data["reference"], where, f"{path} reference"), needs=needs,
            remarks=data.get("remarks", "").strip(), wants=wants, valuesets=valuesets,
            specs=_specs(data),
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
            where_item = f"{path} suggestions.items[{i}]"
            actions = tuple(self.action(a, where, f"{where_item}.actions[{j}]", on_drafts)
                            for j, a in enumerate(item["actions"]))
            when = self.condition(item["when"], where, f"{where_item}.when") if "when" in item else None
            built.append(Suggestion(item["label"], actions, when, item.get("recommended", False),
                                    item.get("for_children", False)))
        if spec["selection"] == "at-most-one" and sum(s.recommended for s in built) > 1:
            self.problems.add(where, f"{path} suggestions", "at-most-one allows one recommended suggestion")
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
                self.problems.add(where, f"{path} override_reasons", f"unknown override reason '{code}'{did_you_mean(code, self.reasons)}")
            else:
                found.append((code, self.reasons[code]))
        return tuple(found)

    def reference(self, ref: dict[str, str], where: str, path: str) -> Reference:
        guideline = self.guidelines.get(ref["guideline"]) or {}
        rec = guideline.get("recommendations", {}).get(ref["recommendation"])
        if rec is None:
            hint = did_you_mean(ref["recommendation"], guideline.get("recommendations", {})) if guideline else \
                did_you_mean(ref["guideline"], self.guidelines)
            self.problems.add(where, path, f"unknown recommendation {ref['guideline']}#{ref['recommendation']}{hint}")
            return Reference(ref["guideline"], ref["recommendation"], "unknown", "unknown")
        return Reference(ref["guideline"], ref["recommendation"], guideline["label"], rec["statement"],
                         guideline.get("url"), guideline.get("kind", "guideline-summary"))


# ---------------------------------------------------------------- the compiled knowledge

@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str | None
    modules: tuple[Module, ...]
    # Keys the module gates read: without them no rule can be judged, so a call lacking one is a 412.
    required_prefetch: frozenset[str]


@dataclass(frozen=True)
class Knowledge:
    directory: Path
    services: dict[str, Service]
    modules: dict[str, Module]
    terminology: Terminology
    override_reason_system: str
    conditions: CompileContext | None = None  # what the rules were compiled with (explain.py re-uses it)
    # The release identity: the declared version (release.yaml) + a hash of every file, e.g.
    # "2026.12.0+sha256.1f2e3d4c5b6a": two folders with the same release hold the same rules.
    release: str = ""
    screen: ScreenData | None = None  # what every one-click medication order is checked against

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
            "release": self.release,
        }
