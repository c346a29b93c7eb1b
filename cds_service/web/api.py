"""HTTP: discovery, service calls, feedback, health; errors as JSON.

Two blueprints. ``cds`` holds what CDS clients call (discovery, services,
feedback); its ``before_request`` authenticates every request but CORS
preflights, so a route added to it is protected without a list to keep.
``ops`` holds what operators and readers open (health, readiness, rule pages)
and is never authenticated.

The blueprints are thin: they read the body, hand it to ``pipeline.answer``
(validate, gather the data, decide: the same path as offline evaluation and
the warm-up), and ask ``storage`` to remember what was issued. Every error, including
Flask's own (unknown route, wrong method, body too large), is a JSON
OperationOutcome. Logs carry the request id, service, hook, rule ids and
timings; never the body, tokens or patient identifiers.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache, partial
from pathlib import Path
from typing import Any, Callable, cast

import orjson
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.json.provider import JSONProvider
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cds_service import metrics
from cds_service.core.hooks import HookRequest, parse_feedback
from cds_service.core.pseudonym import patient_key
from cds_service.core.rules import Knowledge, Service
from cds_service.core.site import NO_SITE, SitePolicy
from cds_service.errors import CdsError, InvalidRequest, PayloadTooLarge, UnknownService
from cds_service.fhirfetch.gather import FetchPolicy
from cds_service.knowledge import discovery
from cds_service.pipeline import answer
from cds_service.storage.issued import CallRecord
from cds_service.storage.store import Storage
from cds_service.web import admission, auth, front
from cds_service.web.links import rules_base_url

log = logging.getLogger("cds_service.api")
cds = Blueprint("cds", __name__)
cds.teardown_request(admission.release_unsent)  # a parsing ticket no answer took
ops = Blueprint("ops", __name__)


@dataclass(frozen=True)
class OverrideWindow:
    """How long an override silences a card (same patient, rule and item), and the HMAC key of
    the patient ids it is remembered by."""

    secret: bytes
    length: timedelta


@dataclass(frozen=True)
class Runtime:
    """What a worker holds for its whole life: read-only knowledge, storage, fetch policy, JWT verifier."""

    knowledge: Knowledge
    storage: Storage
    fetch_policy: FetchPolicy
    clock: Callable[[], datetime]
    prefetch: dict[str, dict[str, str]]  # service id -> prefetch templates (discovery.templates)
    verifier: auth.Verifier
    override_window: OverrideWindow | None = None  # None: off
    site: SitePolicy = NO_SITE  # the site overlay (CDS_SITE_CONFIG): per rule mode, window, note


def runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["cds"])


@cds.before_request
def _authenticate() -> None:
    if request.method != "OPTIONS":  # a CORS preflight carries no credentials, by design
        g.issuer = auth.authenticate(request, runtime().verifier)  # decides the FHIR servers it may name


@cds.get("/cds-services")
def discover() -> Any:
    return jsonify(discovery.document(runtime().knowledge, runtime().prefetch))


@cds.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Any:
    rt = runtime()
    service = _service(rt.knowledge, service_id)
    body = _json_body()
    trusted = current_app.config["TRUST_REQUEST_START"]
    queued = front.queued_seconds(request.headers.get("X-Request-Start")) if trusted else 0.0
    # The budget counts from the call's arrival: at the front when its stamp is trusted, else in
    # this worker, so authentication and parsing are spent from it too.
    arrived = min(g.started, time.perf_counter() - queued)
    call = answer(rt.knowledge, service, body, templates=rt.prefetch[service.id], policy=rt.fetch_policy,
                  clock=rt.clock, rules_url=rules_base_url(), arrived=arrived, issuer=g.get("issuer"),
                  overrides=partial(_recent_overrides, rt), site=rt.site)
    decision = call.decision
    patient = _patient_key(rt.override_window, call.request.context)
    metrics.cards_returned(decision.answered())
    metrics.checks_not_run(service.id, decision.not_run)
    response = jsonify({"cards": decision.cards})
    # What was issued is remembered once the answer is sent (the server closes the response), on
    # the process's background thread: the write costs neither this caller nor the next call on
    # this connection any time, and it is best effort, so it can never fail the call.
    # The parsed request goes with it, so that freeing a long chart's objects is not waited for either.
    fields = {
        "request_id": g.request_id, "service": service.id, "hook": service.hook,
        "hook_instance": call.request.hook_instance, "rules_fired": [c.rule_id for c in decision.issued],
        "rules_skipped": decision.skipped, "rules_failed": decision.failed, "rules_suppressed": decision.suppressed,
        "rules_silent": sorted({f.rule_id for f in decision.silent}), "knowledge_release": rt.knowledge.release,
        # cards no rule issued (service.checks-not-run, ...), and the keys whose lack kept checks from running
        "notices": decision.notices, "checks_not_run": decision.not_run,
        "queued_ms": round(queued * 1000, 2), "prefetch_ms": round(call.gather_seconds * 1000, 2),
        "evaluate_ms": round(call.decide_seconds * 1000, 2),
    }
    # The call's record goes to the background thread, written with the other calls' records queued
    # at the time in one transaction; the call's log line follows it.
    record = CallRecord(service.id, call.request.hook_instance, decision.issued, patient, decision.held_back,
                        rt.knowledge.release, decision.silent, at=datetime.now(timezone.utc))  # answered, not written
    response.call_on_close(partial(rt.storage.record_after_answer, record, partial(
        _after_answer, service.id, call.request, call.data, fields, (call.gather_seconds, call.decide_seconds))))
    return response


def _after_answer(service_id: str, hook_request: HookRequest, data: dict[str, Any], fields: dict[str, Any],
                  stages: tuple[float, float], recorded: bool, store: float) -> None:
    """Once the call's cards are stored (or could not be: logged and counted by storage): log and
    time the call, its share of the batched write included."""
    metrics.call_stages(service_id, prefetch=stages[0], evaluate=stages[1], store=store)
    log.info("service call", extra={**fields, "store_ms": round(store * 1000, 2)})


def _patient_key(window: OverrideWindow | None, context: dict[str, Any]) -> str | None:
    patient_id = context.get("patientId")
    return patient_key(window.secret, patient_id) if window and isinstance(patient_id, str) else None


def _recent_overrides(rt: Runtime, hook_request: HookRequest, now: datetime) -> frozenset[tuple[str, str]]:
    """(rule id, item key) overridden for this patient within the window (the site's window for
    the rules it names one for); nothing on a storage fault, so that a fault shows cards rather
    than costing the decision."""
    patient = _patient_key(rt.override_window, hook_request.context)
    if patient is None or rt.override_window is None:
        return frozenset()
    # the site's own window for the rules it names one for (0 days: never silenced), in the same query
    since_for = {rule: now - timedelta(days=days) if days > 0 else None
                 for rule, days in rt.site.override_days.items()}
    try:
        return rt.storage.recent_overrides(patient, now - rt.override_window.length, since_for)
    except Exception as exc:  # any storage fault: show the cards
        log.error("override lookup failed; cards shown", extra={"request_id": g.request_id,
                                                                  "error": type(exc).__name__})
        return frozenset()


@cds.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Any:
    rt = runtime()
    _service(rt.knowledge, service_id)
    items = parse_feedback(_json_body())
    metrics.feedback_stored(rt.storage.record_feedback(service_id, items))  # 503 when it cannot be stored
    log.info("feedback", extra={"request_id": g.request_id, "service": service_id, "items": len(items),
                                "outcomes": sorted({i["outcome"] for i in items})})
    return jsonify({})


@ops.get("/favicon.ico")
def favicon() -> Any:
    """The service's icon: browsers ask for it on every page (rule pages, the preview console).
    Under 1 KB, read once: no file is opened per request (nor left open by a client that never
    closes the response)."""
    return Response(_favicon_svg(), 200, {"Cache-Control": "public, max-age=86400"}, mimetype="image/svg+xml")


@cache
def _favicon_svg() -> bytes:
    return (Path(__file__).parent / "static" / "favicon.svg").read_bytes()


@ops.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@ops.get("/readyz")
def readyz() -> Any:
    """Ready whenever the knowledge is loaded: hook calls answer with their cards on a storage
    fault too, so a database that takes no writes (a lock, read-only, a full disk) must not take
    every instance out of the load balancer. The body says so, and the probe's failure is
    counted (``cds_storage_failures_total{operation="probe"}``) for the alert."""
    rt = runtime()
    storage = rt.storage.readiness()  # within 1 s, also on a hung database (storage/bounds.py)
    return jsonify({"status": "ready", "storage": storage, "knowledge": rt.knowledge.summary()["rules"],
                    "knowledge_release": rt.knowledge.release})


def _service(knowledge: Knowledge, service_id: str) -> Service:
    service = knowledge.services.get(service_id)
    if service is None:
        raise UnknownService("no CDS service with this id here; GET /cds-services lists them")
    return service


def _json_body() -> Any:
    raw = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or float("inf")
    # A streamed (chunked) body has no Content-Length: werkzeug stops reading at the limit
    # without complaint, so a body that fills the limit exactly is taken as cut short.
    if len(raw) > limit or (len(raw) == limit and request.content_length is None):
        raise PayloadTooLarge("the request body is too large")
    admission.admit(raw)  # 413 for a shape no record has, 503 when the worker has no room to parse it
    try:
        # orjson refuses what strict JSON refuses and Python's json lets through: invalid UTF-8,
        # lone surrogates ("\ud800"), NaN/Infinity, numbers beyond a double, nesting past 1024.
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"$: the body is not valid JSON ({str(exc).split(':')[0]})", location="$") from exc


class OrjsonProvider(JSONProvider):
    """Flask's JSON through orjson: the same bytes-level JSON, several times faster on big bodies."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._prepare_response_obj(args, kwargs)
        return Response(orjson.dumps(obj), mimetype="application/json")


def register_errors(app: Flask) -> None:
    @app.errorhandler(CdsError)
    def _cds_error(error: CdsError) -> Any:
        if error.status == 401:
            log.warning("authentication failed", extra={"request_id": g.get("request_id"), "reason": getattr(error, "reason", "")})
        else:
            log.info("request refused", extra={"request_id": g.get("request_id"), "status": error.status,
                                               "problem": error.message})
        return jsonify(error.to_json()), error.status, error.headers()

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Any:
        return _cds_error(PayloadTooLarge("the request body is too large"))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        body = CdsError(error.description or error.name).to_json()
        body["issue"][0]["code"] = "not-found" if error.code == 404 else "invalid"
        return jsonify(body), error.code or 500

    @app.errorhandler(Exception)
    def _bug(error: Exception) -> Any:
        # Where it failed, not what it said: an exception's message can quote request data.
        log.error("unhandled error", extra={"request_id": g.get("request_id"), "error": type(error).__name__,
                                            "where": _frames(error)})
        return jsonify(CdsError("internal error; the request id is in X-Request-ID").to_json()), 500


def _frames(error: BaseException) -> list[str]:
    """The traceback of an unhandled error as ``file:line in function``, innermost last, without
    the exception's message or source lines (either may hold a token or patient data)."""
    return [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in traceback.extract_tb(error.__traceback__)]
