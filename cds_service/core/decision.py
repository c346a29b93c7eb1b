"""One call's decision, without IO: hook request and gathered data in, cards out.

``decide`` is the whole rule path of a service call (facts -> engine ->
cards) in one place, so the HTTP layer, the micro-benchmark and the tests run
the same code. It reads no network, no storage and no clock: the caller passes
``now``. From a Python shell::

    knowledge = load_knowledge(knowledge_dir(None))
    service = knowledge.services["back-pain-patient-view"]
    request = parse_hook_request(body, service.hook)
    decide(service, request, request.prefetch, knowledge, now).cards
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Collection

from cds_service.core.cards import IssuedCard, build_cards, fhir_version_card, item_key
from cds_service.core.engine import Finding, evaluate
from cds_service.core.facts import build_facts
from cds_service.core.fhir import pre_r4_sign
from cds_service.core.hooks import HookRequest
from cds_service.core.rules import Knowledge, Service


@dataclass(frozen=True)
class Decision:
    """The cards to answer with, what storage keeps of them, and the rules not judged."""

    cards: list[dict[str, Any]]
    issued: list[IssuedCard]
    skipped: list[str]  # rule ids whose data could not be had
    failed: list[str]  # rule ids that raised (logged by id in the engine)
    findings: list[Finding] = field(default_factory=list)  # why each card was issued (evaluate prints it)
    suppressed: list[str] = field(default_factory=list)  # rule ids not shown: overridden within the window


def decide(service: Service, hook_request: HookRequest, data: dict[str, Any], knowledge: Knowledge,
           now: datetime, *, rules_url: str | None = None,
           overridden: Collection[tuple[str, str]] = frozenset()) -> Decision:
    """The cards ``service`` answers ``hook_request`` with, given the prefetch ``data``.

    ``rules_url`` is the service's public ``/rules``: each card's source link points to its
    rule's page there (else to the guideline's URL). ``overridden`` holds (rule id, item key)
    pairs overridden for this patient within the override window (looked up by the caller): a
    warning card for one of them is not shown again. Critical and info cards always are: a
    critical finding (a red flag, a drug to avoid in anaesthesia) may be new since the override.
    """
    if sign := pre_r4_sign(hook_request.context, data):  # DSTU2/STU3: say so, never a silent all clear
        return Decision([fhir_version_card(sign, knowledge.override_reason_system)], [], [], [])
    facts = build_facts(hook_request.hook, hook_request.context, data, knowledge.terminology, now)
    outcome = evaluate(list(service.modules), facts)
    shown, suppressed = [], []
    for group in outcome.cards:
        lead = group[0]
        if lead.indicator == "warning" and (lead.rule.id, item_key(lead, knowledge.terminology)) in overridden:
            suppressed.append(lead.rule.id)
        else:
            shown.append(group)
    cards, issued = build_cards(shown, facts, knowledge.terminology, knowledge.override_reason_system, rules_url,
                                knowledge.screen)
    return Decision(cards, issued, outcome.skipped, outcome.failed, [f for g in shown for f in g], suppressed)
