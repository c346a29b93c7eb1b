"""Pages for people: rule pages, value set pages, the preview console.

``/rules/<id>`` is the target of every card's source link. A browser (which
prefers ``text/html``) gets a page; a client that asks for JSON, or sends no
Accept header, gets the JSON it always got (the view in ``api.py``). The page
says what the rule checks, its indicator and why, the guideline statement,
the value sets it reads (each with its own page), its positive and negative
cases when the test cases are installed, and, to signed-in staff only, how
often its cards were issued, accepted and overridden.

Staff sign in with HTTP Basic against ``STAFF_USERS`` (user name -> a
werkzeug password hash, made by ``cds-service staff hash``); with no staff
configured nobody is staff. Every HTML answer carries a strict
Content-Security-Policy (no inline script or style, no framing),
``nosniff`` and a referrer policy. The pages need no JavaScript.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, current_app, jsonify, render_template, request
from markupsafe import Markup
from werkzeug.security import check_password_hash

from cds_service.core.hooks import SUPPORTED_HOOKS
from cds_service.core.rules import Module, Rule
from cds_service.errors import AuthenticationFailed, UnknownRule, UnknownService
from cds_service.web.links import rule_href

bp = Blueprint("pages", __name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
ITEMS_IN_WORDS = {
    "draft_medications": "each draft medication order",
    "draft_service_requests": "each draft procedure, imaging or referral order",
    "active_medications": "each active medication on the record",
}
RULE_URL = "/rules/<rule_id>"
_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128


def markdown(text: str) -> Markup:
    """Card or knowledge Markdown as safe HTML: raw HTML in the text comes out escaped."""
    return Markup(_markdown_renderer().render(text or ""))


@functools.cache
def _markdown_renderer() -> Any:
    """CommonMark without raw HTML; link targets such as javascript: are refused by markdown-it
    itself. Made on first use: only the pages for people render Markdown, not the hook calls,
    so the service starts without loading it."""
    from markdown_it import MarkdownIt

    return MarkdownIt("js-default")


def wants_html() -> bool:
    """Content negotiation: HTML only when the client prefers it to JSON (a browser does);
    no Accept header, ``*/*``, ``application/json`` or ``?format=json`` keep the JSON answer."""
    if request.args.get("format") == "json":
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]


def staff_user() -> str | None:
    """The signed-in staff member (HTTP Basic against STAFF_USERS), or None."""
    users = current_app.config.get("STAFF_USERS") or {}
    auth = request.authorization
    if not users or auth is None or auth.type != "basic" or not auth.username:
        return None
    stored = users.get(auth.username)
    # the same work whether or not the user exists: no user enumeration by timing
    ok = check_password_hash(stored or _DUMMY_HASH, auth.password or "")
    return auth.username if ok and stored else None


def staff_challenge() -> Any:
    """401 asking the browser for staff credentials (or 404 when no staff are configured)."""
    if not current_app.config.get("STAFF_USERS"):
        raise UnknownService("staff sign-in is not configured here (STAFF_USERS)")
    body = AuthenticationFailed("staff sign-in required (HTTP Basic, a user of CDS_STAFF_USERS)").to_json()
    return jsonify(body), 401, {"WWW-Authenticate": 'Basic realm="cds-service staff", charset="UTF-8"'}


@bp.after_app_request
def _headers(response: Response) -> Response:
    if response.mimetype == "text/html":
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    # every answer, /static/ and JSON included: no browser may sniff one into HTML or script
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.url_rule is not None and request.url_rule.rule in (RULE_URL, "/valuesets/<valueset_id>"):
        response.vary.add("Accept")
    return response


def _knowledge() -> Any:
    return current_app.extensions["cds"].knowledge


def find_rule(rule_id: str) -> tuple[Module, Rule]:
    for module in _knowledge().modules.values():
        for rule in module.rules:
            if rule.id == rule_id:
                return module, rule
    raise UnknownRule("no rule with this id")  # the id is not repeated: errors are logged


@bp.get(RULE_URL)
def rule(rule_id: str) -> Any:
    """The trail of one rule, the target of every card's ``source.url`` without a guideline URL:
    a page for a browser, its JSON for anything else."""
    module, rule = find_rule(rule_id)
    if not wants_html():
        site = current_app.extensions["cds"].site
        return jsonify({
            "id": rule.id, "title": rule.title, "module": module.title, "hooks": sorted(rule.hooks),
            "reference": {"guideline": rule.reference.label, "recommendation": rule.reference.statement},
            "site": {"mode": site.mode(rule.id), "note": site.notes.get(rule.id),
                     "override_window_days": site.override_days.get(rule.id)},
            "knowledge_release": _knowledge().release,
        })
    staff = staff_user()
    if request.args.get("staff") and staff is None:
        return staff_challenge()
    stats = current_app.extensions["cds"].storage.stats().get(rule.id) if staff else None
    valuesets = _knowledge().terminology.valuesets
    return render_template(
        "rule.html", rule=rule, module=module, staff=staff, stats=stats,
        indicators=list(dict.fromkeys([rule.indicator, *(i for _, i in rule.indicator_when)])),
        triggers=[(hook, ITEMS_IN_WORDS.get(rule.for_each.get(hook, ""), "the patient's record"))
                  for hook in SUPPORTED_HOOKS if hook in rule.hooks],
        rule_valuesets=[valuesets[v] for v in sorted(rule.valuesets) if v in valuesets],
        gate_valuesets=[valuesets[v] for v in sorted(module.gate.valuesets) if v in valuesets],
        cases=rule_cases(rule.id), staff_configured=bool(current_app.config.get("STAFF_USERS")),
        site=current_app.extensions["cds"].site, release=_knowledge().release,
    )


@bp.get("/valuesets/<valueset_id>")
def valueset(valueset_id: str) -> Any:
    """A value set the rules read: its codes, is-a prefixes and exclusions (HTML or JSON)."""
    vs = _knowledge().terminology.valuesets.get(valueset_id)
    if vs is None:
        raise UnknownService("no value set with this id")
    body = {
        "id": vs.id, "title": vs.title, "url": vs.url,
        "codes": [{"system": s, "code": c, "display": d} for (s, c), d in sorted(vs.exact.items())],
        "descendantsOf": [{"system": s, "code": p} for s, prefixes in sorted(vs.is_a.items()) for p in prefixes],
        "excluded": [{"system": s, "code": c} for s, c in sorted(vs.excluded)],
        "ingredientNames": [name for name, _ in vs.names],
    }
    if wants_html():
        users = [(m.id, r) for m in _knowledge().modules.values() for r in m.rules if vs.id in r.valuesets]
        return render_template("valueset.html", vs=body, rules=users)
    return body


def rule_cases(rule_id: str) -> dict[str, list[dict[str, Any]]] | None:
    """The rule's positive and negative cases, when the case files are installed (else None)."""
    directory = current_app.config.get("RULE_CASES_DIR")
    if not directory:
        return None
    cases = _load_cases(str(directory))
    return {
        "positive": [c for c in cases if rule_id in {e.get("rule") for e in c.get("expect") or []}],
        "negative": [c for c in cases if c.get("rule") == rule_id
                     and rule_id not in {e.get("rule") for e in c.get("expect") or []}],
    }


@functools.lru_cache(maxsize=4)
def _load_cases(directory: str) -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("*.yaml")):
        data = yaml.safe_load(path.read_text("utf-8")) or {}
        found += [c for c in data.get("cases", []) if isinstance(c, dict)]
    return tuple(found)


bp.add_app_template_global(rule_href, "rule_href")


@bp.app_template_filter("markdown")
def _markdown_filter(text: str) -> Markup:
    return markdown(text)
