"""Storage faults and the cost of auth, against the real server (``cds-service serve``).

Each scenario starts the service from a source tree (this checkout by default,
``--tree`` for another, e.g. an older commit unpacked with ``git archive``) on a
free loopback port with a fresh SQLite file, injects one real fault and prints
what the callers saw as JSON. Figures are reported, never asserted; the suite's
tests (tests/test_storage_faults.py) assert the behaviour.

    python bench/faults.py lock [--seconds 15]   # another process holds BEGIN EXCLUSIVE
    python bench/faults.py readonly              # the file made immutable (chattr +i; root)
    python bench/faults.py startup-readonly      # started on an immutable file
    python bench/faults.py auth [--seconds 8] [--size 300KB]  # hook calls/s with client JWTs vs without

Every process it starts is stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fakefhir import free_port  # noqa: E402 (one copy, shared with the tests)

SERVICE = "back-pain-order-select"
FIXTURE = ROOT / "fhir_fixtures/requests/order-select/mcas-adult--succinylcholine.json"
ISSUER = "https://ehr.example.org"


class Server:
    def __init__(self, tree: Path, database: Path, workers: int = 2, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = database.with_suffix(".log")
        environment = {**os.environ, "PYTHONPATH": str(tree), "CDS_AUTH_REQUIRED": "false",
                       "CDS_DATABASE_URL": f"sqlite:///{database}", "CDS_LOG_LEVEL": "WARNING", **(env or {})}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cds_service", "serve", "--port", str(self.port), "--workers", str(workers)],
                cwd=tree, env=environment, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    def wait(self, seconds: float = 30) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                requests.get(f"{self.base}/healthz", timeout=1)
                return True
            except requests.ConnectionError:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def hook_call(base: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, float, int]:
    """(status, seconds, cards) of one order-select call; status 0 when the connection failed."""
    started = time.perf_counter()
    try:
        response = requests.post(f"{base}/cds-services/{SERVICE}", data=body or FIXTURE.read_bytes(), timeout=30,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    except requests.RequestException:
        return 0, time.perf_counter() - started, 0
    cards = len(response.json().get("cards", [])) if response.status_code == 200 else 0
    return response.status_code, time.perf_counter() - started, cards


def feedback_call(base: str) -> tuple[int, str | None]:
    item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}
    response = requests.post(f"{base}/cds-services/{SERVICE}/feedback", json={"feedback": [item]}, timeout=30)
    return response.status_code, response.headers.get("Retry-After")


def summary(calls: list[tuple[int, float, int]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for status, _, _ in calls:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"calls": len(calls), "statuses": statuses, "with_cards": sum(1 for c in calls if c[2]),
            "max_seconds": round(max((c[1] for c in calls), default=0), 3)}


def scenario_lock(tree: Path, folder: Path, seconds: float) -> dict[str, Any]:
    database = folder / "cds.sqlite3"
    server = Server(tree, database)
    try:
        assert server.wait(), server.log.read_text()
        hook_call(server.base)  # workers connected and warm
        holder = subprocess.Popen([sys.executable, "-c", (
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(float(sys.argv[2])); "
            "c.execute('ROLLBACK')"), str(database), str(seconds)], stdout=subprocess.PIPE, text=True)
        assert holder.stdout and holder.stdout.readline().strip() == "locked"
        calls: list[tuple[int, float, int]] = []
        feedback: list[tuple[int, str | None]] = []
        readyz: list[int] = []
        lock = threading.Lock()

        def caller() -> None:
            while holder.poll() is None:
                result = hook_call(server.base)
                with lock:
                    calls.append(result)

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        while holder.poll() is None:
            feedback.append(feedback_call(server.base))
            readyz.append(requests.get(f"{server.base}/readyz", timeout=30).status_code)
            time.sleep(0.5)
        for thread in threads:
            thread.join()
        after = [hook_call(server.base) for _ in range(20)]
        return {"lock_seconds": seconds, "during": summary(calls),
                "feedback_during": {"statuses": sorted({f[0] for f in feedback}), "count": len(feedback),
                                    "retry_after": sorted({f[1] for f in feedback if f[1]})},
                "readyz_during": sorted(set(readyz)), "after": summary(after)}
    finally:
        server.stop()


def _immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)


def scenario_readonly(tree: Path, folder: Path) -> dict[str, Any]:
    database = folder / "cds.sqlite3"
    server = Server(tree, database)
    try:
        assert server.wait(), server.log.read_text()
        _immutable(database, True)  # before any worker opened its connection
        try:
            during = [hook_call(server.base) for _ in range(20)]
            feedback = [feedback_call(server.base) for _ in range(5)]
            ready = requests.get(f"{server.base}/readyz", timeout=30)
        finally:
            _immutable(database, False)
        healed = [hook_call(server.base) for _ in range(60)]
        feedback_after = [feedback_call(server.base) for _ in range(5)]
        return {"during": summary(during), "feedback_during": sorted({f[0] for f in feedback}),
                "readyz_during": [ready.status_code, ready.json().get("status")],
                "after_fault_cleared": summary(healed), "feedback_after": sorted({f[0] for f in feedback_after})}
    finally:
        server.stop()


def scenario_startup_readonly(tree: Path, folder: Path) -> dict[str, Any]:
    database = folder / "cds.sqlite3"
    first = Server(tree, database)  # make and migrate the database, then make it immutable
    try:
        assert first.wait(), first.log.read_text()
    finally:
        first.stop()
    _immutable(database, True)
    server = Server(tree, database)
    try:
        up = server.wait(20)
        ready = requests.get(f"{server.base}/readyz", timeout=30).json() if up else None
        server.process.wait(timeout=30) if not up else None
        return {"started": up, "readyz": ready, "exit_code": server.process.poll(),
                "message": server.log.read_text(errors="replace").strip().splitlines()[-3:]}
    finally:
        server.stop()
        _immutable(database, False)


def scenario_auth(tree: Path, folder: Path, seconds: float, size: str | None, connections: int = 4) -> dict[str, Any]:
    """Alternating rounds with and without client JWTs (ES384, pre-minted, each used once).

    ``size``: a bench payload (``payloads.SIZES``: 20KB, 300KB, 1MB) instead of the small fixture."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    issuers = {ISSUER: {"keys": [{**public, "kid": "bench", "alg": "ES384", "use": "sig"}]}}
    body = None
    if size:
        sys.path.insert(0, str(ROOT / "bench"))
        import payloads

        body = payloads.body_bytes("order-select", payloads.SIZES[size])
    results = {}
    for mode in ("off", "on", "off", "on"):  # alternated: a busy machine hurts both alike
        database = folder / f"auth-{mode}-{len(results)}.sqlite3"
        port = free_port()
        base = f"http://127.0.0.1:{port}"  # the JWT audience names it
        env = {"CDS_AUTH_REQUIRED": "true" if mode == "on" else "false",
               "CDS_TRUSTED_ISSUERS": json.dumps(issuers), "CDS_PUBLIC_BASE_URL": base}
        server = Server(tree, database, env=env, port=port)
        try:
            assert server.wait(), server.log.read_text()
            aud = f"{base}/cds-services/{SERVICE}"
            now = int(time.time())
            tokens = [jwt.encode({"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 600, "jti": str(uuid.uuid4())},
                                 key, algorithm="ES384", headers={"kid": "bench", "typ": "JWT"})
                      for _ in range(int(seconds * 400))] if mode == "on" else []
            for _ in range(20):  # warm-up
                hook_call(base, {"Authorization": f"Bearer {tokens.pop()}"} if tokens else None, body)
            done: list[tuple[int, float, int]] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + seconds

            # Each thread is handed this round's values (a closure would read the loop's variables: B023).
            def load(stop_at: float, lock: threading.Lock, tokens: list[str], mode: str, base: str,
                     done: list[tuple[int, float, int]]) -> None:
                while time.monotonic() < stop_at:
                    with lock:
                        token = tokens.pop() if tokens else None
                    if mode == "on" and token is None:
                        return
                    result = hook_call(base, {"Authorization": f"Bearer {token}"} if token else None, body)
                    with lock:
                        done.append(result)

            started, cpu_before = time.monotonic(), _workers_cpu(server.process.pid)
            threads = [threading.Thread(target=load, args=(stop_at, lock, tokens, mode, base, done))
                       for _ in range(connections)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed, cpu = time.monotonic() - started, _workers_cpu(server.process.pid) - cpu_before
            ok = sum(1 for c in done if c[0] == 200)
            results[f"{mode}-{len(results)}"] = {"req_per_s": round(ok / elapsed, 1),
                                                 "worker_cpu_ms_per_req": round(cpu * 1000 / max(ok, 1), 2),
                                                 **summary(done)}
        finally:
            server.stop()
    best = {mode: max(v["req_per_s"] for k, v in results.items() if k.startswith(mode)) for mode in ("on", "off")}
    cpu = {mode: min(v["worker_cpu_ms_per_req"] for k, v in results.items() if k.startswith(mode))
           for mode in ("on", "off")}
    return {"payload": size or FIXTURE.name, "rounds": results, "best_req_per_s": best, "ratio_on_off": round(best["on"] / best["off"], 3),
            "least_worker_cpu_ms_per_req": cpu}


def _workers_cpu(master: int) -> float:
    """CPU seconds (user + system) used so far by the gunicorn workers of ``master``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["lock", "readonly", "startup-readonly", "auth"])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to serve (default: this checkout)")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--size", choices=["20KB", "300KB", "1MB"], help="auth: a bench payload instead of the fixture")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cds-faults-") as folder:
        if args.scenario == "lock":
            result = scenario_lock(args.tree, Path(folder), args.seconds or 15)
        elif args.scenario == "readonly":
            result = scenario_readonly(args.tree, Path(folder))
        elif args.scenario == "startup-readonly":
            result = scenario_startup_readonly(args.tree, Path(folder))
        else:
            result = scenario_auth(args.tree, Path(folder), args.seconds or 8, args.size)
    print(json.dumps({"scenario": args.scenario, "tree": str(args.tree), **result}, indent=2))


if __name__ == "__main__":
    main()
