"""Configuration: every ``CDS_*`` variable declared once, typed, with its default (``Settings``).

Layering: the defaults declared below, then environment variables with the prefix ``CDS_``, then
the mapping passed to ``create_app``, then the development defaults when ``DEVELOPMENT`` is on.
``settings()`` does that for ``create_app`` and the CLI alike and returns plain values (upper-case
keys, as Flask's config holds them). A value of the wrong type stops start-up with
``SettingsInvalid`` naming the variable, never its value (it may be a secret). Nothing here
reads files or the network.

To add a variable: declare one field in ``Settings`` (upper-case name without the prefix, its
type, ``Field(default, description=...)``; a bound such as ``gt=0`` where one makes sense), then
add its row to the README's configuration table and its name to docs/operations.md ("Every
setting"): tests/test_settings.py checks both against this declaration.
"""
from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cds_service.errors import SettingsInvalid

ENV_PREFIX = "CDS_"
# Read by the repository's tools and tests (.ci, tests), not by the service: never warned about.
TOOL_VARIABLES = ("CDS_TEST_", "CDS_AUDIT_STRICT", "CDS_PREVIEW_SCREENSHOT")
MiB = 1024 * 1024


class Settings(BaseSettings):
    """The service's settings. Environment values arrive as text: booleans accept true/false,
    yes/no, on/off, 1/0 in any case; objects and lists are JSON (lists also as text separated
    by commas)."""

    # Environment values are read raw and converted here, by each field's type (never by a
    # JSON guess: "False" must be false, not the string "False").
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, enable_decoding=False,
                                      extra="ignore", validate_default=False)

    # Where the rules, value sets and guideline references live: the checkout's knowledge/ when unset.
    KNOWLEDGE_DIR: str | None = Field(None, description="rules, value sets, guideline references")
    # The site overlay: a YAML file of per-rule mode, override window and note (knowledge/site.py).
    SITE_CONFIG: str | None = Field(None, description="the site overlay (YAML): per rule mode, override window, note")
    # SQLite file in the instance folder unless a URL is given.
    DATABASE_URL: str | None = Field(None, pattern=r"^(sqlite:///|postgres(ql)?://)",
                                     description="storage for issued cards, feedback, JWT replay cache")
    # Client JWTs (CDS Hooks 2.0 "Trusting CDS Clients"): on unless switched off.
    AUTH_REQUIRED: bool = Field(True, description="require a client JWT on discovery, service and feedback calls")
    # issuer -> JWKS URL, or an inline JWKS ({"keys": [...]}, optionally with "jwks_uri").
    TRUSTED_ISSUERS: dict[str, str | dict[str, Any]] = Field(default_factory=dict)
    # With AUTH_REQUIRED: issuer -> the FHIR base URLs its calls may name in fhirServer. A call
    # naming another server is not read from (prefetch is still used).
    ISSUER_FHIR_SERVERS: dict[str, list[str]] = Field(default_factory=dict)
    # The URLs clients call this service at, for the JWT ``aud`` and card links (the first). Several
    # when clients reach the service by more than one name (localhost and 127.0.0.1).
    PUBLIC_BASE_URL: list[str] = Field(default_factory=list)
    # Browser clients such as the CDS Hooks sandbox call from another origin.
    CORS_ORIGINS: str | list[str] = "*"
    # A request body over this size is refused with 413 before it is parsed.
    MAX_CONTENT_LENGTH: int = Field(8 * MiB, gt=0)
    # Estimated parsed bytes of the bodies (and their FHIR answers) a worker holds at once
    # (cds_service/memory.py); a call that does not fit waits briefly, then gets 503.
    PARSE_BUDGET_BYTES: int = Field(512 * MiB, gt=0, description="parsed bytes a worker holds at once")
    # One budget for a whole service call; FHIR fetches share it.
    CALL_BUDGET_SECONDS: float = Field(2.0, gt=0, le=60, allow_inf_nan=False)
    FHIR_TIMEOUT_SECONDS: float = Field(1.5, gt=0, le=60, allow_inf_nan=False)
    FHIR_MAX_PAGES: int = Field(20, ge=0)
    # FHIR fetches at once per process; `cds-service serve` sets 5 per gunicorn thread when unset.
    FHIR_FETCH_THREADS: int = Field(8, ge=1)
    # Fetches at once to any one FHIR server per process (the bulkhead); 0: half the fetch threads.
    FHIR_SERVER_FETCHES: int = Field(0, ge=0)
    # Behind a front that stamps X-Request-Start (deploy/nginx.conf): the call budget then counts
    # from when the front received the call. Off unless every request passes through such a front.
    TRUST_REQUEST_START: bool = False
    # Decoded bytes read from FHIR servers: per response and per call, all keys and pages together.
    FHIR_MAX_RESPONSE_BYTES: int = Field(4 * MiB, gt=0)
    FHIR_MAX_CALL_BYTES: int = Field(16 * MiB, gt=0)
    # FHIR servers that may be read without a bearer token (open test servers such as a local
    # sandbox setup). Production EHRs always send a token.
    OPEN_FHIR_SERVERS: list[str] = Field(default_factory=list)
    # Retention (docs/metrics.md): issued cards and feedback are deleted after these many days
    # (a card with feedback is kept as long as its feedback); JWT ids once their token expired.
    # Each worker prunes at most once per interval (0: only `cds-service storage prune`).
    ISSUED_CARD_RETENTION_DAYS: float = Field(90, ge=0, le=36_500, allow_inf_nan=False)
    FEEDBACK_RETENTION_DAYS: float = Field(365, ge=0, le=36_500, allow_inf_nan=False)
    PRUNE_INTERVAL_SECONDS: float = Field(300, ge=0, le=86_400, allow_inf_nan=False)
    # When the JWT replay cache cannot be written: false lets a token through that neither this
    # process nor the database has seen (SECURITY.md); true answers 503 instead.
    REPLAY_FAIL_CLOSED: bool = False
    # Who may read /metrics: client addresses as CIDRs (loopback only by default).
    METRICS_ALLOW: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # Development mode (make run): loud banner, sandbox-friendly defaults (its issuer trusted).
    DEVELOPMENT: bool = False
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # Staff who may see per-rule counts on the rule pages and use the preview console: user name
    # -> werkzeug password hash (`cds-service staff hash`). Empty: nobody is staff.
    STAFF_USERS: dict[str, str] = Field(default_factory=dict)
    # The preview console (/preview): off unless switched on; staff only when STAFF_USERS is set.
    PREVIEW_ENABLED: bool = False
    # Override window: a warning card overridden for the same patient, rule and drug within this
    # many days is not shown again (0 switches it off). Needs PATIENT_KEY_SECRET (HMAC key for the
    # patient ids kept in storage; SECURITY.md), generated in development.
    OVERRIDE_WINDOW_DAYS: int = Field(30, ge=0, le=3_650)
    PATIENT_KEY_SECRET: str | None = None
    # Positive and negative cases shown on the rule pages: the checkout's tests/cases when unset.
    RULE_CASES_DIR: str | None = None
    # Personas and draft orders the preview console offers: the checkout's fhir_fixtures when unset.
    PREVIEW_FIXTURES_DIR: str | None = None

    @field_validator("TRUSTED_ISSUERS", "STAFF_USERS", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        return _json(value) if isinstance(value, str) else value

    @field_validator("PUBLIC_BASE_URL", "OPEN_FHIR_SERVERS", "METRICS_ALLOW", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        """A JSON list, or text separated by commas or spaces (as an environment variable gives it)."""
        if value is None:
            return []
        if isinstance(value, str):
            return _json(value) if value.lstrip().startswith("[") else value.replace(",", " ").split()
        return value

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        return _json(value) if isinstance(value, str) and value.lstrip().startswith("[") else value

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("ISSUER_FHIR_SERVERS", mode="before")
    @classmethod
    def _servers(cls, value: Any) -> Any:
        """One URL may stand for a list of one; every server must be an http(s) URL: a typo must
        not silently cut an EHR off its data."""
        if isinstance(value, str):
            value = _json(value)
        if not isinstance(value, dict):
            return value  # the type check below says what is wrong
        servers = {}
        for issuer, urls in value.items():
            urls = [urls] if isinstance(urls, str) else urls
            if not isinstance(urls, list) or not all(isinstance(u, str) and _is_http(u) for u in urls):
                raise ValueError(f"the servers of issuer {issuer!r} must be a list of http(s) URLs")
            servers[issuer] = urls
        return servers

    @field_validator("PUBLIC_BASE_URL", "OPEN_FHIR_SERVERS")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        bad = [u for u in urls if not _is_http(u)]
        if bad:
            raise ValueError("every entry must be an http(s) URL")
        return urls

    @field_validator("METRICS_ALLOW")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for number, value in enumerate(values, 1):
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"entry {number} is not an address or CIDR network") from None
        return values


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError as exc:  # the position only: the text may hold a secret
        raise ValueError(f"not valid JSON (line {getattr(exc, 'lineno', '?')}, column {getattr(exc, 'colno', '?')})") from None


def _is_http(url: str) -> bool:
    return url.strip().lower().startswith(("http://", "https://")) and len(url.strip()) > len("https://")


# The declared defaults by name, for code and tests that only read one (the model is the source).
DEFAULTS: dict[str, Any] = {name: field.get_default(call_default_factory=True) for name, field in Settings.model_fields.items()}


def undeclared(environ: Mapping[str, str] = os.environ) -> list[str]:
    """``CDS_*`` environment variables that are no setting (a typo is ignored, so start-up warns)."""
    return sorted(name for name in environ
                  if name.upper().startswith(ENV_PREFIX) and name.upper()[len(ENV_PREFIX):] not in Settings.model_fields
                  and not name.upper().startswith(TOOL_VARIABLES))


def declared() -> dict[str, Any]:
    """Every declared variable, with its prefix, to its field (for the docs' check and errors)."""
    return {ENV_PREFIX + name: field for name, field in Settings.model_fields.items()}


DEVELOPMENT_OPEN_FHIR_SERVERS = ["http://127.0.0.1:8081", "http://localhost:8081"]

# The public CDS Hooks sandbox signs its JWTs with this key (ES384). Its private
# half is published in the sandbox's repository, so a sandbox JWT proves
# nothing: trusted only in development, never by default in production.
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JWKS = {
    "jwks_uri": "https://sandbox.cds-hooks.org/.well-known/jwks.json",
    "keys": [{
        "kty": "EC", "use": "sig", "crv": "P-384", "alg": "ES384",
        "kid": "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
        "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
        "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
    }],
}


def settings(overrides: Mapping[str, Any] | None = None, root_path: str = ".") -> dict[str, Any]:
    """The layered configuration as plain values: defaults, ``CDS_*`` environment, ``overrides``,
    development defaults. Keys of ``overrides`` that are not settings (Flask's own, such as
    TESTING, or a test's CLOCK) pass through unchanged. SettingsInvalid names every bad variable."""
    overrides = dict(overrides or {})
    given = {name: overrides.pop(name) for name in list(overrides) if name in Settings.model_fields}
    try:
        typed = Settings(**given)
    except ValidationError as exc:
        raise SettingsInvalid([_problem(error) for error in exc.errors(include_input=False, include_url=False)]) from None
    config: dict[str, Any] = {**typed.model_dump(), **overrides}
    if config["DEVELOPMENT"]:
        if not config["OPEN_FHIR_SERVERS"]:
            config["OPEN_FHIR_SERVERS"] = DEVELOPMENT_OPEN_FHIR_SERVERS
        config["TRUSTED_ISSUERS"] = {SANDBOX_ISSUER: SANDBOX_JWKS, **config["TRUSTED_ISSUERS"]}
    config["PUBLIC_BASE_URLS"] = public_base_urls(config["PUBLIC_BASE_URL"])
    config["PUBLIC_BASE_URL"] = next(iter(config["PUBLIC_BASE_URLS"]), None)  # card links use the first
    config["RULE_CASES_DIR"] = checkout_folder(config["RULE_CASES_DIR"], "tests/cases")
    config["PREVIEW_FIXTURES_DIR"] = checkout_folder(config["PREVIEW_FIXTURES_DIR"], "fhir_fixtures")
    return config


def _problem(error: Any) -> str:
    """One bad value as ``CDS_NAME: what is wrong`` (pydantic's words, without the value)."""
    name, *inside = [str(part) for part in error["loc"]] or ["?"]
    where = f" (at {'.'.join(inside)})" if inside else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{ENV_PREFIX}{name}{where}: {message}"


def knowledge_dir(configured: str | os.PathLike[str] | None) -> Path:
    """The knowledge folder: the configured one, else the checkout's, else the installed copy."""
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parent.parent / "knowledge"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "cds-service" / "knowledge"


def checkout_folder(configured: str | os.PathLike[str] | None, relative: str) -> Path | None:
    """An optional folder of the source checkout: the configured one, else the checkout's (when the
    service runs from one), else none. An installed service has no tests/cases or fhir_fixtures:
    its rule pages then show no cases, and its preview console offers no personas."""
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parent.parent / relative
    return checkout if checkout.is_dir() else None


def database_url(configured: str | None, instance_path: str) -> str:
    """The storage URL: the configured one, else a SQLite file in the instance folder."""
    if configured:
        return configured
    return f"sqlite:///{Path(instance_path) / 'cds.sqlite3'}"


def public_base_urls(configured: Any) -> tuple[str, ...]:
    """PUBLIC_BASE_URL as a tuple of base URLs without a trailing slash: one URL, a list, or a
    string of URLs separated by commas or spaces (as an environment variable gives it)."""
    if not configured:
        return ()
    items = configured.replace(",", " ").split() if isinstance(configured, str) else configured
    return tuple(str(url).strip().rstrip("/") for url in items if str(url).strip())
