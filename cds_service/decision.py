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
from typing import Any

from .cards import IssuedCard, build_cards, fhir_version_card
from .engine import Finding, evaluate
from .facts import build_facts
from .fhir import pre_r4_sign
from .hooks import HookRequest
from .knowledge import Knowledge, Service


@dataclass(frozen=True)
class Decision:
    """The cards to answer with, what storage keeps of them, and the rules not judged."""

    cards: list[dict[str, Any]]
    issued: list[IssuedCard]
    skipped: list[str]  # rule ids whose data could not be had
    failed: list[str]  # rule ids that raised (logged by id in the engine)
    findings: list[Finding] = field(default_factory=list)  # why each card was issued (evaluate prints it)


def decide(service: Service, hook_request: HookRequest, data: dict[str, Any], knowledge: Knowledge,
           now: datetime, *, rules_url: str | None = None) -> Decision:
    """The cards ``service`` answers ``hook_request`` with, given the prefetch ``data``.

    ``rules_url`` is where a card's source link points when its guideline has no URL
    (the service's public ``/rules``); without it such cards carry no URL.
    """
    if sign := pre_r4_sign(hook_request.context, data):  # DSTU2/STU3: say so, never a silent all clear
        return Decision([fhir_version_card(sign, knowledge.override_reason_system)], [], [], [])
    facts = build_facts(hook_request.hook, hook_request.context, data, knowledge.terminology, now)
    outcome = evaluate(list(service.modules), facts)
    cards, issued = build_cards(outcome.findings, facts, knowledge.terminology,
                                knowledge.override_reason_system, rules_url)
    return Decision(cards, issued, outcome.skipped, outcome.failed, outcome.findings)
