"""Prefetch: take what the EHR sent, fetch what is missing; the only FHIR client.

For each prefetch key of the service: a value the EHR sent is used as is; a
key that is missing, ``null``, an OperationOutcome or a Bundle holding one is
fetched from ``fhirServer`` with the call's bearer token (or without one only
from an allow-listed open test server), all keys in parallel under one
deadline, following ``Bundle.link[next]`` pages on the same server. A key
that cannot be had is left out of the result (rules that read it are
skipped); a required key that cannot be had raises PrefetchUnavailable (412).
A ``null`` the EHR sent that we cannot re-check still means "no data".
"""
from __future__ import annotations

import contextvars
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol

import orjson
import requests

from . import metrics
from .errors import PrefetchUnavailable
from .fhir import holds_outcome, next_link, objects
from .hooks import HookRequest

log = logging.getLogger(__name__)
_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
_USER_TOKENS = {"userPractitionerId": "Practitioner", "userPractitionerRoleId": "PractitionerRole",
                "userPatientId": "Patient", "userRelatedPersonId": "RelatedPerson"}
_MISSING = object()


@dataclass(frozen=True)
class FetchPolicy:
    budget_seconds: float
    timeout_seconds: float
    max_pages: int
    open_servers: frozenset[str]
    threads: int = 8  # fetches at once per process, shared by all the calls a worker serves


@dataclass(frozen=True)
class NextPages:
    """Fetch the pages after those of a prefetch Bundle the EHR sent (its ``link[next]``)."""

    url: str


class Transport(Protocol):
    """How FHIR reads go out: ``get`` returns a response-like context manager with
    ``status_code`` and an unread ``raw`` stream (a requests streamed response is one)."""

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> Any: ...


class SessionTransport:
    """requests, one session per thread: connection reuse without sharing a Session across threads."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> Any:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session.get(url, headers=dict(headers), timeout=timeout, allow_redirects=False, stream=True)


class FetchFailed(Exception):
    """One key could not be fetched; the message is safe to log (no token, no data)."""


def gather(request: HookRequest, templates: dict[str, str], required: Iterable[str], policy: FetchPolicy,
           transport: Transport | None = None, queued_seconds: float = 0.0) -> dict[str, Any]:
    """The data for each template key that could be had; raises PrefetchUnavailable for a required one.

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
    fetch = Fetch(request, policy, time.monotonic() + policy.budget_seconds - queued_seconds, transport or _TRANSPORT)
    fetched = fetch.all(pending, {key: _resource_type(template) for key, template in templates.items()})
    for key, what in pending.items():
        if key in fetched:
            data[key] = _merge(data.get(key), fetched[key]) if isinstance(what, NextPages) else fetched[key]
        elif request.prefetch.get(key, _MISSING) is None:
            data[key] = None  # the EHR said there is no data, and we could not look again
    missing = sorted(k for k in required if k in templates and k not in data)
    if missing:
        raise PrefetchUnavailable(
            f"required data could not be obtained: {', '.join(missing)}; send it as prefetch or give access to fhirServer",
            location=f"$.prefetch.{missing[0]}",
        )
    return data


@dataclass(frozen=True)
class Fetch:
    """One call's FHIR reads: its request (server, token, context), policy, deadline and transport."""

    request: HookRequest
    policy: FetchPolicy
    deadline: float
    transport: Transport

    def all(self, pending: dict[str, str | NextPages], kinds: dict[str, str]) -> dict[str, Any]:
        """Every pending key fetched in parallel until the deadline; keys that failed are left out."""
        if not pending or not self.allowed():
            return {}
        futures = {
            # each fetch runs in a copy of this context, so its log lines carry the request id
            _executor(self.policy.threads).submit(contextvars.copy_context().run, self.key, what, kinds[key]): key
            for key, what in pending.items()
        }
        done, _ = wait(futures, timeout=max(0.0, self.deadline - time.monotonic()))
        results = {}
        for future in futures:
            key = futures[future]
            if future not in done:
                log.warning("prefetch fetch timed out", extra={"prefetch_key": key})
                metrics.fhir_fetch_failed(key, "timeout")
                continue
            try:
                results[key] = future.result()
            except FetchFailed as exc:
                log.warning("prefetch fetch failed", extra={"prefetch_key": key, "error": str(exc)})
                metrics.fhir_fetch_failed(key, "error")
        return results

    def allowed(self) -> bool:
        if not self.request.fhir_server:
            return False
        return bool(self.request.access_token) or self.request.fhir_server in self.policy.open_servers

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
        headers = {"Accept": "application/fhir+json"}
        if self.request.access_token:
            headers["Authorization"] = f"Bearer {self.request.access_token}"
        try:
            with self.transport.get(url, headers, min(self.policy.timeout_seconds, remaining)) as response:
                if allow_404 and response.status_code in (404, 410):
                    return None
                if response.status_code != 200:
                    raise FetchFailed(f"the FHIR server answered {response.status_code}")
                body = _read_body(response, self.deadline)
        except requests.RequestException as exc:
            raise FetchFailed(f"{type(exc).__name__} talking to the FHIR server") from exc
        try:
            return orjson.loads(body)  # as strict as for request bodies: bad UTF-8, NaN, deep nesting refused
        except orjson.JSONDecodeError as exc:
            raise FetchFailed("the FHIR server answered with invalid JSON") from exc


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


def _read_body(response: Any, deadline: float) -> bytes:
    """The body, read as it arrives and given up at the deadline: a server that trickles
    bytes (each read within the socket timeout) must not hold a fetch thread past its call."""
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read  # read1: whatever one recv brings
    chunks: list[bytes] = []
    while True:
        if time.monotonic() > deadline:
            raise FetchFailed("the FHIR server was still sending when the call budget ran out")
        chunk = read(65536, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _merge(first: Any, rest: Any) -> dict[str, Any]:
    """A paginated prefetch Bundle with its further pages appended."""
    entries = objects((first or {}).get("entry")) + objects((rest or {}).get("entry"))
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


_TRANSPORT = SessionTransport()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _executor(threads: int) -> ThreadPoolExecutor:
    """One pool per process, made after a fork (gunicorn workers must not inherit threads)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fhir-fetch"))
    return _pool[1]
