"""Rule evaluation: compiled rules over one call's facts, giving findings.

Sans-IO. ``evaluate(modules, facts)`` takes a service's compiled modules and
the facts (which carry ``now``) and returns an ``Outcome``: the findings
grouped into cards, in the order cards should be shown, and the rule ids
skipped or failed. A group is one finding, except in patient-view, where all
the info findings of a module share one merged card (after its warnings and
criticals), so that no finding is hidden. A rule
whose data could not be had is skipped; a rule that raises is logged by id and
the other rules still run. Nothing here writes card JSON (``cards.py`` does).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from cds_service.core.conditions import Evidence
from cds_service.core.facts import Facts, FactsError
from cds_service.core.rules import Module, Rule, Suggestion

log = logging.getLogger(__name__)
SEVERITY = {"critical": 0, "warning": 1, "info": 2}


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
    cards: list[tuple[Finding, ...]]  # one group per card: a finding, or a module's merged info findings
    skipped: list[str]
    failed: list[str]
    silent: list[Finding] = field(default_factory=list)  # findings of the site's silent rules: never a card
    # Rules of a module whose gate held, skipped for data that could not be had, with the keys they
    # lacked: the clinician must be told those checks did not run (cards.checks_not_run_card).
    unchecked: list[tuple[Rule, frozenset[str]]] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for group in self.cards for f in group]


def evaluate(modules: list[Module], facts: Facts, silent: frozenset[str] = frozenset(),
             off: frozenset[str] = frozenset()) -> Outcome:
    """All findings for the facts' hook, criticals first; in patient-view a module's info findings merged.

    Rules in ``off`` are not evaluated. Findings of rules in ``silent`` go to ``Outcome.silent``
    before grouping, so that they can neither merge into a shown card nor change its order."""
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
            if facts.hook not in rule.hooks or rule.id in off:
                continue
            if not rule.needs <= facts.available:
                outcome.skipped.append(rule.id)
                outcome.unchecked.append((rule, rule.needs - facts.available))
                continue
            try:
                found.extend(_findings(rule, facts, gate))
            except FactsError:
                raise  # the record could not be read: no rule's answer can be trusted, fail the call
            except Exception as exc:  # one broken rule must not hide the others' cards
                log.error("rule failed", extra={"rule_id": rule.id, "error": type(exc).__name__})
                outcome.failed.append(rule.id)
        outcome.silent.extend(f for f in found if f.rule.id in silent)
        outcome.cards.extend(_group([f for f in found if f.rule.id not in silent], facts.hook))
    outcome.cards.sort(key=lambda group: SEVERITY[group[0].indicator])  # stable: module, then file order
    return outcome


def _group(found: list[Finding], hook: str) -> list[tuple[Finding, ...]]:
    """One card per finding; in patient-view one card for all of a module's info findings."""
    found = sorted(found, key=lambda f: SEVERITY[f.indicator])  # stable: file order within a severity
    if hook != "patient-view":
        return [(f,) for f in found]
    urgent = [(f,) for f in found if f.indicator != "info"]
    info = tuple(f for f in found if f.indicator == "info")
    return urgent + ([info] if info else [])


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
