"""The preview console (``/preview``): try the service as an EHR would show it.

An informaticist picks a fixture persona (``fhir_fixtures/patients``) or
pastes a FHIR Bundle, picks a hook and draft orders (those of the request
fixtures, or a pasted resource), and sees the cards as an EHR renders them:
indicator colour, summary, detail (Markdown rendered safely), suggestions
with their actions, override reasons, source link; the raw request and
response beside them. The call runs in-process through ``evaluate`` (the
same steps as a service call, no FHIR server, nothing stored).

Off unless ``PREVIEW_ENABLED`` is true (it answers 404 then). Only signed-in
staff (``STAFF_USERS``) may use it; without staff configured it stays off too,
except in development mode (``DEVELOPMENT``, as ``make run`` sets), where a
local informaticist may try it without signing in. Server-rendered with a
plain form: no JavaScript.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import orjson
from flask import Blueprint, current_app, render_template, request
from flask.blueprints import BlueprintSetupState

from cds_service.core.fhir import concept_text
from cds_service.core.hooks import SUPPORTED_HOOKS
from cds_service.errors import CdsError, Forbidden, InvalidRequest, UnknownService
from cds_service.knowledge.evaluate import drafts_in, evaluate_request, explain_request, request_from_bundle
from cds_service.web.links import rule_href, rules_base_url
from cds_service.web.pages import staff_challenge, staff_user

log = logging.getLogger(__name__)
bp = Blueprint("preview", __name__)


@bp.record_once
def _warn_if_open(state: BlueprintSetupState) -> None:
    config = state.app.config
    if preview_enabled(config) and not config.get("STAFF_USERS"):
        log.warning("the preview console is open without staff sign-in (development mode)" if config.get("DEVELOPMENT")
                    else "the preview console stays off: PREVIEW_ENABLED needs STAFF_USERS outside development")


def preview_enabled(config: Mapping[str, Any]) -> bool:
    return config.get("PREVIEW_ENABLED") is True  # only a real true: "no", "0", "false" stay off


@bp.before_request
def _guard() -> Any:
    config = current_app.config
    if not preview_enabled(config):
        raise UnknownService("the preview console is off here (CDS_PREVIEW_ENABLED)")
    if not config.get("STAFF_USERS") and not config.get("DEVELOPMENT"):
        raise UnknownService("the preview console is off here: it needs staff sign-in (CDS_STAFF_USERS)")
    if config.get("STAFF_USERS") and staff_user() is None:
        return staff_challenge()
    if request.method == "POST" and _cross_site():
        raise Forbidden("the preview console takes form posts from its own pages only")
    return None


def _cross_site() -> bool:
    """A POST another site's page made the browser send (cross-site request forgery): the
    browser's Sec-Fetch-Site says so, or its Origin is not this service's. A client that sends
    neither (curl, a script with the staff password) is not a browser tricked into it."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    own = {_origin(request.host_url)} | {_origin(u) for u in current_app.config.get("PUBLIC_BASE_URLS") or ()}
    return origin.rstrip("/").lower() not in own


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@bp.route("/preview", methods=["GET", "POST"])
def console() -> Any:
    fixtures = _fixtures(str(current_app.config.get("PREVIEW_FIXTURES_DIR") or ""))
    form = {"persona": request.form.get("persona", next(iter(fixtures["personas"]), "")),
            "hook": request.form.get("hook", "order-select"), "bundle": request.form.get("bundle", ""),
            "drafts": request.form.getlist("draft"), "draft_json": request.form.get("draft_json", ""),
            "explain": request.form.get("explain", "").strip()}
    result, problem, explanation = None, None, ""
    rt = current_app.extensions["cds"]
    if request.method == "POST":
        try:
            body = _hook_request(form, fixtures)
            result = evaluate_request(rt.knowledge, body, rt.clock(), rules_base_url())
            if form["explain"]:  # the text of evaluate --explain: also for a rule that stayed silent
                explanation = explain_request(rt.knowledge, body, [str(form["explain"])], rt.clock())
        except CdsError as exc:
            problem = exc.message
    return render_template(
        "preview.html", form=form, hooks=SUPPORTED_HOOKS, personas=fixtures["personas"],
        draft_names=list(fixtures["drafts"]), result=result, problem=problem, rule_href=rule_href,
        explanation=explanation, rule_ids=[r.id for m in rt.knowledge.modules.values() for r in m.rules],
        raw_request=json.dumps(result.request, indent=2) if result else "",
        raw_response=json.dumps(result.response(), indent=2) if result else "",
    )  # a problem with the input is said on the form itself (role=alert), beside what was typed


def _hook_request(form: dict[str, Any], fixtures: dict[str, Any]) -> dict[str, Any]:
    if form["hook"] not in SUPPORTED_HOOKS:
        raise InvalidRequest("pick a hook")
    if form["bundle"].strip():
        bundle = _json(form["bundle"], "the pasted Bundle")
    elif form["persona"] in fixtures["personas"]:
        bundle = fixtures["personas"][form["persona"]]
    else:
        raise InvalidRequest("pick a persona or paste a FHIR Bundle")
    drafts = [fixtures["drafts"][name] for name in form["drafts"] if name in fixtures["drafts"]]
    if form["draft_json"].strip():
        drafts += drafts_in(_json(form["draft_json"], "the pasted draft order"))
    return request_from_bundle(bundle, form["hook"], drafts)


def _json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON ({str(exc).split(':')[0]})") from exc


@functools.lru_cache(maxsize=2)
def _fixtures(directory: str) -> dict[str, Any]:
    """Personas (name -> record Bundle) and canned draft orders (name -> resource), read once."""
    personas: dict[str, Any] = {}
    drafts: dict[str, dict[str, Any]] = {}
    if directory:
        root = Path(directory)
        for path in sorted((root / "patients").glob("*.json")):
            personas[path.stem] = orjson.loads(path.read_bytes())
        for path in sorted((root / "requests").glob("order-*/*.json")):
            for draft in drafts_in(orjson.loads(path.read_bytes())):
                name = concept_text(draft.get("medicationCodeableConcept") or draft.get("code"))
                if name:
                    drafts.setdefault(name, draft)
    return {"personas": personas, "drafts": dict(sorted(drafts.items()))}
