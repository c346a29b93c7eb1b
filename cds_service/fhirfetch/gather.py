"""Gathering: take what the EHR sent, fetch what is missing, say what could not be had.

For each prefetch key of the service: a value the EHR sent is used as is; a key that is
missing, ``null``, an OperationOutcome or a Bundle holding one is fetched from ``fhirServer``
with the call's bearer token (or without one only from an allow-listed open test server), all
keys in parallel under one deadline, following ``Bundle.link[next]`` pages on the same server.
A key that cannot be had is left out of the data (rules that read it are skipped) and named,
with why, in ``Gathered.unavailable``; a required key that cannot be had raises
PrefetchUnavailable (412). A ``null`` the EHR sent that we cannot re-check still means "no data".

Which servers are read is decided once per call (``ServerAccess``): with client authentication
on, only the base URLs listed for the verified issuer or open test servers; with it off
(development), any server given a token, but then a host that resolves to a loopback, private
or link-local address is refused at connect time unless the server is listed.

Bulkhead: at most ``FetchPolicy.server_fetches`` fetches to one FHIR server at once per
process. A fetch over that is not queued but fails at once, so callers of one slow server can
never hold every thread of the worker while others wait behind them. How bytes go over the
wire, and every way that can fail, is ``transport``'s.
"""
from __future__ import annotations

import contextvars
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import orjson

from cds_service import memory, metrics
from cds_service.core.facts import MEDICATION_REFERENCES
from cds_service.core.fhir import holds_outcome, next_link, objects, resources_in
from cds_service.core.hooks import HookRequest
from cds_service.errors import PrefetchUnavailable
from cds_service.fhirfetch.transport import ByteCount, FetchFailed, SessionTransport, Transport, read

log = logging.getLogger(__name__)
_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
_USER_TOKENS = {"userPractitionerId": "Practitioner", "userPractitionerRoleId": "PractitionerRole",
                "userPatientId": "Patient", "userRelatedPersonId": "RelatedPerson"}
_MISSING = object()

# Why a key could not be had, in words for the clinician's card (no URL, no data).
NOT_SENT = "not sent by the EHR, and no FHIR server it may be read from"
NOT_ALLOWED = ("not sent by the EHR, and its FHIR server is not one this service may read for the EHR"
               " (CDS_ISSUER_FHIR_SERVERS)")
TIMED_OUT = "the EHR's FHIR server did not answer in time"
FAILED = "the EHR's FHIR server could not be read"
BUSY = "the EHR's FHIR server is already busy with other calls"


@dataclass(frozen=True)
class FetchPolicy:
    budget_seconds: float
    timeout_seconds: float
    max_pages: int
    open_servers: frozenset[str]
    threads: int = 8  # fetches at once per process, shared by all the calls a worker serves
    max_response_bytes: int = 4 * 1024 * 1024
    max_call_bytes: int = 16 * 1024 * 1024
    # Client authentication on: each verified issuer may name only its own FHIR base URLs.
    bind_to_issuers: bool = False
    issuer_servers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Fetches at once to any one FHIR server per process (the bulkhead); 0: half of ``threads``.
    server_fetches: int = 0

    @property
    def per_server(self) -> int:
        return self.server_fetches or max(1, self.threads // 2)


# Nothing fetched: only what the call carries (the warm-up, offline evaluation).
NO_FETCH = FetchPolicy(budget_seconds=0.0, timeout_seconds=0.0, max_pages=0, open_servers=frozenset())


@dataclass(frozen=True)
class NextPages:
    """Fetch the pages after those of a prefetch Bundle the EHR sent (its ``link[next]``)."""

    url: str


@dataclass(frozen=True)
class Gathered:
    """The data for each key that could be had, and for each that could not, why (in words)."""

    data: dict[str, Any]
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerAccess:
    """What a call may do with its ``fhirServer``, decided once per call."""

    readable: bool  # may be read (a token, or an open server)
    listed: bool  # configured, so its host may be a loopback or private address
    refused: bool  # authentication on and the server is not one of the issuer's

    @classmethod
    def decide(cls, policy: FetchPolicy, issuer: str | None, server: str | None, token: bool) -> ServerAccess:
        if not server:
            return cls(False, False, False)
        if server in policy.open_servers:
            return cls(True, True, False)
        if policy.bind_to_issuers:
            listed = server in policy.issuer_servers.get(issuer or "", frozenset())
            return cls(token and listed, listed, not listed)
        return cls(token, any(server in servers for servers in policy.issuer_servers.values()), False)


def gather(request: HookRequest, templates: dict[str, str], required: Iterable[str], policy: FetchPolicy,
           transport: Transport | None = None, issuer: str | None = None,
           queued_seconds: float = 0.0) -> Gathered:
    """The data for each template key that could be had; raises PrefetchUnavailable for a required one.

    ``issuer``: the verified client's, which decides the FHIR servers the call may name.
    ``queued_seconds``: how long the call waited before this worker took it, spent from the budget.
    """
    data: dict[str, Any] = {}
    pending: dict[str, str | NextPages] = {}
    for key, template in templates.items():
        value = request.prefetch.get(key, _MISSING)
        if isinstance(value, dict) and not holds_outcome(value):
            data[key] = value
            if url := next_link(value):
                pending[key] = NextPages(url)
        else:
            pending[key] = template
    deadline = time.monotonic() + policy.budget_seconds - queued_seconds
    access = ServerAccess.decide(policy, issuer, request.fhir_server, bool(request.access_token))
    fetch = Fetch(request, policy, deadline, transport or _TRANSPORT, access, ByteCount(policy.max_call_bytes))
    kinds = {key: _resource_type(template) for key, template in templates.items()}
    # Medications that draft orders name only by reference to the FHIR server, read with the keys
    # under the same deadline (issue 20): otherwise the drug is unknown and no rule can clear it.
    references = {f"{MEDICATION_REFERENCE_KEY}{i}": ref
                  for i, ref in enumerate(server_medication_references(request.context, data))}
    fetched, why = fetch.all({**pending, **references}, {**kinds, **dict.fromkeys(references, "Medication")})
    if found := [{"fullUrl": ref, "resource": fetched[key]} for key, ref in references.items()
                 if isinstance(fetched.get(key), dict)]:
        data[MEDICATION_REFERENCES] = {"resourceType": "Bundle", "type": "collection", "entry": found}
    unavailable = {}
    for key, what in pending.items():
        if key in fetched:
            data[key] = _merge(data.get(key), fetched[key]) if isinstance(what, NextPages) else fetched[key]
        elif isinstance(what, NextPages):
            continue  # the pages the EHR sent are used; the log says the rest could not be had
        elif request.prefetch.get(key, _MISSING) is None:
            data[key] = None  # the EHR said there is no data, and we could not look again
        else:
            unavailable[key] = why.get(key, NOT_SENT)
    missing = sorted(k for k in required if k in templates and k not in data)
    if missing:
        raise PrefetchUnavailable(
            f"required data could not be obtained: {', '.join(missing)}; {fetch.advice()}",
            location=f"$.prefetch.{missing[0]}",
        )
    return Gathered(data, unavailable)


MEDICATION_REFERENCE_KEY = "medicationReference"  # a fetch key (logs, metrics): an index, never an id
MAX_MEDICATION_REFERENCES = 10
_MEDICATION_REFERENCE = re.compile(r"^Medication/[A-Za-z0-9\-.]{1,64}$")  # relative: read on fhirServer only


def server_medication_references(context: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The relative ``Medication/<id>`` references of the draft orders that neither the draftOrders
    Bundle nor the prefetch holds (contained ones resolve in the order). Absolute URLs are never
    followed: only the call's own fhirServer is read."""
    held = set()
    for bundle in (context.get("draftOrders"), data.get("medications")):
        for res in resources_in(bundle):
            if res.get("resourceType") == "Medication" and isinstance(res.get("id"), str):
                held.add(f"Medication/{res['id']}")
    wanted: list[str] = []
    for order in resources_in(context.get("draftOrders")):
        reference = order.get("medicationReference")
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(ref, str) and _MEDICATION_REFERENCE.match(ref) and ref not in held and ref not in wanted:
            wanted.append(ref)
    return wanted[:MAX_MEDICATION_REFERENCES]


@dataclass(frozen=True)
class Fetch:
    """One call's FHIR reads: its request (server, token, context), policy, deadline, transport,
    what it may do with the server, and the bytes read so far."""

    request: HookRequest
    policy: FetchPolicy
    deadline: float
    transport: Transport
    access: ServerAccess
    received: ByteCount

    def all(self, pending: dict[str, str | NextPages],
            kinds: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Every pending key fetched in parallel until the deadline: the results, and for each
        key that failed, why (words for the clinician; the log has the technical reason)."""
        if not pending or not self.access.readable:
            if self.access.refused:
                log.warning("fhirServer is not listed for the client's issuer; not read")
                # the reason an informaticist can act on: the allow-list, not the EHR's prefetch
                return {}, dict.fromkeys(pending, NOT_ALLOWED)
            return {}, {}
        server = self.request.fhir_server or ""
        futures: dict[Future[Any], str] = {}
        why: dict[str, str] = {}
        for key, what in pending.items():
            if not _BULKHEAD.enter(server, self.policy.per_server):
                log.warning("prefetch fetch not tried: the FHIR server has too many fetches in flight",
                            extra={"prefetch_key": key})
                metrics.fhir_fetch_failed(key, "busy")
                why[key] = BUSY
                continue
            # each fetch runs in a copy of this context, so its log lines carry the request id
            run = contextvars.copy_context().run
            futures[_executor(self.policy.threads).submit(run, self._bounded, server, what, kinds[key])] = key
        done, _ = wait(futures, timeout=max(0.0, self.deadline - time.monotonic()))
        results = {}
        for future, key in futures.items():
            if future not in done:
                log.warning("prefetch fetch timed out", extra={"prefetch_key": key})
                metrics.fhir_fetch_failed(key, "timeout")
                why[key] = TIMED_OUT
                continue
            try:
                results[key] = future.result()
            except FetchFailed as exc:
                log.warning("prefetch fetch failed", extra={"prefetch_key": key, "error": str(exc)})
                metrics.fhir_fetch_failed(key, "error")
                why[key] = FAILED
            except Exception as exc:  # a bug must cost this key, never the call and its other cards
                log.error("prefetch fetch raised", extra={"prefetch_key": key, "error": type(exc).__name__})
                metrics.fhir_fetch_failed(key, "error")
                why[key] = FAILED
        return results, why

    def _bounded(self, server: str, what: str | NextPages, kind: str) -> Any:
        """One key, holding its bulkhead slot until the fetch ends (not when the caller gives up)."""
        try:
            return self.key(what, kind)
        finally:
            _BULKHEAD.leave(server)

    def advice(self) -> str:
        """What the client can do about required data that could not be had."""
        if self.access.refused:
            return ("fhirServer is not among the FHIR servers allowed for this client's issuer"
                    " (CDS_ISSUER_FHIR_SERVERS), so it was not read; send the data as prefetch")
        return "send it as prefetch or give access to fhirServer"

    def key(self, what: str | NextPages, kind: str) -> Any:
        """One key: the further pages of a sent Bundle, a read, or a search."""
        if isinstance(what, NextPages):
            return self.search(what.url, kind)
        path = render(what, self.request.context)
        url = f"{self.request.fhir_server or ''}/{path}"
        if "?" in path:
            return self.search(url, kind)
        found = self.get(url, allow_404=True)
        if found is not None and (not isinstance(found, dict) or found.get("resourceType") != kind):
            raise FetchFailed(f"a {kind} read did not return a {kind}")
        return found

    def search(self, url: str, kind: str) -> dict[str, Any]:
        """All pages of a search, or FetchFailed: a partial or foreign result is never used as if complete."""
        entries: list[Any] = []
        seen: set[str] = set()
        while url:
            if not _same_server(url, self.request.fhir_server or ""):
                raise FetchFailed("a next link points away from fhirServer; not followed")
            if url in seen:
                raise FetchFailed("a next link points back to a page already read")
            if len(seen) >= self.policy.max_pages:
                raise FetchFailed(f"a search has more than {self.policy.max_pages} pages")
            seen.add(url)
            page = self.get(url)
            if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
                raise FetchFailed("a search did not return a Bundle")
            for entry in objects(page.get("entry")):
                mode = (entry.get("search") or {}).get("mode")
                resource = entry.get("resource")
                found = resource.get("resourceType") if isinstance(resource, dict) else None
                if mode == "outcome":
                    continue
                if mode != "include" and found not in (kind, "OperationOutcome"):
                    raise FetchFailed(f"a {kind} search returned a {found or 'non-resource'} entry")
                entries.append(entry)
            url = next_link(page) or ""
        return {"resourceType": "Bundle", "type": "searchset", "entry": entries}

    def get(self, url: str, allow_404: bool = False) -> Any:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed("no time left in the call budget")
        headers = {"Accept": "application/fhir+json", "Accept-Encoding": "gzip, deflate"}
        if self.request.access_token:
            headers["Authorization"] = f"Bearer {self.request.access_token}"
        body = read(self.transport, url, headers, timeout=min(self.policy.timeout_seconds, remaining),
                    public_only=not self.access.listed, deadline=self.deadline,
                    max_bytes=self.policy.max_response_bytes, count=self.received.add, allow_404=allow_404)
        if body is None:
            return None
        try:
            size = memory.check_shape(body)
        except memory.ShapeRefused as exc:
            raise FetchFailed(f"the FHIR answer is refused: {exc}") from exc
        if not memory.charge(size):  # parsed, it would not fit this worker's budget now
            raise FetchFailed("the worker's memory budget for parsing is full; the FHIR answer is not parsed")
        try:
            return orjson.loads(body)  # as strict as for request bodies: bad UTF-8, NaN, deep nesting refused
        except orjson.JSONDecodeError as exc:
            raise FetchFailed("the FHIR server answered with invalid JSON") from exc


class Bulkhead:
    """Fetches in flight per FHIR base URL in this process, each server with its own limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    def enter(self, server: str, limit: int) -> bool:
        """Take a slot for ``server`` if one is free; never waits."""
        with self._lock:
            if self._in_flight.get(server, 0) >= limit:
                return False
            self._in_flight[server] = self._in_flight.get(server, 0) + 1
            return True

    def leave(self, server: str) -> None:
        with self._lock:
            left = self._in_flight.get(server, 1) - 1
            if left > 0:
                self._in_flight[server] = left
            else:
                self._in_flight.pop(server, None)  # no entry kept per server ever named


def _resource_type(template: str) -> str:
    """The resource type a read or type-search template asks for (its first path segment)."""
    return template.split("?", 1)[0].strip("/").split("/", 1)[0]


def render(template: str, context: dict[str, Any]) -> str:
    """Fill the CDS Hooks 2.0 prefetch tokens from the context."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("context."):
            found = context.get(name[len("context."):])
            if isinstance(found, (str, int, float)):
                return str(found)
        elif name in _USER_TOKENS:
            kind, _, ident = str(context.get("userId", "")).partition("/")
            if kind == _USER_TOKENS[name]:
                return ident
        raise FetchFailed(f"token {name} cannot be filled from this context")

    return _TOKEN.sub(value, template)


def _same_server(url: str, server: str) -> bool:
    return url == server or url.startswith(server.rstrip("/") + "/")


def _merge(first: Any, rest: Any) -> dict[str, Any]:
    """A paginated prefetch Bundle with its further pages appended."""
    entries = objects((first or {}).get("entry")) + objects((rest or {}).get("entry"))
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


_TRANSPORT = SessionTransport()
_BULKHEAD = Bulkhead()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _executor(threads: int) -> ThreadPoolExecutor:
    """One pool per process, made after a fork (gunicorn workers must not inherit threads)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fhir-fetch"))
    return _pool[1]
