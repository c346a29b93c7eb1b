"""Configuration defaults, in one place.

Layering (flaskr's): these defaults, then environment variables with the
prefix ``CDS_`` (``app.config.from_prefixed_env("CDS")``, values parsed as JSON
where they look like JSON), then the mapping passed to ``create_app``. Nothing
here reads files or the network.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    # Where the rules, value sets and guideline references live.
    "KNOWLEDGE_DIR": None,  # resolved by knowledge_dir() when unset
    # SQLite file in the instance folder unless a URL is given.
    "DATABASE_URL": None,
    # Client JWTs (CDS Hooks 2.0 "Trusting CDS Clients"): on unless switched off.
    "AUTH_REQUIRED": True,
    "TRUSTED_ISSUERS": {},
    "PUBLIC_BASE_URL": None,
    # Browser clients such as the CDS Hooks sandbox call from another origin.
    "CORS_ORIGINS": "*",
    # A request body over this size is refused with 413 before it is parsed.
    "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,
    # One budget for a whole service call; FHIR fetches share it.
    "CALL_BUDGET_SECONDS": 2.0,
    "FHIR_TIMEOUT_SECONDS": 1.5,
    "FHIR_MAX_PAGES": 20,
    # FHIR fetches at once per process; `cds-service serve` sets 5 per gunicorn thread when unset.
    "FHIR_FETCH_THREADS": 8,
    # Behind a front that stamps X-Request-Start (deploy/nginx.conf): the call budget then counts
    # from when the front received the call. Off unless every request passes through such a front.
    "TRUST_REQUEST_START": False,
    # FHIR servers that may be read without a bearer token (open test servers
    # such as a local sandbox setup). Production EHRs always send a token.
    "OPEN_FHIR_SERVERS": [],
    # Development mode (make run): loud banner, sandbox-friendly defaults.
    "DEVELOPMENT": False,
    "LOG_LEVEL": "INFO",
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


def database_url(configured: str | None, instance_path: str) -> str:
    """The storage URL: the configured one, else a SQLite file in the instance folder."""
    if configured:
        return configured
    return f"sqlite:///{Path(instance_path) / 'cds.sqlite3'}"
