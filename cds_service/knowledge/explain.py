"""Why a rule did or did not fire: each part of its conditions, as written, held or not held.

Sans-IO, for authors (``cds-service evaluate --explain``, and the case tests when a
case fails). ``explain`` walks the rule's ``when`` and ``unless`` as written in the
module file: ``all``/``any``/``not`` are followed, every other condition is compiled
on its own (with the context the rules were compiled with) and run on the same
facts, so the answer is the engine's own, part by part. Nothing here is on the
request path: the engine's compiled predicates are never wrapped or slowed.
"""
from __future__ import annotations

import json
from typing import Any

from cds_service.core.conditions import CompileContext, compile_condition
from cds_service.core.conditions.observations import why_not
from cds_service.core.facts import Facts, MedicationFact
from cds_service.core.rules import Module, Rule
from cds_service.core.terminology import Terminology

LOGIC = ("all", "any", "not")


def explain(rule: Rule, module: Module, facts: Facts, context: CompileContext) -> list[str]:
    """Lines saying, for each item the rule looks at, which condition held and which did not."""
    lines = [f"{rule.id} ({rule.title}):"]
    if facts.hook not in rule.hooks:
        return lines + [f"  not held: hook {facts.hook} not in [{', '.join(sorted(rule.hooks))}]"]
    gate = compile_condition(module.gate_spec, context)
    if not gate.needs <= facts.available or not rule.needs <= facts.available:
        missing = (gate.needs | rule.needs) - facts.available
        return lines + [f"  skipped: data not available: {', '.join(sorted(missing))}"]
    gate_held, gate_lines = _node("applies_when (module gate)", module.gate_spec, facts, None, context, 1)
    lines += gate_lines
    kind = rule.for_each.get(facts.hook)
    items = getattr(facts, kind) if kind else (None,)
    if not items:
        lines.append(f"  not held: no {str(kind).replace('_', ' ')} in this call")
    for item in items:
        depth = 1
        if item is not None:
            lines.append(f"  on {item.kind + ' ' if isinstance(item, MedicationFact) else ''}order {item.ref}: {item.name}")
            depth = 2
        when, when_lines = _node("when", rule.specs["when"], facts, item, context, depth)
        unless, unless_lines = (_node("unless", rule.specs["unless"], facts, item, context, depth)
                                if "unless" in rule.specs else (False, []))
        fires = gate_held and when and not unless
        lines += when_lines + unless_lines + [f"{'  ' * depth}=> {'fires' if fires else 'does not fire'}"]
        if fires:
            lines += _chosen(rule, facts, item, context, depth)
    return lines


def _chosen(rule: Rule, facts: Facts, item: Any, context: CompileContext, depth: int) -> list[str]:
    """For a rule that fires: why this indicator (the first indicator_when that holds wins, else
    the rule's own), which notes are shown and which suggestions are offered."""
    lines, indicator = [], None
    for key, spec in rule.specs.get("indicator_when", []):
        held, part = _node(key, spec, facts, item, context, depth)
        lines += part
        if held and indicator is None:
            indicator = key.split("(")[-1].rstrip(")")
    lines.append(f"{'  ' * depth}=> indicator {indicator or rule.indicator}"
                 + ("" if indicator else " (the rule's own: no indicator_when held)" if rule.indicator_when else ""))
    for key, spec in [*rule.specs.get("notes", []), *rule.specs.get("suggestions", [])]:
        lines += _node(f"{key} shown when", spec, facts, item, context, depth)[1]
    return lines


def _node(key: str, spec: Any, facts: Facts, item: Any, context: CompileContext, depth: int) -> tuple[bool, list[str]]:
    held, lines = _walk(spec, facts, item, context, depth + 1)
    return held, [f"{'  ' * depth}{key}: {'held' if held else 'not held'}"] + lines


def _walk(spec: Any, facts: Facts, item: Any, context: CompileContext, depth: int) -> tuple[bool, list[str]]:
    """Whether ``spec`` holds, and one line per condition under it."""
    (word, arg), = spec.items()
    pad = "  " * depth
    if word in ("all", "any"):
        parts = [_walk(part, facts, item, context, depth + 1) for part in arg]
        held = all(h for h, _ in parts) if word == "all" else any(h for h, _ in parts)
        return held, [f"{pad}{word}: {'held' if held else 'not held'}"] + [line for _, ls in parts for line in ls]
    if word == "not":
        inner, lines = _walk(arg, facts, item, context, depth + 1)
        return not inner, [f"{pad}not: {'held' if not inner else 'not held'}"] + lines
    evidence = compile_condition(spec, context)(facts, item)
    written = _flow(spec)
    if evidence is not None:
        seen = "; ".join(e.text for e in evidence) or (f"route {item.route}" if word == "route" else "")
        return True, [f"{pad}held: {written}" + (f" ({seen})" if seen else "")]
    return False, [f"{pad}not held: {written} ({_seen(word, arg, facts, item, context.terminology)})"]


def _seen(word: str, arg: Any, facts: Facts, item: Any, terminology: Terminology) -> str:
    """What the record or the order had instead, for a condition that did not hold."""
    if word in ("route", "medication", "course_days_over", "daily_dose_mg_over", "single_dose_mg_over") \
            and not isinstance(item, MedicationFact):
        return "this rule is not looking at a medication order here"
    if word == "route":
        return f"route {item.route or 'unknown'} not in [{', '.join(arg)}]"
    if word in ("medication", "procedure"):
        codes = ", ".join(code for _, code, _ in getattr(item, "codings", ())) or "no code"
        return f"{getattr(item, 'name', 'no order')} ({codes}) is not in value set {arg}"
    if word == "age_at_least":
        return f"age {facts.age_years if facts.age_years is not None else 'unknown'}, threshold {arg['years'] if isinstance(arg, dict) else arg}"
    if word == "course_days_over":
        days = item.planned_days if item.kind == "draft" else (
            (facts.today - item.start).days if item.start else None)
        return f"course {days if days is not None else 'unknown'} days, limit {arg}"
    if word in ("daily_dose_mg_over", "single_dose_mg_over"):
        value = item.daily_dose_mg if word == "daily_dose_mg_over" else item.single_dose_mg
        return f"{value if value is not None else 'unknown'} mg, limit {arg}"
    if (result := why_not(word, arg, facts, terminology)) is not None:
        return result
    vid = arg.get("valueset") if isinstance(arg, dict) else arg
    return f"nothing on the record in value set {vid}" if isinstance(vid, str) else "did not hold"


def _flow(spec: Any) -> str:
    """A condition as one line of YAML flow style, the way module files write it."""
    (word, arg), = spec.items()
    text = json.dumps(arg, separators=(", ", ": ")).replace('"', "")
    return f"{{{word}: {text}}}"
