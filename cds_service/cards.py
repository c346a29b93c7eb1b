"""Findings to CDS Hooks 2.0 cards: the only module that writes card JSON.

Sans-IO. Each card carries a fresh uuid, a summary under 140 characters that
names the drug or procedure, an indicator, Markdown detail that says why (the
evidence lines), what to do and the reference, ``source.topic.code`` = the
rule id, override reasons for warnings and criticals, and suggestions whose
created resources are validated as FHIR R4 before they leave. Text from the
EHR is escaped so that no raw HTML reaches the clinician's screen. Empty
members are left out, as the spec requires.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from .engine import Finding
from .facts import Facts
from .fhir import validate_resource
from .rules import Action, Suggestion
from .terminology import RXNORM, Terminology

SUMMARY_LIMIT = 139
RULE_SYSTEM = "https://cds-back-pain.example.org/fhir/CodeSystem/rule"
_UNSAFE = re.compile(r"[\[\]`*_\\]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class IssuedCard:
    """What storage keeps of a card: no patient data."""

    uuid: str
    rule_id: str
    suggestion_uuids: tuple[str, ...]


def escape(text: str) -> str:
    """EHR text made inert inside Markdown: no HTML tags (entities), no links or emphasis (escapes)."""
    text = _CONTROL.sub(" ", text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _UNSAFE.sub(lambda m: "\\" + m.group(0), text)


def build_cards(findings: list[Finding], facts: Facts, terminology: Terminology,
                reason_system: str, rules_url: str | None) -> tuple[list[dict[str, Any]], list[IssuedCard]]:
    cards, issued = [], []
    for finding in findings:
        card = _card(finding, facts, terminology, reason_system, rules_url)
        cards.append(card)
        issued.append(IssuedCard(card["uuid"], finding.rule.id,
                                 tuple(s["uuid"] for s in card.get("suggestions", []))))
    return cards, issued


def _card(finding: Finding, facts: Facts, terminology: Terminology, reason_system: str, rules_url: str | None) -> dict[str, Any]:
    rule = finding.rule
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": _summary(rule.summary, finding, facts),
        "indicator": finding.indicator,
        "detail": _detail(finding, facts),
        "source": _source(finding, rules_url),
    }
    suggestions = [s for s in (_suggestion(s, finding, facts, terminology) for s in finding.suggestions) if s]
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = rule.selection or "any"
    if finding.indicator != "info" and rule.override_reasons:
        card["overrideReasons"] = [{"system": reason_system, "code": c, "display": d} for c, d in rule.override_reasons]
    if rule.links:
        card["links"] = [{"label": link["label"], "url": link["url"], "type": "absolute"} for link in rule.links]
    return card


def _values(finding: Finding, facts: Facts, item_name: str) -> dict[str, str]:
    labels = [e.label for e in finding.evidence if e.label]
    return {
        "item": item_name,
        "age": str(facts.age_years) if facts.age_years is not None else "unknown",
        "findings": ", ".join(dict.fromkeys(labels)) or "none",
    }


def _item_name(finding: Finding) -> str:
    return getattr(finding.item, "name", "") or ""


def _summary(template: str, finding: Finding, facts: Facts) -> str:
    name = _item_name(finding)
    text = template.format_map(_values(finding, facts, name))
    if len(text) > SUMMARY_LIMIT and name:  # shorten the drug name, never the risk
        room = max(8, len(name) - (len(text) - SUMMARY_LIMIT) - 1)
        text = template.format_map(_values(finding, facts, name[:room].rstrip() + "…"))
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"


def _detail(finding: Finding, facts: Facts) -> str:
    values = _values(finding, facts, escape(_item_name(finding)))
    parts = [finding.rule.detail.strip().format_map(values)]
    parts += [note.strip().format_map(values) for note in finding.notes]
    why = "\n".join(f"- {escape(e.text)}" for e in finding.evidence)
    parts.append(f"**Why this card**\n\n{why}")
    if any(e.by_name for e in finding.evidence):
        parts.append("_The order carries no code we know, so it was recognised by its name: check the order._")
    ref = finding.rule.reference
    parts.append(f"**Evidence:** {ref.statement.strip()} ({ref.label})")
    return "\n\n".join(parts)


def _source(finding: Finding, rules_url: str | None) -> dict[str, Any]:
    rule = finding.rule
    source: dict[str, Any] = {"label": rule.reference.label}
    url = rule.reference.url or (f"{rules_url}/{rule.id}" if rules_url else None)
    if url:
        source["url"] = url
    source["topic"] = {"system": RULE_SYSTEM, "code": rule.id, "display": rule.title}
    return source


def _suggestion(spec: Suggestion, finding: Finding, facts: Facts, terminology: Terminology) -> dict[str, Any] | None:
    actions = [a for a in (_action(a, finding, facts, terminology) for a in spec.actions) if a]
    if not actions:
        return None
    # A client applies a suggestion as a transaction (deletes first), so the order is ours to
    # choose: creates first, because the CDS Hooks sandbox applies only the first action.
    actions.sort(key=lambda a: a["type"] == "delete")
    suggestion: dict[str, Any] = {"label": spec.label, "uuid": str(uuid.uuid4()), "actions": actions}
    if spec.recommended:
        suggestion["isRecommended"] = True
    return suggestion


def _action(action: Action, finding: Finding, facts: Facts, terminology: Terminology) -> dict[str, Any] | None:
    item = finding.item
    if action.kind == "delete_item":
        ref = getattr(item, "ref", None)
        if not ref or getattr(item, "kind", "draft") != "draft":
            return None  # an active order is not removed from a card; the rest still applies
        return {"type": "delete", "description": f"Remove the draft order for {_item_name(finding) or ref}",
                "resourceId": ref}
    if action.kind == "create_medication":
        resource = _medication_request(action.args, facts, terminology)
        name = resource["medicationCodeableConcept"]["text"]
        return {"type": "create", "description": f"Add a draft order for {name}", "resource": resource}
    resource = _service_request(action.args, facts, terminology)
    return {"type": "create", "description": f"Add a draft order: {resource['code']['text']}", "resource": resource}


def _medication_request(args: dict[str, Any], facts: Facts, terminology: Terminology) -> dict[str, Any]:
    product = terminology.products[args["rxcui"]]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{facts.patient_id}"},
        "medicationCodeableConcept": {
            "text": product.name,
            "coding": [{"system": RXNORM, "code": product.rxcui, "display": product.name}],
        },
    }
    if args.get("quantity"):
        resource["dispenseRequest"] = {"quantity": {"value": args["quantity"]}}
    if args.get("note"):
        resource["note"] = [{"text": args["note"]}]
    return _validated(resource)


# Shapes of created resources that passed FHIR R4 validation. A suggestion's resource differs
# between calls only in its subject (a FHIR id the request schema has already checked), so each
# shape is validated once per process; the set is bounded by the actions in the knowledge.
_VALID_SHAPES: set[bytes] = set()


def _validated(resource: dict[str, Any]) -> dict[str, Any]:
    shape = orjson.dumps({k: v for k, v in resource.items() if k != "subject"}, option=orjson.OPT_SORT_KEYS)
    if shape not in _VALID_SHAPES:
        validate_resource(resource)
        _VALID_SHAPES.add(shape)
    return resource


def _service_request(args: dict[str, Any], facts: Facts, terminology: Terminology) -> dict[str, Any]:
    vs = terminology.valuesets[args["valueset"]]
    system, code = next((s, c) for (s, c) in vs.exact if c == args["code"])
    display = vs.exact[(system, code)]
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{facts.patient_id}"},
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
    }
    if args.get("priority"):
        resource["priority"] = args["priority"]
    if args.get("note"):
        resource["note"] = [{"text": args["note"]}]
    return _validated(resource)


FHIR_VERSION_TOPIC = "service.fhir-r4-required"


def fhir_version_card(sign: str, reason_system: str) -> dict[str, Any]:
    """The one card for a call whose data is FHIR DSTU2 or STU3 (``fhir.pre_r4_sign``): no rule
    was run, and the clinician must not read the absence of cards as "all clear"."""
    return {
        "uuid": str(uuid.uuid4()),
        "summary": "Not checked: this service needs FHIR R4 data; the EHR sent DSTU2 or STU3",
        "indicator": "warning",
        "detail": (
            f"The request carried {escape(sign)}, which belong to FHIR DSTU2 or STU3. This service reads "
            "FHIR R4 only, so **none of its checks ran for this patient**: no other card does not mean "
            "all clear.\n\nIn the CDS Hooks sandbox, switch to an R4 FHIR server (the gear menu, "
            "*Change FHIR Server*) and try again."
        ),
        "source": {"label": "FHIR R4", "url": "https://hl7.org/fhir/R4/",
                   "topic": {"system": RULE_SYSTEM, "code": FHIR_VERSION_TOPIC, "display": "FHIR version check"}},
        "overrideReasons": [{"system": reason_system, "code": "already-addressed",
                             "display": "Already addressed or not applicable"}],
    }
