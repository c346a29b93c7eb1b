"""The one fake FHIR server of the tests and the benchmark, on 127.0.0.1.

``FakeFhir``: an HTTP/1.1 server (stdlib ``http.server``, a thread per connection) whose
answers come from a behaviour, a function given the ``Exchange`` of one GET. It remembers
what it was asked (path and Authorization header). The default behaviour answers every
search with a fixture persona's resources of the type asked for. Tests that inject faults
pass their own behaviour (``tests/test_faults.py``, ``test_fhir_limits.py``); the benchmark
serves a prepared chart after a delay (``bench/fakefhir.py``).

``RawFhir``: a bare TCP server for what a well-behaved HTTP server cannot do (a close before
the declared length, broken chunking, a reset, a stall mid-body): each connection gets the
request read, then a ``script`` writes whatever bytes it likes to the socket.

Both are context managers (serving in a daemon thread; ``stop`` is set on exit, so a
behaviour that waits on it returns) and give ``url()``, the FHIR base URL.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (closed again at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Exchange(BaseHTTPRequestHandler):
    """One GET to the fake server, with ways to answer it."""

    server: FakeFhir
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in separate writes: no 40 ms delayed-ACK stall

    @property
    def kind(self) -> str:
        """The resource type a read or search asks for (the path's last segment before '?')."""
        return self.path.split("?")[0].strip("/").split("/")[-1]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.server.remember:
            with self.server.lock:
                self.server.asked.append((self.path, self.headers.get("Authorization")))
        try:
            self.server.behaviour(self)
        except OSError:  # the service hung up on us (its deadline or a cap): expected
            pass

    def json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(body).encode(), headers)

    def send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.write(payload)

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        with self.server.lock:
            self.server.sent += len(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def persona_searches(name: str = "mcas-adult") -> Callable[[Exchange], None]:
    """A behaviour: every search answered with persona ``name``'s resources of the type asked for."""
    from helpers import persona, searchset  # tests/ on the path: the bench imports this module too

    def answer(exchange: Exchange) -> None:
        exchange.json(200, searchset(persona(name, exchange.kind)))

    return answer


class FakeFhir(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # 5 by default: a burst of fetches would wait on SYN retries

    def __init__(self, behaviour: Callable[[Exchange], None] | None = None, host: str = "127.0.0.1",
                 port: int = 0, remember: bool = True) -> None:
        super().__init__((host, port), Exchange)
        self.remember = remember  # off for a long benchmark run: ``asked`` would only grow
        self.behaviour = behaviour or persona_searches()
        self.asked: list[tuple[str, str | None]] = []
        self.sent = 0  # body bytes written, all exchanges together
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None

    def url(self, host: str = "127.0.0.1", path: str = "/fhir") -> str:
        return f"http://{host}:{self.server_address[1]}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a reset by the service (it gave up at its deadline or a cap) is expected

    def __enter__(self) -> FakeFhir:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)


class RawFhir:
    """A TCP server on 127.0.0.1 whose ``script(connection)`` answers each request with raw bytes."""

    def __init__(self, script: Callable[[socket.socket, RawFhir], None]) -> None:
        self.script = script
        self.stop = threading.Event()
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str = "/fhir") -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                self.requests += 1
                self.script(connection, self)
            except OSError:
                pass

    def __enter__(self) -> RawFhir:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


def head(status: int = 200, **headers: str) -> bytes:
    """A status line and headers, as raw bytes (names with '_' for '-': Content_Length)."""
    lines = [f"HTTP/1.1 {status} OK", "Content-Type: application/fhir+json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def wait_or_stop(server: RawFhir | FakeFhir, seconds: float) -> None:
    """Sleep ``seconds``, or less when the server is shutting down."""
    server.stop.wait(seconds) if seconds > 0 else time.sleep(0)
