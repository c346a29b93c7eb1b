"""CDS Hooks 2.0 decision support for back pain in MCAS and in multiple sclerosis.

The package, room by room (docs/architecture.md maps every module):

- ``core/``       the sans-IO decision: FHIR reading, terminology, facts, conditions, rules,
                  engine, cards, decision. No Flask, no network, no database (import contracts).
- ``fhirfetch/``  the only FHIR client: the SSRF-pinned, byte-capped transport and gathering.
- ``storage/``    issued cards, feedback, the JWT replay cache, retention, the feedback report.
- ``knowledge/``  reads and writes ``knowledge/``: loader, discovery, evaluation, explain, authoring.
- ``web/``        the Flask app, blueprints, authentication, metrics, pages, preview, warm-up.

``create_app`` and the error classes are the public names; the rest is internal. ``create_app``
is imported on first use so that ``import cds_service.core`` never loads Flask.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cds_service.errors import (
    AuthenticationFailed,
    CdsError,
    InvalidRequest,
    KnowledgeError,
    PayloadTooLarge,
    PrefetchUnavailable,
    UnknownService,
)

if TYPE_CHECKING:
    from cds_service.web.app import create_app

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


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cds_service.web.app import create_app

        return create_app
    raise AttributeError(f"module 'cds_service' has no attribute {name!r}")
