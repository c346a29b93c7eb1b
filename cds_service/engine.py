"""Rule evaluation: compiled rules over one call's facts, giving findings.

Sans-IO. ``evaluate`` takes the knowledge, a service and the facts (which
carry ``now``) and returns findings in the order cards should be shown. A rule
whose data could not be had is skipped; a rule that raises is logged by id and
the other rules still run. Nothing here writes card JSON (``cards.py`` does).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .conditions import Evidence, Predicate
from .facts import Facts

log = logging.getLogger(__name__)
SEVERITY = {"critical": 0, "warning": 1, "info": 2}
ITEMS_NEED = {"active_medications": "medications"}


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


@dataclass(frozen=True)
class Reference:
    guideline_id: str
    recommendation_id: str
    label: str
    statement: str
    url: str | None = None


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
    valuesets: frozenset[str] = field(default=frozenset())  # value sets its conditions read
    remarks: str = ""  # the author's why (indicator, thresholds): shown on the rule page


@dataclass(frozen=True)
class Module:
    id: str
    title: str
    gate: Predicate
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Finding:
    rule: Rule
    indicator: str
    item: Any
    evidence: tuple[Evidence, ...]
    notes: tuple[str, ...]
    suggestions: tuple[Suggestion, ...]


@dataclass
class Outcome:
    findings: list[Finding]
    skipped: list[str]
    failed: list[str]


def evaluate(modules: list[Module], facts: Facts) -> Outcome:
    """All findings for the facts' hook, criticals first; in patient-view one info card per module."""
    outcome = Outcome([], [], [])
    for module in modules:
        if not module.gate.needs <= facts.available:
            outcome.skipped.extend(r.id for r in module.rules if facts.hook in r.hooks)
            continue
        gate = module.gate(facts, None)
        if gate is None:
            continue
        found = []
        for rule in module.rules:
            if facts.hook not in rule.hooks:
                continue
            if not rule.needs <= facts.available:
                outcome.skipped.append(rule.id)
                continue
            try:
                found.extend(_findings(rule, facts, gate))
            except Exception as exc:  # one broken rule must not hide the others' cards
                log.error("rule failed", extra={"rule_id": rule.id, "error": type(exc).__name__})
                outcome.failed.append(rule.id)
        outcome.findings.extend(_order(found, facts.hook))
    outcome.findings.sort(key=lambda f: SEVERITY[f.indicator])
    return outcome


def _order(found: list[Finding], hook: str) -> list[Finding]:
    found = sorted(found, key=lambda f: SEVERITY[f.indicator])  # stable: file order within a severity
    if hook != "patient-view":
        return found
    urgent = [f for f in found if f.indicator != "info"]
    info = [f for f in found if f.indicator == "info"]
    return urgent + info[:1]


def _items(rule: Rule, facts: Facts) -> tuple[Any, ...]:
    kind = rule.for_each.get(facts.hook)
    return getattr(facts, kind) if kind else (None,)


def _findings(rule: Rule, facts: Facts, gate: list[Evidence]) -> list[Finding]:
    findings = []
    for item in _items(rule, facts):
        evidence = rule.when(facts, item)
        if evidence is None or (rule.unless is not None and rule.unless(facts, item) is not None):
            continue
        indicator = next((ind for pred, ind in rule.indicator_when if pred(facts, item) is not None), rule.indicator)
        findings.append(
            Finding(
                rule=rule,
                indicator=indicator,
                item=item,
                evidence=tuple(dict.fromkeys(gate + evidence)),
                notes=tuple(text for pred, text in rule.notes if pred(facts, item) is not None),
                suggestions=tuple(s for s in rule.suggestions if s.when is None or s.when(facts, item) is not None),
            )
        )
    return findings
