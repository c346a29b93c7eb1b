"""What every request passes through, whichever blueprint serves it: a request id (the
caller's ``X-Request-ID`` when it is a sane one) in ``g``, the logs and the response, the
arrival time the call budget counts from, and the storage prunes once an answer is sent."""
from __future__ import annotations

import time
import uuid
from typing import Any

from flask import Flask, current_app, g, request

from cds_service import logs


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
    # the prune when due, once the answer is sent, on the storage's background thread
    response.call_on_close(current_app.extensions["cds"].storage.after_answer)
    return response
