"""What every request passes through, whichever blueprint serves it: a request id (the
caller's ``X-Request-ID`` when it is a sane one) in ``g``, the logs and the response, the
arrival time the call budget counts from, and the storage prunes once an answer is sent."""
from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

from flask import Flask, current_app, g, request

from cds_service import logs
from cds_service.storage import silent


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)


def _start() -> None:
    g.request_id = _request_id()
    logs.request_id.set(g.request_id)
    g.started = time.perf_counter()


def _request_id() -> str:
    given = request.headers.get("X-Request-ID", "")
    return given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else str(uuid.uuid4())


def _finish(response: Any) -> Any:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    # once the answer is sent: off the call's path
    storage = current_app.extensions["cds"].storage
    response.call_on_close(storage.maybe_prune)
    response.call_on_close(partial(silent.maybe_prune, storage))  # silent findings, card releases
    return response
