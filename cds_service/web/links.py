"""Links the service gives out: the one definition of where rule pages live."""
from __future__ import annotations

from urllib.parse import quote

from flask import current_app, request


def rules_base_url() -> str:
    """Where card links point: the configured public base URL, else as this request came in
    (scheme, host and any path prefix the front forwards as SCRIPT_NAME), then ``/rules``."""
    return (current_app.config.get("PUBLIC_BASE_URL") or request.url_root).rstrip("/") + "/rules"


def rule_href(rule_id: str) -> str:
    """The path of a rule's page on this service, for links in our own pages."""
    return f"{request.script_root}/rules/{quote(rule_id)}"
