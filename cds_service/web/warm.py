"""Warm-up: one representative decision per service, run once in the gunicorn master.

A worker's first hook call used to pay for what Python and the libraries do
lazily on first use (schema validators, regular expressions, code paths of
facts, engine and cards, orjson, Flask's request machinery). The master runs
each service once on a synthetic chart before it forks, so every worker
inherits those pages already touched and no caller gets a cold first call.
Every resource a card can suggest is also built and validated as FHIR R4. Nothing is fetched,
recorded or logged: the decision is built and dropped. ``cds-service serve``
runs it again in each worker before it takes a call (copy-on-write pages).
"""
from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask

from cds_service.core.cards import suggested_resource
from cds_service.fhirfetch.gather import NO_FETCH
from cds_service.pipeline import answer

log = logging.getLogger(__name__)
_PATIENT = "warm-up"
# A draft order of a common analgesic: enough for the order hooks to walk their medication paths.
_DRAFT = {
    "resourceType": "MedicationRequest", "id": "warm-up-order", "status": "draft", "intent": "order",
    "subject": {"reference": f"Patient/{_PATIENT}"},
    "medicationCodeableConcept": {"text": "acetaminophen 500 MG Oral Tablet"},
}

def warm(app: Flask) -> None:
    """Run each service once, in-process, on a synthetic chart with no condition."""
    runtime = app.extensions["cds"]
    for service in runtime.knowledge.services.values():
        templates = runtime.prefetch[service.id]
        body = orjson.loads(orjson.dumps(_synthetic_call(service.hook, templates)))
        call = answer(runtime.knowledge, service, body, templates=templates, policy=NO_FETCH,
                      clock=runtime.clock, rules_url="http://localhost/rules")
        orjson.dumps({"cards": call.decision.cards})
    # Every resource a card can suggest, validated as FHIR R4 now (the models load lazily, and
    # each shape is validated once): no call pays for it, and a broken action shows at start-up.
    knowledge = runtime.knowledge
    for module in knowledge.modules.values():
        for rule in module.rules:
            for action in (a for s in rule.suggestions for a in s.actions if a.kind != "delete_item"):
                entry = knowledge.screen.products.get(action.args.get("rxcui", "")) if knowledge.screen else None
                suggested_resource(action, _PATIENT, knowledge.terminology,
                                   entry.dosage_for(action.args.get("dosage")) if entry else None)
    with app.test_client() as client:  # Flask's routing and response path, on a route without auth
        client.get("/healthz")


def _synthetic_call(hook: str, prefetch: dict[str, str]) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/warm-up", "patientId": _PATIENT}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": _DRAFT}]}
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{_DRAFT['id']}"]
    data = {key: {"resourceType": "Bundle", "type": "searchset", "entry": []} for key in prefetch}
    if "patient" in data:
        data["patient"] = {"resourceType": "Patient", "id": _PATIENT, "birthDate": "1970-01-01"}
    return {"hook": hook, "hookInstance": "00000000-0000-4000-8000-000000000000", "context": context,
            "prefetch": data}
