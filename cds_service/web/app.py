"""The app factory. ``create_app(config=None)`` builds the Flask app: configuration
(``settings.settings``: defaults, ``CDS_*`` environment, then ``config``), the knowledge compiled once
(a broken knowledge folder stops start-up), storage migrated and shown to take writes (an
unwritable database stops start-up), CORS, JSON errors, JSON logs, Prometheus metrics.
"""
from __future__ import annotations

import logging
import sys
from datetime import timedelta
from typing import Any, Mapping

from flask import Flask
from flask_cors import CORS

from cds_service.core.fhir import utc_now
from cds_service.core.pseudonym import load_secret
from cds_service.fhirfetch.policy import fetch_policy
from cds_service.knowledge import discovery
from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.site import load_site
from cds_service.logs import configure_logging
from cds_service.settings import database_url, knowledge_dir, settings, undeclared
from cds_service.storage.retention import Retention
from cds_service.storage.store import Storage
from cds_service.web import metrics, middleware
from cds_service.web.api import OrjsonProvider, OverrideWindow, Runtime, cds, ops, register_errors
from cds_service.web.auth import Verifier
from cds_service.web.jwks import JWKS_WAIT_SECONDS
from cds_service.web.pages import bp as pages_bp
from cds_service.web.preview import bp as preview_bp
from cds_service.web.wsgi import CollapseSlashes

log = logging.getLogger("cds_service")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.json = OrjsonProvider(app)
    app.config.update(settings(config, app.root_path))
    configure_logging(app.config["LOG_LEVEL"])
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False  # a 308 on '//' would break CORS preflights: see wsgi.py
    app.wsgi_app = CollapseSlashes(app.wsgi_app)  # type: ignore[method-assign]

    knowledge = load_knowledge(knowledge_dir(app.config["KNOWLEDGE_DIR"]))
    site = load_site(app.config["SITE_CONFIG"], knowledge)  # a wrong overlay stops start-up, as bad knowledge does
    retention = Retention(issued_card_days=float(app.config["ISSUED_CARD_RETENTION_DAYS"]),
                          feedback_days=float(app.config["FEEDBACK_RETENTION_DAYS"]),
                          interval_seconds=float(app.config["PRUNE_INTERVAL_SECONDS"]))
    storage = Storage(database_url(app.config["DATABASE_URL"], app.instance_path), retention,
                      replay_fail_closed=bool(app.config["REPLAY_FAIL_CLOSED"]))
    storage.open_for_service()  # migrated and writable, or StorageUnusable: the service must not start
    clock = app.config.get("CLOCK")  # tests pin time; production reads the UTC wall clock
    app.extensions["cds"] = Runtime(knowledge, storage, fetch_policy(app.config), clock if callable(clock) else utc_now,
                                     discovery.templates(knowledge),
                                     Verifier(app.config["TRUSTED_ISSUERS"], storage.remember_jti,
                                              # tests on a loaded machine may let a call wait longer
                                              wait_seconds=app.config.get("JWKS_WAIT_SECONDS", JWKS_WAIT_SECONDS)),
                                     _override_window(app), site)

    CORS(
        app,
        origins=app.config["CORS_ORIGINS"],
        methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["X-Request-ID"],
        max_age=86400,
    )
    middleware.init_app(app)  # before the blueprints: their hooks run after it
    app.register_blueprint(cds)
    app.register_blueprint(ops)
    app.register_blueprint(pages_bp)
    app.register_blueprint(preview_bp)
    metrics.init_app(app)
    register_errors(app)
    _warn_if_open(app)
    return app


def _override_window(app: Flask) -> OverrideWindow | None:
    days = int(app.config["OVERRIDE_WINDOW_DAYS"] or 0)
    secret = load_secret(app.config["PATIENT_KEY_SECRET"], app.config["DEVELOPMENT"], app.instance_path)
    if days > 0 and secret is None:
        log.warning("override window off: set CDS_PATIENT_KEY_SECRET (shared by every instance) to switch it on")
    return OverrideWindow(secret, timedelta(days=days)) if days > 0 and secret else None


def _warn_if_open(app: Flask) -> None:
    if undeclared():  # names only: a value may be a secret
        log.warning("environment variables with the CDS_ prefix that are no setting were ignored (a typo?)",
                    extra={"variables": undeclared()})
    unbound = sorted(set(app.config["TRUSTED_ISSUERS"]) - set(app.extensions["cds"].fetch_policy.issuer_servers))
    if app.config["AUTH_REQUIRED"] and unbound:
        log.warning("no FHIR server is listed for some trusted issuers (CDS_ISSUER_FHIR_SERVERS): their calls"
                    " are answered from prefetch only", extra={"issuers": unbound})
    if app.config["AUTH_REQUIRED"] and not app.config["PUBLIC_BASE_URLS"] and not app.config["DEVELOPMENT"]:
        # the JWT audience then follows each request's Host header: a token minted for another
        # service behind the same name-based front would be accepted
        log.warning("CDS_PUBLIC_BASE_URL is not set: the JWT audience is taken from each request's Host header;"
                    " set it to the URL(s) EHRs call this service at")
    if not app.config["AUTH_REQUIRED"]:
        banner = "AUTHENTICATION IS OFF (CDS_AUTH_REQUIRED=false): development only, never expose this service"
        log.warning(banner)
        print(f"\n*** {banner} ***\n", file=sys.stderr)
