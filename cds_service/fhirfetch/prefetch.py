"""Prefetch: take what the EHR sent, fetch what is missing; the only FHIR client.

For each prefetch key of the service: a value the EHR sent is used as is; a
key that is missing, ``null``, an OperationOutcome or a Bundle holding one is
fetched from ``fhirServer`` with the call's bearer token (or without one only
from an allow-listed open test server), all keys in parallel under one
deadline, following ``Bundle.link[next]`` pages on the same server. A key
that cannot be had is left out of the result (rules that read it are
skipped); a required key that cannot be had raises PrefetchUnavailable (412).
A ``null`` the EHR sent that we cannot re-check still means "no data".

What is read is bounded: decoded bytes per response and per call (a declared
``Content-Length`` over the cap is refused before reading; gzip and deflate
are decoded a chunk at a time under the same cap). Which servers are read:
with client authentication on, only the base URLs listed for the verified
issuer (``ISSUER_FHIR_SERVERS``) or open test servers; with it off
(development), any server given a token, but then a host that resolves to a
loopback, private or link-local address is refused at connect time unless
the server is listed (``server_access``, ``SessionTransport``).
"""
from __future__ import annotations

import contextvars
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from cds_service import metrics
from cds_service.errors import PrefetchUnavailable
from cds_service.core.facts import MEDICATION_REFERENCES
from cds_service.core.fhir import holds_outcome, next_link, objects, resources_in
from cds_service.core.hooks import HookRequest

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
    max_response_bytes: int = 4 * 1024 * 1024
    max_call_bytes: int = 16 * 1024 * 1024
    # Client authentication on: each verified issuer may name only its own FHIR base URLs.
    bind_to_issuers: bool = False
    issuer_servers: Mapping[str, frozenset[str]] = field(default_factory=dict)


# Nothing fetched: only what the call carries (the warm-up, offline evaluation).
NO_FETCH = FetchPolicy(budget_seconds=0.0, timeout_seconds=0.0, max_pages=0, open_servers=frozenset())


@dataclass(frozen=True)
class NextPages:
    """Fetch the pages after those of a prefetch Bundle the EHR sent (its ``link[next]``)."""

    url: str


class Transport(Protocol):
    """How FHIR reads go out: ``get`` returns a response-like context manager with
    ``status_code``, ``headers`` and an unread ``raw`` stream (a requests streamed response
    is one). ``public_only``: refuse a host that resolves to a non-public address."""

    def get(self, url: str, headers: Mapping[str, str], timeout: float, public_only: bool) -> Any: ...


class SessionTransport:
    """requests, one session per thread and kind: connection reuse without sharing a Session
    across threads, and never a connection made for a listed server reused for an unlisted one."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, url: str, headers: Mapping[str, str], timeout: float, public_only: bool) -> Any:
        sessions = self._local.__dict__.setdefault("sessions", {})
        if public_only not in sessions:
            sessions[public_only] = _public_only_session() if public_only else requests.Session()
        return sessions[public_only].get(url, headers=dict(headers), timeout=timeout, allow_redirects=False,
                                         stream=True)


class AddressRefused(NewConnectionError):
    """The host resolved to a loopback, private, link-local or otherwise non-public address."""

    MESSAGE = "the FHIR server's host resolves to a non-public address and the server is not listed; not read"


def public_address(host: str, port: int) -> str:
    """The address to connect to, when every address ``host`` resolves to is public."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global:
            raise AddressRefused(None, AddressRefused.MESSAGE)  # type: ignore[arg-type]
    return str(infos[0][4][0])


class _PublicOnly:
    """Resolve, check, then connect to the very address checked: a second DNS answer (rebinding)
    is never asked for. The host name stays the connection's ``host``, so the Host header, SNI and
    the TLS certificate check still use it. Errors are urllib3's, as from its own ``_new_conn``."""

    _dns_host: str
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        try:
            address = public_address(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        try:
            return create_connection((address, self.port), self.timeout, source_address=self.source_address,
                                     socket_options=self.socket_options)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc  # type: ignore[arg-type]


class _PublicHTTPConnection(_PublicOnly, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}


def _public_only_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: the check must see the real peer
    session.mount("http://", _PublicOnlyAdapter())
    session.mount("https://", _PublicOnlyAdapter())
    return session


class FetchFailed(Exception):
    """One key could not be fetched; the message is safe to log (no token, no data)."""


class ByteCount:
    """Decoded bytes a call has read so far, shared by its fetch threads."""

    def __init__(self) -> None:
        self._read = 0
        self._lock = threading.Lock()

    def add(self, size: int, limit: int) -> None:
        with self._lock:
            self._read += size
            if self._read > limit:
                raise FetchFailed(f"the FHIR responses of this call exceed {limit} bytes; the rest is not read")


def base_url(url: str | None) -> str:
    """A FHIR base URL as compared with the lists: scheme and host in lower case, no trailing slash."""
    parts = urlsplit((url or "").strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}" if parts.netloc else ""


def server_access(policy: FetchPolicy, issuer: str | None, server: str, token: bool) -> tuple[bool, bool]:
    """Whether a call may read ``server`` and whether the server is listed (so that its host may
    be a loopback or private address). Open servers may always be read, without a token too."""
    if server in policy.open_servers:
        return True, True
    if policy.bind_to_issuers:
        listed = server in policy.issuer_servers.get(issuer or "", frozenset())
        return token and listed, listed
    listed = any(server in servers for servers in policy.issuer_servers.values())
    return token, listed


def gather(request: HookRequest, templates: dict[str, str], required: Iterable[str], policy: FetchPolicy,
           transport: Transport | None = None, issuer: str | None = None,
           queued_seconds: float = 0.0) -> dict[str, Any]:
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
    fetch = Fetch(request, policy, deadline, transport or _TRANSPORT, issuer)
    kinds = {key: _resource_type(template) for key, template in templates.items()}
    # Medications that draft orders name only by reference to the FHIR server, read with the keys
    # under the same deadline (issue 20): otherwise the drug is unknown and no rule can clear it.
    references = {f"{MEDICATION_REFERENCE_KEY}{i}": ref
                  for i, ref in enumerate(server_medication_references(request.context, data))}
    fetched = fetch.all({**pending, **references}, {**kinds, **dict.fromkeys(references, "Medication")})
    if found := [{"fullUrl": ref, "resource": fetched[key]} for key, ref in references.items()
                 if isinstance(fetched.get(key), dict)]:
        data[MEDICATION_REFERENCES] = {"resourceType": "Bundle", "type": "collection", "entry": found}
    for key, what in pending.items():
        if key in fetched:
            data[key] = _merge(data.get(key), fetched[key]) if isinstance(what, NextPages) else fetched[key]
        elif request.prefetch.get(key, _MISSING) is None:
            data[key] = None  # the EHR said there is no data, and we could not look again
    missing = sorted(k for k in required if k in templates and k not in data)
    if missing:
        raise PrefetchUnavailable(
            f"required data could not be obtained: {', '.join(missing)}; {fetch.advice()}",
            location=f"$.prefetch.{missing[0]}",
        )
    return data


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
    wanted = []
    for order in resources_in(context.get("draftOrders")):
        reference = order.get("medicationReference")
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(ref, str) and _MEDICATION_REFERENCE.match(ref) and ref not in held and ref not in wanted:
            wanted.append(ref)
    return wanted[:MAX_MEDICATION_REFERENCES]


@dataclass(frozen=True)
class Fetch:
    """One call's FHIR reads: its request (server, token, context), policy, deadline and transport."""

    request: HookRequest
    policy: FetchPolicy
    deadline: float
    transport: Transport
    issuer: str | None = None  # the verified client JWT's ``iss``; None with authentication off
    received: ByteCount = field(default_factory=ByteCount)

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
        if self.refused_server():
            log.warning("fhirServer is not listed for the client's issuer; not read",
                        extra={"issuer": self.issuer})
            return False
        return self._access()[0]

    def refused_server(self) -> bool:
        """Authentication on, and the call names a FHIR server its issuer may not name."""
        return bool(self.request.fhir_server) and self.policy.bind_to_issuers and not self._access()[1]

    def advice(self) -> str:
        """What the client can do about required data that could not be had."""
        if self.refused_server():
            return ("fhirServer is not among the FHIR servers allowed for this client's issuer"
                    " (CDS_ISSUER_FHIR_SERVERS), so it was not read; send the data as prefetch")
        return "send it as prefetch or give access to fhirServer"

    def _count(self, size: int) -> None:
        self.received.add(size, self.policy.max_call_bytes)

    def _access(self) -> tuple[bool, bool]:
        return server_access(self.policy, self.issuer, base_url(self.request.fhir_server),
                             bool(self.request.access_token))

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
        public_only = not self._access()[1]
        try:
            with self.transport.get(url, headers, min(self.policy.timeout_seconds, remaining), public_only) as response:
                if allow_404 and response.status_code in (404, 410):
                    return None
                if response.status_code != 200:
                    raise FetchFailed(f"the FHIR server answered {response.status_code}")
                body = _read_body(response, self.deadline, self.policy.max_response_bytes, self._count)
        except requests.RequestException as exc:
            raise FetchFailed(_connection_problem(exc)) from exc
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


def _read_body(response: Any, deadline: float, max_bytes: int, count: Callable[[int], None]) -> bytes:
    """The body, read as it arrives and given up at the deadline: a server that trickles
    bytes (each read within the socket timeout) must not hold a fetch thread past its call.
    At most ``max_bytes`` decoded bytes are read, and ``count`` (the call's cap) is told of each
    chunk. A read decodes at most 64 KiB (urllib3 bounds its gzip/deflate output by the amount
    asked for), so a compressed bomb is stopped within one chunk of the cap."""
    declared = str(response.headers.get("Content-Length", "")).strip()
    if declared.isdigit() and int(declared) > max_bytes:  # refused before a byte of it is read
        raise FetchFailed(f"a FHIR response declared {declared} bytes, over the cap of {max_bytes}")
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read  # read1: whatever one recv brings
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchFailed("the FHIR server was still sending when the call budget ran out")
        chunk = read(65536, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise FetchFailed(f"a FHIR response exceeds {max_bytes} bytes; the rest is not read")
        count(len(chunk))
        chunks.append(chunk)


def _connection_problem(exc: requests.RequestException) -> str:
    """What went wrong talking to the FHIR server, safe to log: the refusal of a non-public
    address is named; otherwise only the kind of error (its text may hold the URL)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, AddressRefused):
        return AddressRefused.MESSAGE
    return f"{type(exc).__name__} talking to the FHIR server"


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
