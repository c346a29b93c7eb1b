"""Evaluate one hook request offline: the knowledge author's inner loop and the preview console.

``evaluate_request`` runs a CDS Hooks request through the same steps as a
service call (validation, prefetch, facts, rules, cards) and returns the
cards together with what a reader needs to judge them: which rule fired, at
which indicator, and on what evidence. It never calls a FHIR server: the data
is the request's prefetch and nothing else (a key that is not there counts as
unavailable, exactly as when an EHR's FHIR server cannot be reached).

``request_from_bundle`` builds such a request from a patient's record (a FHIR
Bundle, e.g. ``fhir_fixtures/patients/*.json``), a hook and draft orders,
shaped as the CDS Hooks sandbox sends it.
"""
from __future__ import annotations

import json
import textwrap
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import orjson

from cds_service.core.facts import Facts, build_facts
from cds_service.core.fhir import resources_in, utc_now
from cds_service.core.hooks import PREFETCH_KEY_OF, SUPPORTED_HOOKS
from cds_service.core.rules import Knowledge, Service
from cds_service.errors import CdsError, InvalidRequest, KnowledgeError, UnknownService, did_you_mean
from cds_service.fhirfetch.gather import NO_FETCH
from cds_service.knowledge.discovery import prefetch_templates
from cds_service.knowledge.explain import explain
from cds_service.pipeline import answer, gather_call


@dataclass(frozen=True)
class Fired:
    """One card's why: the rule, its indicator and the evidence lines the rule matched."""

    rule_id: str
    title: str
    indicator: str
    evidence: tuple[str, ...]


@dataclass
class Evaluation:
    service: str
    request: dict[str, Any]
    cards: list[dict[str, Any]]
    fired: list[Fired] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def response(self) -> dict[str, Any]:
        """The body the service would answer."""
        return {"cards": self.cards}


def service_for_hook(knowledge: Knowledge, hook: str) -> Service:
    for service in knowledge.services.values():
        if service.hook == hook:
            return service
    raise UnknownService(f"no service here answers the hook '{hook}'")


def evaluate_request(knowledge: Knowledge, body: Any, now: datetime, rules_url: str) -> Evaluation:
    """Cards and reasons for one hook request; InvalidRequest/PrefetchUnavailable as the service raises them."""
    service = _service_of(knowledge, body)
    call = answer(knowledge, service, body, templates=prefetch_templates(service, knowledge.terminology),
                  policy=NO_FETCH, clock=lambda: now, rules_url=rules_url)
    decision = call.decision
    fired = [Fired(f.rule.id, f.rule.title, f.indicator, tuple(e.text for e in f.evidence)) for f in decision.findings]
    return Evaluation(service.id, body, decision.cards, fired, decision.skipped, decision.failed)


def _service_of(knowledge: Knowledge, body: Any) -> Service:
    if not isinstance(body, dict) or not isinstance(body.get("hook"), str):
        raise InvalidRequest("$.hook: a hook request names its hook", location="$.hook")
    return service_for_hook(knowledge, body["hook"])


def facts_for(knowledge: Knowledge, body: Any, now: datetime) -> Facts:
    """The facts the rules see for this request (offline)."""
    service = _service_of(knowledge, body)
    call = gather_call(service, body, templates=prefetch_templates(service, knowledge.terminology), policy=NO_FETCH)
    return build_facts(call.request.hook, call.request.context, call.data, knowledge.terminology, now)


def explain_request(knowledge: Knowledge, body: Any, rule_ids: Iterable[str], now: datetime) -> str:
    """For each rule id, which of its conditions held on this request and which did not."""
    facts = facts_for(knowledge, body, now)
    modules = {rule.id: (rule, module) for module in knowledge.modules.values() for rule in module.rules}
    lines = []
    for rule_id in rule_ids:
        if rule_id not in modules:
            lines.append(f"{rule_id}: no such rule{did_you_mean(rule_id, modules)}")
            continue
        rule, module = modules[rule_id]
        assert knowledge.conditions is not None  # load_knowledge always sets it
        lines += explain(rule, module, facts, knowledge.conditions)
    return "\n".join(lines)


def request_from_bundle(bundle: Any, hook: str, drafts: list[dict[str, Any]]) -> dict[str, Any]:
    """A hook request for the patient whose record ``bundle`` holds, with ``drafts`` as the
    draft orders (all of them selected on order-select; ignored on patient-view)."""
    if hook not in SUPPORTED_HOOKS:
        raise InvalidRequest(f"hook must be one of {', '.join(SUPPORTED_HOOKS)}", location="hook")
    resources = resources_in(bundle)
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
    if patient is None or not isinstance(patient.get("id"), str):
        raise InvalidRequest("the Bundle holds no Patient with an id", location="bundle")
    pid = patient["id"]
    prefetch: dict[str, Any] = {"patient": patient}
    for key in PREFETCH_KEY_OF.values():
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for res in resources:
        if res.get("resourceType") in PREFETCH_KEY_OF:
            prefetch[PREFETCH_KEY_OF[res["resourceType"]]]["entry"].append({"resource": res})
    context: dict[str, Any] = {"userId": "Practitioner/preview", "patientId": pid}
    if hook != "patient-view":
        orders = [_as_draft(d, pid, i) for i, d in enumerate(drafts)]
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": d} for d in orders]}
        if hook == "order-select":
            context["selections"] = [f"{d['resourceType']}/{d['id']}" for d in orders]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}


def _as_draft(resource: dict[str, Any], patient_id: str, n: int) -> dict[str, Any]:
    """A draft order for this patient (its own id, subject and status), the rest as given."""
    draft = {**resource, "status": "draft", "id": resource.get("id") or f"draft-{n + 1}"}
    if draft.get("resourceType") in ("MedicationRequest", "ServiceRequest"):
        draft["subject"] = {"reference": f"Patient/{patient_id}"}
    return draft


def drafts_in(document: Any) -> list[dict[str, Any]]:
    """Draft orders from a file: one resource, a Bundle of them, or a hook request's draftOrders."""
    if isinstance(document, dict) and isinstance(document.get("context"), dict):
        return resources_in(document["context"].get("draftOrders"))
    return resources_in(document)


def as_json(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "service": evaluation.service,
        "cards": evaluation.cards,
        "fired": [{"rule": f.rule_id, "title": f.title, "indicator": f.indicator, "evidence": list(f.evidence)}
                  for f in evaluation.fired],
        "skipped": evaluation.skipped,
        "failed": evaluation.failed,
    }


def as_text(evaluation: Evaluation, width: int = 100) -> str:
    """The cards as a clinician reads them, each followed by the rule that fired and why."""
    hook = evaluation.request.get("hook", "")
    count = len(evaluation.cards)
    lines = [f"{evaluation.service} ({hook}): {count} card{'' if count == 1 else 's'}"]
    reasons = {f.rule_id: f for f in evaluation.fired}
    for card in evaluation.cards:
        rule_id = card["source"].get("topic", {}).get("code", "")
        lines += ["", f"[{card['indicator'].upper()}] {card['summary']}"]
        fired = reasons.get(rule_id)
        lines.append(f"  rule: {rule_id}" + (f" ({fired.title})" if fired else ""))
        if fired:
            lines += ["  why:"] + [f"    - {e}" for e in fired.evidence]
        lines.append("  detail:")
        for line in card.get("detail", "").splitlines():  # Markdown as written: lists stay lists
            hanging = "      " if line.startswith("- ") else "    "
            lines += textwrap.wrap(line, width, initial_indent="    ", subsequent_indent=hanging) or [""]
        for suggestion in card.get("suggestions", []):
            recommended = " (recommended)" if suggestion.get("isRecommended") else ""
            lines.append(f"  suggestion: {suggestion['label']}{recommended}")
            lines += [f"    {a['type']}: {a['description']}" for a in suggestion["actions"]]
        if card.get("overrideReasons"):
            lines.append("  override reasons: " + "; ".join(r["display"] for r in card["overrideReasons"]))
        lines.append(f"  source: {card['source']['label']} <{card['source'].get('url', '')}>")
    if evaluation.skipped:
        lines += ["", "skipped for want of data: " + ", ".join(evaluation.skipped)]
    if evaluation.failed:
        lines += ["", "FAILED (see the log): " + ", ".join(evaluation.failed)]
    return "\n".join(lines)


def evaluate_from_files(request_file: Any, bundle_file: Any, hook: str | None, draft_files: Iterable[Any],
                        now_text: str | None, want_json: bool, echo: Callable[..., Any],
                        explain_ids: Iterable[str] = ()) -> int:
    """The ``cds-service evaluate`` command: 0 no card, 1 a card was issued, 2 bad input."""
    from cds_service.knowledge.loader import load_knowledge
    from cds_service.settings import knowledge_dir, settings

    try:
        if (request_file is None) == (bundle_file is None):
            raise InvalidRequest("give a hook request file, or --bundle with --hook")
        now = _parse_now(now_text)
        if request_file is not None:
            body = _read_json(request_file)
        else:
            if not hook:
                raise InvalidRequest("--bundle needs --hook")
            drafts = [d for f in draft_files for d in drafts_in(_read_json(f))]
            body = request_from_bundle(_read_json(bundle_file), hook, drafts)
        config = settings()  # the service's own settings: a bad CDS_* value stops here too (SettingsInvalid)
        knowledge = load_knowledge(knowledge_dir(config["KNOWLEDGE_DIR"]))
        base = config["PUBLIC_BASE_URL"] or "http://127.0.0.1:8080"
        evaluation = evaluate_request(knowledge, body, now, f"{base}/rules")
        explanation = explain_request(knowledge, body, explain_ids, now) if explain_ids else ""
    except CdsError as exc:
        echo(f"error: {exc.message}", err=True)
        return 2
    except KnowledgeError as exc:  # broken knowledge is bad input too, said as knowledge check says it
        echo(str(exc), err=True)
        return 2
    if want_json:
        echo(json.dumps({**as_json(evaluation), **({"explain": explanation.splitlines()} if explain_ids else {})},
                        indent=2))
    else:
        echo(as_text(evaluation) + (f"\n\nexplain:\n{explanation}" if explain_ids else ""))
    return 1 if evaluation.cards else 0


def _read_json(file: Any) -> Any:
    try:
        return orjson.loads(file.read())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{getattr(file, 'name', 'input')} is not valid JSON ({str(exc).split(':')[0]})") from exc


def _parse_now(text: str | None) -> datetime:
    if not text:
        return utc_now()
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequest(f"--now {text!r} is not an ISO 8601 date or time") from exc
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
