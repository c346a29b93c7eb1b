"""Configuration: defaults, layering and type conversion, in one place.

Layering (flaskr's): these defaults, then environment variables with the
prefix ``CDS_`` (``Config.from_prefixed_env("CDS")``, values parsed as JSON
where they look like JSON), then the mapping passed to ``create_app``, then
the development defaults when ``DEVELOPMENT`` is on. ``settings`` does that
for ``create_app`` and the CLI alike. Nothing here reads files or the network.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from flask import Config

from cds_service.core.hooks import base_url
from cds_service.fhirfetch.gather import FetchPolicy

DEFAULTS: dict[str, Any] = {
    # Where the rules, value sets and guideline references live.
    "KNOWLEDGE_DIR": None,  # resolved by knowledge_dir() when unset
    # SQLite file in the instance folder unless a URL is given.
    "DATABASE_URL": None,
    # Client JWTs (CDS Hooks 2.0 "Trusting CDS Clients"): on unless switched off.
    "AUTH_REQUIRED": True,
    "TRUSTED_ISSUERS": {},
    # The URL clients call this service at, for the JWT ``aud`` and card links. Several may be
    # given (a JSON list, or separated by commas or spaces) when clients reach the service by more
    # than one name (localhost and 127.0.0.1): the first is used in card links.
    "PUBLIC_BASE_URL": None,
    # Browser clients such as the CDS Hooks sandbox call from another origin.
    "CORS_ORIGINS": "*",
    # A request body over this size is refused with 413 before it is parsed.
    "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,
    # Estimated parsed bytes of the bodies (and their FHIR answers) a worker holds at once
    # (cds_service/memory.py); a call that does not fit waits briefly, then gets 503.
    "PARSE_BUDGET_BYTES": 512 * 1024 * 1024,
    # One budget for a whole service call; FHIR fetches share it.
    "CALL_BUDGET_SECONDS": 2.0,
    "FHIR_TIMEOUT_SECONDS": 1.5,
    "FHIR_MAX_PAGES": 20,
    # FHIR fetches at once per process; `cds-service serve` sets 5 per gunicorn thread when unset.
    "FHIR_FETCH_THREADS": 8,
    # Behind a front that stamps X-Request-Start (deploy/nginx.conf): the call budget then counts
    # from when the front received the call. Off unless every request passes through such a front.
    "TRUST_REQUEST_START": False,
    # Decoded bytes read from FHIR servers: per response (a larger declared Content-Length is
    # refused before reading) and per call, all keys and pages together.
    "FHIR_MAX_RESPONSE_BYTES": 4 * 1024 * 1024,
    "FHIR_MAX_CALL_BYTES": 16 * 1024 * 1024,
    # With AUTH_REQUIRED: issuer -> the FHIR base URLs its calls may name in fhirServer (a JSON
    # object of lists). A call naming another server is not read from (prefetch is still used).
    "ISSUER_FHIR_SERVERS": {},
    # FHIR servers that may be read without a bearer token (open test servers
    # such as a local sandbox setup). Production EHRs always send a token.
    "OPEN_FHIR_SERVERS": [],
    # Retention (docs/metrics.md): issued cards and feedback are deleted after these many days
    # (a card with feedback is kept as long as its feedback); JWT ids once their token expired.
    # Each worker prunes at most once per interval (0: only `cds-service storage prune`).
    "ISSUED_CARD_RETENTION_DAYS": 90,
    "FEEDBACK_RETENTION_DAYS": 365,
    "PRUNE_INTERVAL_SECONDS": 300,
    # When the JWT replay cache cannot be written: false lets a token through that neither this
    # process nor the database has seen (SECURITY.md); true answers 503 instead.
    "REPLAY_FAIL_CLOSED": False,
    # Who may read /metrics: client addresses as CIDRs (loopback only by default).
    "METRICS_ALLOW": ["127.0.0.0/8", "::1/128"],
    # Development mode (make run): loud banner, sandbox-friendly defaults.
    "DEVELOPMENT": False,
    "LOG_LEVEL": "INFO",
    # Staff who may see per-rule counts on the rule pages and use the preview console: user name
    # -> werkzeug password hash (`cds-service staff hash`). Empty: nobody is staff.
    "STAFF_USERS": {},
    # The preview console (/preview): off unless switched on; staff only when STAFF_USERS is set.
    "PREVIEW_ENABLED": False,
    # Override window: a warning or critical card overridden for the same patient, rule and drug
    # within this many days is not shown again (0 switches it off). Needs PATIENT_KEY_SECRET
    # (HMAC key for the patient ids kept in storage; SECURITY.md), generated in development.
    "OVERRIDE_WINDOW_DAYS": 30,
    "PATIENT_KEY_SECRET": None,
    # Positive and negative cases shown on the rule pages: resolved by cases_dir() when unset.
    "RULE_CASES_DIR": None,
    # Personas and draft orders the preview console offers: the checkout's fhir_fixtures when unset.
    "PREVIEW_FIXTURES_DIR": None,
}

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


def settings(overrides: Mapping[str, Any] | None = None, root_path: str = ".") -> Config:
    """The layered configuration: defaults, ``CDS_*`` environment, ``overrides``, development defaults."""
    config = Config(root_path)
    config.from_mapping(DEFAULTS)
    config.from_prefixed_env("CDS")
    if overrides:
        config.from_mapping(overrides)
    if config["DEVELOPMENT"]:
        if not config["OPEN_FHIR_SERVERS"]:
            config["OPEN_FHIR_SERVERS"] = DEVELOPMENT_OPEN_FHIR_SERVERS
        config["TRUSTED_ISSUERS"] = {SANDBOX_ISSUER: SANDBOX_JWKS, **config["TRUSTED_ISSUERS"]}
    config["PUBLIC_BASE_URLS"] = public_base_urls(config["PUBLIC_BASE_URL"])
    config["PUBLIC_BASE_URL"] = next(iter(config["PUBLIC_BASE_URLS"]), None)  # card links use the first
    config["RULE_CASES_DIR"] = checkout_folder(config["RULE_CASES_DIR"], "tests/cases")
    config["PREVIEW_FIXTURES_DIR"] = checkout_folder(config["PREVIEW_FIXTURES_DIR"], "fhir_fixtures")
    return config


def fetch_policy(config: Mapping[str, Any]) -> FetchPolicy:
    """How FHIR reads are bounded, from the configuration's numbers and server lists."""
    return FetchPolicy(
        budget_seconds=float(config["CALL_BUDGET_SECONDS"]) * 0.8,  # leave room to evaluate and answer
        timeout_seconds=float(config["FHIR_TIMEOUT_SECONDS"]),
        max_pages=int(config["FHIR_MAX_PAGES"]),
        open_servers=frozenset(base_url(s) for s in config["OPEN_FHIR_SERVERS"]),
        max_response_bytes=int(config["FHIR_MAX_RESPONSE_BYTES"]),
        max_call_bytes=int(config["FHIR_MAX_CALL_BYTES"]),
        bind_to_issuers=bool(config["AUTH_REQUIRED"]),
        issuer_servers=issuer_fhir_servers(config["ISSUER_FHIR_SERVERS"]),
        threads=int(config["FHIR_FETCH_THREADS"]),
    )


def issuer_fhir_servers(configured: Any) -> dict[str, frozenset[str]]:
    """ISSUER_FHIR_SERVERS as issuer -> base URLs: a JSON object whose values are a URL or a list
    of URLs. Anything else stops start-up: a typo must not silently cut an EHR off its data."""
    if isinstance(configured, str):
        try:
            configured = json.loads(configured) if configured.strip() else {}
        except ValueError:
            configured = None  # said below, naming the setting
    if not isinstance(configured, dict):
        raise ValueError("CDS_ISSUER_FHIR_SERVERS must be a JSON object: issuer -> list of FHIR base URLs")
    servers = {}
    for issuer, urls in configured.items():
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not all(isinstance(u, str) and base_url(u).startswith(("http://", "https://"))
                                                 for u in urls):
            raise ValueError(f"CDS_ISSUER_FHIR_SERVERS: the servers of issuer {issuer!r} must be a list of http(s) URLs")
        servers[str(issuer)] = frozenset(base_url(u) for u in urls)
    return servers


def public_base_urls(configured: Any) -> tuple[str, ...]:
    """PUBLIC_BASE_URL as a tuple of base URLs without a trailing slash: one URL, a list, or a
    string of URLs separated by commas or spaces (as an environment variable gives it)."""
    if not configured:
        return ()
    items = configured.replace(",", " ").split() if isinstance(configured, str) else configured
    return tuple(str(url).strip().rstrip("/") for url in items if str(url).strip())
