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
from typing import Any, Collection, Mapping

from cds_service.core.cards import (
    CHECKS_NOT_RUN_TOPIC,
    FHIR_VERSION_TOPIC,
    build_cards,
    checks_not_run_card,
    fhir_version_card,
    item_key,
)
from cds_service.core.engine import Finding, evaluate
from cds_service.core.facts import build_facts
from cds_service.core.fhir import pre_r4_sign
from cds_service.core.hooks import HookRequest
from cds_service.core.issued import IssuedCard, SilentFinding
from cds_service.core.rules import Knowledge, Service
from cds_service.core.silencing import silenced
from cds_service.core.site import NO_SITE, SitePolicy


@dataclass(frozen=True)
class Decision:
    """The cards to answer with, what storage keeps of them, and the rules not judged."""

    cards: list[dict[str, Any]]
    issued: list[IssuedCard]
    skipped: list[str]  # rule ids whose data could not be had
    failed: list[str]  # rule ids that raised (logged by id in the engine)
    findings: list[Finding] = field(default_factory=list)  # why each card was issued (evaluate prints it)
    suppressed: list[str] = field(default_factory=list)  # rule ids not shown: overridden within the window
    silent: list[SilentFinding] = field(default_factory=list)  # the site's silent rules' findings
    held_back: list[tuple[str, str]] = field(default_factory=list)  # (rule id, item key) of the suppressed cards, for storage
    not_run: list[str] = field(default_factory=list)  # prefetch keys whose lack kept checks from running
    notices: list[str] = field(default_factory=list)  # topic codes of the cards no rule issued (logged)

    def answered(self) -> list[tuple[str, str]]:
        """(topic code, indicator) of every card answered, for the metrics: the issued cards, then
        the checks-not-run card, which storage does not keep."""
        shown = [(card.rule_id, card.indicator) for card in self.issued]
        return shown + [(CHECKS_NOT_RUN_TOPIC, "info")] if self.not_run else shown


def decide(service: Service, hook_request: HookRequest, data: dict[str, Any], knowledge: Knowledge,
           now: datetime, *, rules_url: str | None = None,
           overridden: Collection[tuple[str, str]] = frozenset(), site: SitePolicy = NO_SITE,
           unavailable: Mapping[str, str] | None = None) -> Decision:
    """The cards ``service`` answers ``hook_request`` with, given the prefetch ``data``.

    ``rules_url`` is the service's public ``/rules``: each card's source link points to its
    rule's page there (else to the guideline's URL). ``overridden`` holds (rule id, item key)
    pairs overridden with a reason for this patient within the override window (looked up by the
    caller): a warning card they cover (``silencing.silenced``: the same drug and route at the same
    or a lower dose) is held back. Critical and info cards always are: a
    critical finding (a red flag, a drug to avoid in anaesthesia) may be new since the override.
    ``site`` says which rules are silent (evaluated, returned in ``Decision.silent`` only) or off.
    Every card carries the knowledge's release (``Knowledge.release``) in its extension.
    ``unavailable``: why each prefetch key that could not be had is missing (from gathering).
    When rules of a module whose gate held were skipped for want of data, one info card, last,
    says which checks did not run and why: no card then does not read as "all clear".
    """
    if sign := pre_r4_sign(hook_request.context, data):  # DSTU2/STU3: say so, never a silent all clear
        card = fhir_version_card(sign, knowledge.override_reason_system, knowledge.release)
        # kept like any card, so that feedback on it is counted under its own id, not "(unknown card)"
        return Decision([card], [IssuedCard(card["uuid"], (FHIR_VERSION_TOPIC,), (), ("",), card["indicator"])], [], [],
                        notices=[FHIR_VERSION_TOPIC])
    facts = build_facts(hook_request.hook, hook_request.context, data, knowledge.terminology, now)
    outcome = evaluate(list(service.modules), facts, site.silent, site.off)
    shown, held_back = [], []
    for group in outcome.cards:
        lead = group[0]
        key = item_key(lead, knowledge.terminology)
        if lead.indicator == "warning" and silenced(lead.rule.id, key, overridden):
            held_back.append((lead.rule.id, key))
        else:
            shown.append(group)
    cards, issued = build_cards(shown, facts, knowledge.terminology, knowledge.override_reason_system, rules_url,
                                knowledge.release, knowledge.screen)
    if outcome.unchecked:
        cards.append(checks_not_run_card(outcome.unchecked, unavailable or {}, knowledge.override_reason_system,
                                         knowledge.release))
    not_run = sorted({key for _, lacking in outcome.unchecked for key in lacking})
    silent = [SilentFinding(f.rule.id, item_key(f, knowledge.terminology), f.indicator) for f in outcome.silent]
    return Decision(cards, issued, outcome.skipped, outcome.failed, [f for g in shown for f in g],
                    [rule for rule, _ in held_back], silent, held_back, not_run,
                    [CHECKS_NOT_RUN_TOPIC] if not_run else [])
