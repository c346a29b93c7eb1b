"""Prometheus metrics (docs/metrics.md lists each one, with alerts and the runbook).

``init_app`` adds ``GET /metrics`` and counts every service and feedback call.
Labels are bounded: service ids from the knowledge (``unknown`` for any other
path), hooks, status codes, rule ids, indicators, outcomes, prefetch keys and
storage operations; never a patient, a token or a request id.

Under gunicorn each worker is a process: ``cds-service serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a directory (unless set, a fresh temporary one
removed when the master exits), empties it in the master before the workers
start, and marks a worker dead when it exits; a scrape adds up every worker's counts. The variable must
be set before ``prometheus_client`` is imported, so it is imported here only
when the first metric is made.

``/metrics`` answers only clients whose address is in ``METRICS_ALLOW``
(CIDRs; loopback by default) and that did not come through a proxy (a request
with ``Forwarded``/``X-Forwarded-For``/``X-Real-IP`` is refused): anyone else
gets a 403 OperationOutcome. Prometheus scrapes the instance directly.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from flask import Blueprint, Flask, Response, current_app, g, request

from .errors import Forbidden

bp = Blueprint("metrics", __name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
COUNTED_ENDPOINTS = {"cds.call_service": "call", "cds.feedback": "feedback"}
# From a millisecond (evaluation) to past the call budget (a slow FHIR server)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.calls = Counter("cds_calls_total", "Service and feedback calls answered, by status",
                             ["service", "hook", "status"])
        self.seconds = Histogram("cds_call_stage_seconds", "Time spent per stage of a service call",
                                 ["service", "stage"], buckets=BUCKETS)
        self.cards = Counter("cds_cards_total", "Cards returned, by rule and indicator", ["rule_id", "indicator"])
        self.feedback = Counter("cds_feedback_total", "Feedback items stored, by the rule of the card and outcome",
                                ["rule_id", "outcome"])
        self.fhir_failures = Counter("cds_fhir_fetch_failures_total",
                                     "Prefetch keys that could not be fetched from the FHIR server",
                                     ["prefetch_key", "kind"])
        self.storage_failures = Counter("cds_storage_failures_total",
                                        "Database writes that failed (the call still answered)", ["operation"])


_metrics: _Metrics | None = None


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


# ---------------------------------------------------------------- what the service counts

def call_stages(service_id: str, **seconds: float) -> None:
    """Stage timings of one service call (prefetch, evaluate, store)."""
    histogram = _get().seconds
    for stage, value in seconds.items():
        histogram.labels(service_id, stage).observe(value)


def cards_returned(cards: Iterable[dict[str, Any]]) -> None:
    counter = _get().cards
    for card in cards:
        counter.labels(card["source"]["topic"]["code"], card["indicator"]).inc()


def feedback_stored(outcomes: Iterable[tuple[str, str]]) -> None:
    """(rule id, outcome) per stored feedback item."""
    counter = _get().feedback
    for rule_id, outcome in outcomes:
        counter.labels(rule_id, outcome).inc()


def fhir_fetch_failed(prefetch_key: str, kind: str) -> None:
    """``kind``: ``timeout`` (the call's budget ran out) or ``error`` (refused, bad answer, ...)."""
    _get().fhir_failures.labels(prefetch_key, kind).inc()


def storage_failed(operation: str) -> None:
    _get().storage_failures.labels(operation).inc()


# ---------------------------------------------------------------- HTTP

def init_app(app: Flask) -> None:
    app.extensions["cds_metrics_allow"] = _networks(app.config["METRICS_ALLOW"])
    _get()  # at start-up: a missing prometheus-client stops the service here, not at its first call
    app.register_blueprint(bp)


def _networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if isinstance(values, str):
        values = [values]
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


@bp.after_app_request
def _count_call(response: Any) -> Any:
    kind = COUNTED_ENDPOINTS.get(request.endpoint or "")
    if kind:
        service_id = (request.view_args or {}).get("service_id", "")
        service = current_app.extensions["cds"].knowledge.services.get(service_id)
        hook = "feedback" if kind == "feedback" else (service.hook if service else "unknown")
        label = service.id if service else "unknown"
        _get().calls.labels(label, hook, str(response.status_code)).inc()
        if kind == "call" and "started" in g:
            _get().seconds.labels(label, "total").observe(time.perf_counter() - g.started)
    return response


@bp.get("/metrics")
def scrape() -> Response:
    if not _allowed():
        raise Forbidden("metrics are served only to the monitoring addresses configured in METRICS_ALLOW")
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _allowed() -> bool:
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False  # came through a front: the address seen is the front's, not the client's
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(address in network for network in current_app.extensions["cds_metrics_allow"])


# ---------------------------------------------------------------- gunicorn

def gunicorn_hooks() -> dict[str, Any]:
    """In the master before the app is loaded: the metrics directory ready, and gunicorn's hooks."""
    path, made_here = _multiprocess_dir()
    hooks: dict[str, Any] = {"child_exit": child_exit}
    if made_here:  # a temporary directory of our own: gone with the master
        hooks["on_exit"] = lambda server: shutil.rmtree(path, ignore_errors=True)
    return hooks


def _multiprocess_dir() -> tuple[Path, bool]:
    """PROMETHEUS_MULTIPROC_DIR, emptied of a former run's files (a fresh temporary one when unset)."""
    configured = os.environ.get(MULTIPROC_ENV)
    path = Path(configured or tempfile.mkdtemp(prefix="cds-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.glob("*.db"):  # only the client's own files: the directory may be shared with others
        entry.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path, not configured


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges are dropped (its counts stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
