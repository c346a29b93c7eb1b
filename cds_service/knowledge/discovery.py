"""The discovery document and prefetch templates, computed from the knowledge.

No hand-kept list: a service advertises the hook and modules named in
``knowledge/services.yaml`` and asks, in its prefetch, only for the data its
rules read (observations only for the LOINC codes they use). Templates use
only CDS Hooks 2.0 tokens and the 2.0 query subset (read, type search with
reference and token parameters).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cds_service.core.hooks import PREFETCH_RESOURCE
from cds_service.core.terminology import LOINC, Terminology

if TYPE_CHECKING:
    from cds_service.core.rules import Knowledge, Service

PATIENT = "{{context.patientId}}"
# Each prefetch key's query (core.hooks.PREFETCH_RESOURCE names its type): the patient is read;
# the rest are searches, narrowed where the rules want only part (observations: by code, below).
_NARROWED = {"medications": "&status=active,on-hold", "medicationDispenses": "&status=completed"}
TEMPLATES = {
    key: f"{kind}/{PATIENT}" if key == "patient" else f"{kind}?patient={PATIENT}{_NARROWED.get(key, '')}"
    for key, kind in PREFETCH_RESOURCE.items() if key != "observations"
}
# With `recent_days` (a completed prescription counts as present), completed requests are read too.
RECENT_MEDICATIONS = f"MedicationRequest?patient={PATIENT}&status=active,on-hold,completed"


def templates(knowledge: "Knowledge") -> dict[str, dict[str, str]]:
    """Every service's prefetch templates, by service id (computed once at start-up)."""
    return {sid: prefetch_templates(s, knowledge.terminology) for sid, s in knowledge.services.items()}


def prefetch_templates(service: "Service", terminology: Terminology) -> dict[str, str]:
    """The prefetch a service asks for: what its module gates and its hook's rules read."""
    needs: set[str] = set()
    wants: set[str] = set()
    valuesets: set[str] = set()
    for module in service.modules:
        needs |= module.gate.needs
        for rule in module.rules:
            if service.hook in rule.hooks:
                needs |= rule.needs
                wants |= rule.wants
                valuesets |= rule.valuesets
    templates = {key: TEMPLATES[key] for key in sorted(needs | wants) if key in TEMPLATES}
    if "medications" in templates and wants & {"medicationStatements", "medicationDispenses"}:
        templates["medications"] = RECENT_MEDICATIONS
    if "observations" in needs | wants:
        codes = sorted(
            code
            for vid in valuesets
            for (system, code) in terminology.valuesets[vid].exact
            if system == LOINC
        )
        templates["observations"] = f"{PREFETCH_RESOURCE['observations']}?patient={PATIENT}&code=" + ",".join(f"{LOINC}|{c}" for c in codes)
    return templates


def document(knowledge: "Knowledge", prefetch: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The body of GET /cds-services (``prefetch``: ``templates(knowledge)``, when already computed)."""
    prefetch = templates(knowledge) if prefetch is None else prefetch
    services = []
    for service in knowledge.services.values():
        entry: dict[str, Any] = {
            "hook": service.hook,
            "title": service.title,
            "description": service.description,
            "id": service.id,
        }
        if prefetch[service.id]:
            entry["prefetch"] = dict(prefetch[service.id])
        if service.usage_requirements:
            entry["usageRequirements"] = service.usage_requirements
        services.append(entry)
    return {"services": services}
