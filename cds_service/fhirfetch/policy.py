"""The fetch policy from the service's plain settings values (upper-case keys, as ``settings()``
returns them): how FHIR reads are bounded and which servers each issuer may name."""
from __future__ import annotations

from typing import Any, Mapping

from cds_service.core.hooks import base_url
from cds_service.fhirfetch.gather import FetchPolicy


def fetch_policy(config: Mapping[str, Any]) -> FetchPolicy:
    """How FHIR reads are bounded, from the configuration's numbers and server lists."""
    return FetchPolicy(
        budget_seconds=float(config["CALL_BUDGET_SECONDS"]) * 0.8,  # leave room to evaluate and answer
        timeout_seconds=float(config["FHIR_TIMEOUT_SECONDS"]),
        max_pages=int(config["FHIR_MAX_PAGES"]),
        open_servers=frozenset(base_url(s) for s in config["OPEN_FHIR_SERVERS"]),
        max_response_bytes=int(config["FHIR_MAX_RESPONSE_BYTES"]),
        max_call_bytes=int(config["FHIR_MAX_CALL_BYTES"]),
        bind_to_issuers=bool(config["AUTH_REQUIRED"]),
        issuer_servers={str(issuer): frozenset(base_url(u) for u in urls)
                        for issuer, urls in config["ISSUER_FHIR_SERVERS"].items()},
        threads=int(config["FHIR_FETCH_THREADS"]),
        server_fetches=int(config["FHIR_SERVER_FETCHES"]),
    )
