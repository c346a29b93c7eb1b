"""CDS Hooks 2.0 decision support for back pain in MCAS and in multiple sclerosis.

``create_app(config=None)`` builds the Flask app: configuration (defaults, then
``CDS_*`` environment variables, then ``config``), the knowledge compiled once
(a broken knowledge folder stops start-up), storage migrated, CORS, JSON
errors, JSON logs.
"""
from __future__ import annotations

import gc
import logging
import sys
from typing import Any, Mapping

from flask import Flask
from flask_cors import CORS

from .api import OrjsonProvider, Runtime, bp, register_errors
from .auth import Verifier
from .config import DEFAULTS, DEVELOPMENT_OPEN_FHIR_SERVERS, SANDBOX_ISSUER, SANDBOX_JWKS, database_url, knowledge_dir
from .errors import (
    AuthenticationFailed,
    CdsError,
    InvalidRequest,
    KnowledgeError,
    PayloadTooLarge,
    PrefetchUnavailable,
    UnknownService,
)
from .fhir import utc_now
from .knowledge import load_knowledge
from .logs import configure_logging
from .prefetch import FetchPolicy
from .storage import Storage

__all__ = [
    "create_app",
    "CdsError",
    "InvalidRequest",
    "AuthenticationFailed",
    "UnknownService",
    "PayloadTooLarge",
    "PrefetchUnavailable",
    "KnowledgeError",
]

log = logging.getLogger("cds_service")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.json = OrjsonProvider(app)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("CDS")
    if config:
        app.config.from_mapping(config)
    configure_logging(app.config["LOG_LEVEL"])
    if app.config["DEVELOPMENT"]:
        if not app.config["OPEN_FHIR_SERVERS"]:
            app.config["OPEN_FHIR_SERVERS"] = DEVELOPMENT_OPEN_FHIR_SERVERS
        app.config["TRUSTED_ISSUERS"] = {SANDBOX_ISSUER: SANDBOX_JWKS, **app.config["TRUSTED_ISSUERS"]}
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False  # a 308 on '//' would break CORS preflights

    knowledge = load_knowledge(knowledge_dir(app.config["KNOWLEDGE_DIR"]))
    storage = Storage(database_url(app.config["DATABASE_URL"], app.instance_path))
    storage.migrate()
    policy = FetchPolicy(
        budget_seconds=float(app.config["CALL_BUDGET_SECONDS"]) * 0.8,  # leave room to evaluate and answer
        timeout_seconds=float(app.config["FHIR_TIMEOUT_SECONDS"]),
        max_pages=int(app.config["FHIR_MAX_PAGES"]),
        open_servers=frozenset(s.rstrip("/") for s in app.config["OPEN_FHIR_SERVERS"]),
        threads=int(app.config["FHIR_FETCH_THREADS"]),
    )
    clock = app.config.get("CLOCK")  # tests pin time; production reads the UTC wall clock
    app.extensions["cds"] = Runtime(knowledge, storage, policy, clock if callable(clock) else utc_now)
    app.extensions["cds_auth"] = Verifier(app.config["TRUSTED_ISSUERS"], storage.remember_jti)

    CORS(
        app,
        origins=app.config["CORS_ORIGINS"],
        methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["X-Request-ID"],
        max_age=86400,
    )
    app.register_blueprint(bp)
    register_errors(app)
    _warn_if_open(app)
    # The compiled knowledge lives as long as the process: move it out of the garbage
    # collector's sight, so the collections a large request body triggers stay short (and
    # forked gunicorn workers keep sharing those pages instead of touching them).
    gc.collect()
    gc.freeze()
    return app


def _warn_if_open(app: Flask) -> None:
    if not app.config["AUTH_REQUIRED"]:
        banner = "AUTHENTICATION IS OFF (CDS_AUTH_REQUIRED=false): development only, never expose this service"
        log.warning(banner)
        print(f"\n*** {banner} ***\n", file=sys.stderr)
