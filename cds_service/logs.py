"""JSON-lines logging: request id, service, hook, rule ids, timings.

The service's own log lines pass only safe fields (``extra=``); nothing here
logs bodies, tokens or patient data, and werkzeug's access log (which prints
full URLs) is quietened.
"""
from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

_configured = False
# The request being served, for log lines written below the HTTP layer (rules, FHIR fetch threads).
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id") and (current := request_id.get()) is not None:
            record.request_id = current
        return True


def configure_logging(level: str) -> None:
    global _configured
    logger = logging.getLogger("cds_service")
    logger.setLevel(level)
    if _configured:
        return
    logger.addFilter(_RequestId())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                       rename_fields={"asctime": "time", "levelname": "level"}))
    logger.addHandler(handler)
    logger.propagate = False
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _configured = True
