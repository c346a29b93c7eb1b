"""The checks an author can trip besides loading: card style, card limits and words that agree
with the buttons (over every case), paired cases, the discovery
prefetch, and (in ``knowledge test``) suggestion safety (safety.py). One source of truth: ``cds-service knowledge check`` and ``knowledge
test RULE`` run them, and the tests (test_card_style, test_suggestion_safety, test_cases,
test_discovery) call the same functions. Each problem names the file, the rule, the key and the fix.
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from cds_service.core import layout
from cds_service.core.cards import WHY
from cds_service.core.rules import Knowledge
from cds_service.core.terminology import LOINC
from cds_service.knowledge.cases import CaseError, pairing_problems, read_cases, run_case
from cds_service.knowledge.discovery import prefetch_templates
from cds_service.knowledge.safety import suggestion_violations

# What a card's text may start with: an instruction to the clinician (docs/knowledge.md, "Card
# style", lists the same words; a test keeps the two equal).
INSTRUCTIONS = ("Add", "Advise", "Arrange", "Ask", "Avoid", "Check", "Complete", "Consider", "Do not", "Give",
                "If", "Keep", "Lower", "Order", "Prefer", "Premedicate", "Prescribe", "Review", "Start", "Stop",
                "Switch", "Treat", "Use")
SUMMARY_LIMIT = 140
OWN_TEXT_LIMIT = 500
ENDS_OWN_TEXT = re.compile(r"\n\n(?:\*\*Why this card\*\*|_The order carries no code|Rule: )")


def starts_with_instruction(text: str) -> bool:
    words = text.split()
    first, two = (words[0].strip("*:,") if words else ""), " ".join(words[:2]).strip("*:,")
    return first in INSTRUCTIONS or two in INSTRUCTIONS


def rule_style_problems(knowledge: Knowledge, only: str | None = None) -> list[str]:
    """A rule's own detail must start with an instruction (checked before any case runs)."""
    found = []
    for module in knowledge.modules.values():
        for rule in module.rules:
            if only in (None, rule.id) and not starts_with_instruction(rule.detail.replace("{item}", "")):
                first = (rule.detail.split() or [""])[0]
                found.append(f"modules/{module.id}.yaml: rule {rule.id}: card.detail: starts with {first!r}; start "
                             f"with what to do, one of: {', '.join(INSTRUCTIONS)} (docs/knowledge.md, Card style)")
    return found


def card_problems(card: dict[str, Any], where: str) -> list[str]:
    """A served card against the card style: summary length, each finding's first word, its own text."""
    found = []
    rule = card["source"].get("topic", {}).get("code", "")
    summary = card["summary"]
    if len(summary) > SUMMARY_LIMIT:
        found.append(f"{where}: rule {rule}: summary: {len(summary)} characters, more than {SUMMARY_LIMIT}")
    if summary.endswith("…"):
        found.append(f"{where}: rule {rule}: summary: cut at its end; shorten card.summary so the name alone is cut")
    for section in sections(card["detail"]):
        own = own_text(section)
        if len(own) > OWN_TEXT_LIMIT:
            found.append(f"{where}: rule {rule}: card.detail: {len(own)} characters of the rule's own text (detail "
                         f"and notes shown), more than {OWN_TEXT_LIMIT}: shorten the detail or a note")
        if not starts_with_instruction(own):
            found.append(f"{where}: rule {rule}: card.detail: starts with {own.split()[0] if own.split() else ''!r}; "
                         f"start with one of: {', '.join(INSTRUCTIONS)}")
        if WHY in section and section.index(WHY) < section.index(own[:20]):
            found.append(f"{where}: rule {rule}: card.detail: the evidence list comes before what to do")
    return found


def sections(detail: str) -> list[str]:
    """A merged card's findings (each numbered line's text), or the whole detail (``core.layout``)."""
    return layout.sections(detail)


def own_text(section: str) -> str:
    return ENDS_OWN_TEXT.split(section, 1)[0]


def card_limit_problems(card: dict[str, Any], where: str) -> list[str]:
    """A card read in five seconds: detail within about 600 characters per finding and 1,200 per
    card, at most three buttons, and a link to each finding's rule page (``core.layout``)."""
    found = []
    rule = card["source"].get("topic", {}).get("code", "")
    findings = len(sections(card["detail"]))
    limit = min(layout.CARD_LIMIT, layout.FINDING_LIMIT * findings) + 200  # "about": a child or short-card notice
    if len(card["detail"]) > limit:
        found.append(f"{where}: rule {rule}: detail: {len(card['detail'])} characters for {findings} finding(s), more "
                     f"than {limit}: shorten the rule's detail or notes (the rest belongs on the rule page)")
    if len(card.get("suggestions", [])) > layout.MAX_BUTTONS:
        found.append(f"{where}: rule {rule}: {len(card['suggestions'])} suggestion buttons, more than {layout.MAX_BUTTONS}")
    pages = [link for link in card.get("links", []) if "/rules/" in link.get("url", "")]
    if rule and not rule.startswith("service.") and (len(pages) < findings
                                                      or any(link.get("type") != "absolute" for link in pages)):
        found.append(f"{where}: rule {rule}: links: {len(pages)} absolute link(s) to rule pages for {findings} finding(s)")
    return found


# A sentence that proposes a drug in place of another (the words that make a clinician look for the button).
ALTERNATIVE = re.compile(r"\b(prefer|switch|instead|replace|alternative)", re.I)
# Said when a drug the card names cannot be a button (cards.ACTIVE_ORDER_NOTE, MORE_ORDERS, rule notes).
WHY_NOT = re.compile(r"no one-click|not offered|\bno(?:ne| \w+) is offered")


def alternative_names(knowledge: Knowledge) -> set[str]:
    """The drugs a card can offer, by the first word of each suggested product's name
    (cetirizine, fexofenadine, famotidine, fentanyl, ...)."""
    names: set[str] = set()
    for module in knowledge.modules.values():
        for rule in module.rules:
            for spec in rule.suggestions:
                for action in spec.actions:
                    if action.kind == "create_medication":
                        product = knowledge.terminology.products[action.args["rxcui"]]
                        names.update(i.name.split()[0].lower() for i in product.ingredients)
    return names


def words_buttons_problems(card: dict[str, Any], names: set[str], where: str) -> list[str]:
    """A card whose advice names a drug it could offer either offers it or says why not."""
    rule = card["source"].get("topic", {}).get("code", "")
    text = card["summary"] + ". " + " ".join(own_text(s) for s in sections(card["detail"]))
    advice = " ".join(s for s in re.split(r"(?<=[.;!?])\s+", text.lower()) if ALTERNATIVE.search(s))
    offered = " ".join(a.get("resource", {}).get("medicationCodeableConcept", {}).get("text", "")
                       for s in card.get("suggestions", []) for a in s["actions"]).lower()
    offered += " " + " ".join(s["label"] for s in card.get("suggestions", [])).lower()
    says_why_not = bool(WHY_NOT.search(card["detail"].lower()))
    missing = sorted(n for n in names if re.search(rf"\b{re.escape(n)}\b", advice) and n not in offered)
    if missing and not says_why_not:
        return [f"{where}: rule {rule}: names {', '.join(missing)} but offers no such button and does not say why not"]
    return []


def discovery_problems(knowledge: Knowledge) -> list[str]:
    """Each service's prefetch must ask for what its rules read: every key, every LOINC code."""
    found = []
    for service in knowledge.services.values():
        templates = prefetch_templates(service, knowledge.terminology)
        for module in service.modules:
            for rule in module.rules:
                if service.hook not in rule.hooks:
                    continue
                for key in sorted(rule.needs - set(templates)):
                    found.append(f"modules/{module.id}.yaml: rule {rule.id}: service {service.id} reads '{key}' but its "
                                 "prefetch does not ask for it: add its template to cds_service/knowledge/discovery.py TEMPLATES")
                loinc = {c for vid in rule.valuesets for s, c in knowledge.terminology.valuesets[vid].exact if s == LOINC}
                missing = sorted(c for c in loinc if f"{LOINC}|{c}" not in templates.get("observations", ""))
                if missing and "observations" in rule.needs:
                    found.append(f"modules/{module.id}.yaml: rule {rule.id}: the observations prefetch of {service.id} "
                                 f"lacks LOINC {', '.join(missing)}")
    return found


def author_problems(knowledge: Knowledge, cases_dir: Path | None, fixtures: Path | None, now: datetime,
                    only: str | None = None) -> list[str]:
    """Everything ``knowledge check`` reports after loading (``only``: for one rule)."""
    found = rule_style_problems(knowledge, only) + discovery_problems(knowledge)
    if cases_dir is None or fixtures is None:
        return found
    try:
        cases = read_cases(cases_dir, fixtures)
    except CaseError as exc:
        return found + [f"{cases_dir.name}/{p}" for p in exc.problems]
    return found + pairing_problems(knowledge, cases, fixtures, now, only) + served_problems(knowledge, cases, fixtures,
                                                                                             now, only)


def served_problems(knowledge: Knowledge, cases: list[dict[str, Any]], fixtures: Path, now: datetime,
                    only: str | None = None) -> list[str]:
    """Every case's cards (but those of cases that seed stored feedback, which the suite runs)
    held to the card limits and to "words and buttons agree", as a clinician would see them."""
    names, found = alternative_names(knowledge), []
    for case in cases:
        if case.get("feedback") or (only and only != case["rule"] and only not in {e["rule"] for e in case["expect"]}):
            continue
        for card in run_case(knowledge, case, fixtures, now).cards:
            found += card_limit_problems(card, f"case {case['id']}")
            found += words_buttons_problems(card, names, f"case {case['id']}")
    return found


def run_rule_checks(knowledge: Knowledge, rule_id: str, cases_dir: Path, fixtures: Path, now: datetime) -> tuple[int, list[str]]:
    """``knowledge test RULE``: that rule's cases run offline (but those that seed stored feedback,
    which the test suite runs), their cards checked for style and suggestion safety (safety.py),
    and the checks of ``knowledge check`` for that rule; the number of cases and every problem."""
    cases = [c for c in read_cases(cases_dir, fixtures)
             if c["rule"] == rule_id or rule_id in {e["rule"] for e in c["expect"]}]
    found = author_problems(knowledge, cases_dir, fixtures, now, only=rule_id)
    for case in cases:
        if case.get("feedback"):  # needs stored feedback (the override window): the test suite runs it
            continue
        outcome = run_case(knowledge, case, fixtures, now)
        found += [f"case {case['id']}: {p}" for p in outcome.problems]
        for card in outcome.cards:  # limits and words-and-buttons: author_problems above
            found += card_problems(card, f"case {case['id']}")
        found += suggestion_violations(f"case {case['id']}", outcome.request, outcome.cards, knowledge, now)
    return len(cases), found
