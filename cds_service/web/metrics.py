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
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from flask import Blueprint, Flask, Response, current_app, g, request

from cds_service.errors import Forbidden
from cds_service.metrics import get

bp = Blueprint("metrics", __name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
COUNTED_ENDPOINTS = {"cds.call_service": "call", "cds.feedback": "feedback"}
# prometheus_client names its files "<type>_<pid>.db" (values.py), a gauge's type with its mode
_CLIENT_FILE = re.compile(r"(counter|histogram|summary|gauge_(live)?(all|min|max|sum|mostrecent))_\d+\.db")


# ---------------------------------------------------------------- HTTP

def init_app(app: Flask) -> None:
    app.extensions["cds_metrics_allow"] = _networks(app.config["METRICS_ALLOW"])
    get()  # at start-up: a missing prometheus-client stops the service here, not at its first call
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
        get().calls.labels(label, hook, str(response.status_code)).inc()
        if kind == "call" and "started" in g:
            get().seconds.labels(label, "total").observe(time.perf_counter() - g.started)
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
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
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
    for entry in path.glob("*.db"):
        # Only prometheus_client's own files: the directory may hold others' (pointed at the
        # database's folder, a restart once deleted the database).
        if _CLIENT_FILE.fullmatch(entry.name):
            entry.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path, not configured


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges are dropped (its counts stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
