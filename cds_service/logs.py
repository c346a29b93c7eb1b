"""JSON-lines logging: request id, service, hook, rule ids, timings.

The service's own log lines pass only safe fields (``extra=``); nothing here
logs bodies, tokens or patient data, and werkzeug's access log (which prints
full URLs) is quietened.
"""
from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_configured = False


def configure_logging(level: str) -> None:
    global _configured
    logger = logging.getLogger("cds_service")
    logger.setLevel(level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                       rename_fields={"asctime": "time", "levelname": "level"}))
    logger.addHandler(handler)
    logger.propagate = False
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _configured = True
