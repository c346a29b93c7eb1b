"""The transport seam: how one FHIR read goes out and comes back, bounded and pinned.

Like httpx's ``_transports``: everything about sockets, TLS, decoding and byte caps is here,
and ``read`` is the one entry point the gathering uses. Whatever goes wrong on the wire
(refused, reset, a stall mid-body, a close before the declared length, broken chunking,
invalid gzip, a bad URL) comes out as ``FetchFailed``, whose message is safe to log: the
key is then unavailable, never a 500.

Which addresses: with ``public_only`` a host is resolved once, every address checked to be
public, and the checked address connected to (no DNS rebinding between check and use).
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from typing import Any, Callable, Mapping, Protocol

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

CHUNK = 65536  # decoded bytes per read: urllib3 bounds its gzip/deflate output by the amount asked for

# Everything a read can raise from the network or a malformed answer. ValueError and
# UnicodeError: a URL requests or the IDNA codec refuses; zlib errors come wrapped in DecodeError.
_WIRE_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                OSError, ValueError)


class FetchFailed(Exception):
    """One key could not be fetched; the message is safe to log (no token, no data)."""


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


class ByteCount:
    """Decoded bytes a call has read so far, shared by its fetch threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._read = 0
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self._read += size
            if self._read > self.limit:
                raise FetchFailed(f"the FHIR responses of this call exceed {self.limit} bytes; the rest is not read")


def read(transport: Transport, url: str, headers: Mapping[str, str], *, timeout: float, public_only: bool,
         deadline: float, max_bytes: int, count: Callable[[int], None], allow_404: bool = False) -> bytes | None:
    """The body of a 200 answer (None for a 404 or 410 when ``allow_404``), or FetchFailed.

    The body is read inside the same error boundary as the request: urllib3 raises its own
    errors (not requests') while a streamed body is read."""
    try:
        with transport.get(url, headers, timeout, public_only) as response:
            if allow_404 and response.status_code in (404, 410):
                return None
            if response.status_code != 200:
                raise FetchFailed(f"the FHIR server answered {response.status_code}")
            return _read_body(response, deadline, max_bytes, count)
    except _WIRE_ERRORS as exc:
        raise FetchFailed(connection_problem(exc)) from exc


def _read_body(response: Any, deadline: float, max_bytes: int, count: Callable[[int], None]) -> bytes:
    """The body, read as it arrives and given up at the deadline: a server that trickles
    bytes (each read within the socket timeout) must not hold a fetch thread past its call.
    At most ``max_bytes`` decoded bytes are read, and ``count`` (the call's cap) is told of each
    chunk, so a compressed bomb is stopped within one chunk of the cap."""
    declared = str(response.headers.get("Content-Length", "")).strip()
    if declared.isdigit() and int(declared) > max_bytes:  # refused before a byte of it is read
        raise FetchFailed(f"a FHIR response declared {declared} bytes, over the cap of {max_bytes}")
    raw = response.raw
    read_some = getattr(raw, "read1", None) or raw.read  # read1: whatever one recv brings
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchFailed("the FHIR server was still sending when the call budget ran out")
        chunk = read_some(CHUNK, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise FetchFailed(f"a FHIR response exceeds {max_bytes} bytes; the rest is not read")
        count(len(chunk))
        chunks.append(chunk)


def connection_problem(exc: BaseException) -> str:
    """What went wrong talking to the FHIR server, safe to log: the refusal of a non-public
    address is named; otherwise only the kind of error (its text may hold the URL)."""
    if isinstance(exc, FetchFailed):
        return str(exc)
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, AddressRefused):
        return AddressRefused.MESSAGE
    return f"{type(exc).__name__} talking to the FHIR server"


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
