"""One hook call, the same wherever it runs: parse the request, gather its data, decide.

The live service (``web/api``), offline evaluation and the preview console
(``knowledge/evaluate``), and the warm-up (``web/warm``) all answer through
``answer``, so none of them can drift from what an EHR gets. What differs is
passed in: the FHIR fetch policy (``NO_FETCH`` offline), the clock, the rules
URL, and the overrides that storage remembers for the patient (live only).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

from cds_service.core.decision import Decision, decide
from cds_service.core.hooks import HookRequest, parse_hook_request
from cds_service.core.rules import Knowledge, Service
from cds_service.core.site import NO_SITE, SitePolicy
from cds_service.fhirfetch.gather import NO_FETCH, FetchPolicy, gather

Overrides = Callable[[HookRequest, datetime], frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Answer:
    """A decided call: the parsed request, the data the rules read, the decision, and the time
    spent gathering and deciding (seconds)."""

    service: Service
    request: HookRequest
    data: dict[str, Any]
    decision: Decision
    gather_seconds: float
    decide_seconds: float


@dataclass(frozen=True)
class Gathered:
    """A parsed call, the data its rules read, why each key that could not be had is missing,
    and the seconds the gathering took."""

    request: HookRequest
    data: dict[str, Any]
    unavailable: Mapping[str, str]
    seconds: float


def gather_call(service: Service, body: Any, *, templates: dict[str, str], policy: FetchPolicy,
                arrived: float | None = None, issuer: str | None = None) -> Gathered:
    """Parse ``body`` as a call to ``service`` and gather what its rules read: the EHR's prefetch,
    then the FHIR server under ``policy``. ``arrived`` (``time.perf_counter()``) is when the call
    reached us: the fetch budget counts from there. Raises InvalidRequest (400) and
    PrefetchUnavailable (412) as the service answers them."""
    hook_request = parse_hook_request(body, service.hook)
    if policy is NO_FETCH:  # offline: the data is the request's own prefetch, nothing is fetched
        hook_request = dataclasses.replace(hook_request, fhir_server=None, access_token=None)
    started = time.perf_counter()
    spent = started - arrived if arrived is not None else 0.0
    found = gather(hook_request, templates, service.required_prefetch, policy, queued_seconds=spent, issuer=issuer)
    return Gathered(hook_request, found.data, found.unavailable, time.perf_counter() - started)


def answer(knowledge: Knowledge, service: Service, body: Any, *, templates: dict[str, str], policy: FetchPolicy,
           clock: Callable[[], datetime], rules_url: str | None, arrived: float | None = None,
           issuer: str | None = None, overrides: Overrides | None = None, site: SitePolicy = NO_SITE) -> Answer:
    """``gather_call``, then the decision at ``clock()`` with the site overlay applied, without
    the cards ``overrides`` names for this patient (storage's override window; live calls only)."""
    call = gather_call(service, body, templates=templates, policy=policy, arrived=arrived, issuer=issuer)
    started = time.perf_counter()
    now = clock()
    overridden = overrides(call.request, now) if overrides else frozenset()
    decision = decide(service, call.request, call.data, knowledge, now, rules_url=rules_url, overridden=overridden,
                      site=site, unavailable=call.unavailable)
    return Answer(service, call.request, call.data, decision, call.seconds, time.perf_counter() - started)
