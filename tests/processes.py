"""Real processes for the deployment tests: the service under gunicorn, nginx in front, slow clients.

``Service`` runs ``cds-service serve`` in its own session (so master and workers can be
signalled together); ``Front`` renders deploy/nginx.conf for the given instances and runs a
private nginx with its own prefix. Both are context managers that always stop what they started.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from fakefhir import Exchange, FakeFhir, free_port  # noqa: F401 (free_port: the deployment tests import it here)

ROOT = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf"
PATIENT_VIEW = "/cds-services/back-pain-patient-view"


def nginx_binary() -> str:
    """The nginx executable, or a loud skip: CI (.ci/run) installs nginx-light."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if not found:
        pytest.skip("NGINX IS NOT INSTALLED: the front tests did NOT run (apt-get install nginx-light; .ci/run does)")
    return found


def worker_pids(master: int) -> set[int]:
    """The gunicorn master's worker processes now (it forks them from its main thread)."""
    try:
        return {int(child) for child in Path(f"/proc/{master}/task/{master}/children").read_text().split()}
    except FileNotFoundError:
        return set()


def _handles_its_signals(pid: int) -> bool:
    """A forked gunicorn worker has set up its own signal handlers: it catches SIGABRT, which the
    master does not (before that it runs the master's handlers, and a SIGTERM is lost)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGABRT - 1)))
    except FileNotFoundError:
        pass
    return False


def workers_ready(master: int, expected: int) -> bool:
    """Every worker asked for is forked and takes SIGTERM as a worker does."""
    workers = worker_pids(master)
    return len(workers) >= expected and all(_handles_its_signals(pid) for pid in workers)


class Service:
    """``cds-service serve`` on a free port; SIGTERM to the group on exit, SIGKILL if it lingers."""

    def __init__(self, tmp_path: Path, name: str, *serve_args: str, env: dict[str, str] | None = None,
                 command: str | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"{name}.log"
        command = command or shutil.which("cds-service", path=str(Path(sys.executable).parent)) or "cds-service"
        environment = {"CDS_AUTH_REQUIRED": "false", "CDS_LOG_LEVEL": "WARNING",
                       "CDS_DATABASE_URL": f"sqlite:///{tmp_path / (name + '.sqlite3')}",
                       **{k: v for k, v in os.environ.items() if k != "GUNICORN_CMD_ARGS"}, **(env or {})}
        # serve's --workers (every test gives it; else serve's default, 2 x cores)
        given = [serve_args[i + 1] for i, arg in enumerate(serve_args[:-1]) if arg == "--workers"]
        self.expected_workers = int(given[-1]) if given else (os.cpu_count() or 1) * 2
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([command, "serve", "--port", str(self.port), *serve_args],
                                            env=environment, stdout=subprocess.DEVNULL, stderr=log,
                                            start_new_session=True)

    def __enter__(self) -> "Service":
        """Ready: /readyz answers 200 and every worker is forked and has set up its signal
        handlers. A worker answers /readyz while the master may still be forking the next; a
        SIGTERM that reaches a worker before it has set up its handlers is lost, and stopping then
        took the whole graceful timeout (30 s)."""
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                ready = ready or requests.get(f"{self.base}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                pass
            if ready and workers_ready(self.process.pid, self.expected_workers):
                return self
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"the service did not become ready: {self.log()[-2000:]}")

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        """The master's worker processes now (gunicorn forks them from its main thread)."""
        return worker_pids(self.process.pid)

    def replaced_after(self, before: set[int], logged: str, seconds: float = 30) -> None:
        """Wait until ``logged`` is in the log and none of the workers ``before`` (a reload's) is
        left, new ones answering instead: what a fixed sleep after SIGHUP used to wait for."""
        assert before, "no workers were seen before the reload"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = self.workers()
            if logged in self.log() and now and not now & before:
                return
            time.sleep(0.05)
        pytest.fail(f"no reload seen within {seconds} s (workers before {before}, now {self.workers()}): "
                    f"{self.log()[-2000:]}")

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)  # the master; it passes SIGTERM/SIGHUP on to its workers

    def kill(self) -> None:
        """SIGKILL to master and workers at once: nothing is flushed or finished."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM to the group, again each second (a worker still starting may have missed the
        first: see __enter__), for at most 40 s; then SIGKILL."""
        deadline = time.monotonic() + 40
        while self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=1)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    break
        if self.process.poll() is None:
            self.kill()


def render_nginx(upstreams: list[str], listen: str, max_conns: int) -> str:
    lines = []
    for line in NGINX_TEMPLATE.read_text("utf-8").splitlines():
        if "{{upstream}}" in line:
            lines.extend(line.replace("{{upstream}}", upstream) for upstream in upstreams)
        else:
            lines.append(line)
    return "\n".join(lines).replace("{{listen}}", listen).replace("{{max_conns}}", str(max_conns)) + "\n"


class Front:
    """A private nginx with the rendered deploy/nginx.conf; ``nginx -s quit``, then SIGKILL, on exit."""

    def __init__(self, tmp_path: Path, upstreams: list[str], max_conns: int, port: int | None = None) -> None:
        self.binary = nginx_binary()
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.prefix = tmp_path / "nginx"
        self.prefix.mkdir(exist_ok=True)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(render_nginx(upstreams, f"127.0.0.1:{self.port}", max_conns), "utf-8")
        # As root, nginx's workers would run as 'nobody' and could not write into pytest's tmp_path.
        self.globals = ["-g", "user root;"] if os.geteuid() == 0 else []
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Front":
        check = subprocess.run([self.binary, "-t", "-p", str(self.prefix), "-c", str(self.conf), *self.globals],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        with open(self.prefix / "stderr.log", "wb") as log:
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.prefix), "-c", str(self.conf), *self.globals, "-g", "daemon off;"],
                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        pytest.fail(f"nginx did not start: {(self.prefix / 'stderr.log').read_text(errors='replace')}")

    def __exit__(self, *exc: Any) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish what was accepted
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class SlowClients:
    """Connections that send a request one byte a second, in its headers or in its body."""

    def __init__(self, port: int, headers: int, bodies: int) -> None:
        self.port, self.stop_event = port, threading.Event()
        kinds = ["header"] * headers + ["body"] * bodies
        self.holding = [threading.Event() for _ in kinds]
        self.threads = [threading.Thread(target=self._trickle, args=(kind, holding), daemon=True)
                        for kind, holding in zip(kinds, self.holding, strict=True)]

    def __enter__(self) -> "SlowClients":
        for thread in self.threads:
            thread.start()
        # every connection open and holding (its first bytes sent) before the measured calls start
        deadline = time.monotonic() + 10
        for holding in self.holding:
            assert holding.wait(max(0.0, deadline - time.monotonic())), "a slow client could not connect"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=5)

    def _trickle(self, kind: str, holding: threading.Event) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                head = f"POST {PATIENT_VIEW} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                if kind == "body":
                    sock.sendall((head + "Content-Length: 100000\r\n\r\n").encode())
                else:
                    sock.sendall(head.encode())
                holding.set()
                while not self.stop_event.wait(1.0):
                    sock.sendall(b"X" if kind == "header" else b" ")
        except OSError:
            pass  # the server gave up on us: that is what a server should do


def timed_calls(base: str, body: dict[str, Any], count: int, timeout: float) -> list[tuple[int, float]]:
    """``count`` hook calls one after another: (status, seconds) each; status 0 when none came."""
    results = []
    with requests.Session() as session:
        for _ in range(count):
            started = time.perf_counter()
            try:
                status = session.post(base + PATIENT_VIEW, json=body, timeout=timeout).status_code
            except requests.RequestException:
                status = 0
            results.append((status, time.perf_counter() - started))
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Postgres:
    """A PostgreSQL database for one test module: a fresh schema in CDS_TEST_POSTGRES_URL when set
    (CI), else a throwaway cluster started here as .ci/run does; a loud skip when neither can be had."""

    def __init__(self) -> None:
        self.cluster: Path | None = None
        self.schema = f"t_{os.urandom(6).hex()}"
        self.as_postgres: list[str] = []

    def __enter__(self) -> str:
        server = os.environ.get("CDS_TEST_POSTGRES_URL") or self._start_cluster()
        import psycopg

        self.server = server
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {self.schema}")
        return f"{server}{'&' if '?' in server else '?'}options=-csearch_path%3D{self.schema}"

    def __exit__(self, *exc: Any) -> None:
        import psycopg

        try:
            with psycopg.connect(self.server, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA {self.schema} CASCADE")
        finally:
            if self.cluster:
                subprocess.run([*self.as_postgres, f"{self.bin}/pg_ctl", "-D", str(self.cluster), "-m", "immediate",
                                "-w", "stop"], capture_output=True, timeout=60)
                shutil.rmtree(self.home, ignore_errors=True)

    def _start_cluster(self) -> str:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            pytest.skip("POSTGRESQL IS NOT AVAILABLE (no CDS_TEST_POSTGRES_URL, no initdb): the shared-store test did NOT run")
        self.bin = str(bins[-1].parent)
        # Not under pytest's tmp_path: its parents are private to root, and the cluster runs as postgres.
        home = self.home = Path(tempfile.mkdtemp(prefix="cds-test-pg."))
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(home, "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self.cluster, port = home / "data", free_port()
        subprocess.run([*self.as_postgres, f"{self.bin}/initdb", "-D", str(self.cluster), "-U", "postgres",
                        "--auth=trust", "--encoding=UTF8", "--locale=C"], check=True, capture_output=True, timeout=120)
        subprocess.run([*self.as_postgres, f"{self.bin}/pg_ctl", "-D", str(self.cluster), "-l", str(home / "log"), "-w",
                        "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"


@contextmanager
def slow_fhir_server(delay: float, asked: threading.Event | None = None) -> Iterator[str]:
    """A FHIR server on loopback that takes ``delay`` seconds over every answer (an empty chart);
    ``asked`` is set when a request arrives."""

    def slow(exchange: Exchange) -> None:
        if asked is not None:
            asked.set()
        if exchange.server.stop.wait(delay):
            return
        body = {"resourceType": "Bundle", "type": "searchset", "entry": []} if "?" in exchange.path \
            else {"resourceType": "Patient", "id": "slow", "birthDate": "1970-01-01"}
        exchange.json(200, body)

    with FakeFhir(slow) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"
