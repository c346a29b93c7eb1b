"""Figures for the front and the serving defaults (docs/operations.md quotes them).

    .venv/bin/python bench/front.py [--before CMD]   # CMD: an older version's cds-service
                                                     # (installed in its own virtualenv)

For each server setup (optionally an older version's ``serve`` for a before/after):
- slow clients: how many normal hook calls are answered in 10 s (2 s timeout each, one after
  another) while 4, 16 or 32 connections trickle a byte a second (half in their headers, half
  in their bodies), straight at gunicorn and behind deploy/nginx.conf;
- 256 connections: wrk with 256 connections calling back to back for 6 s: p50/p99, refusals;
- a slow FHIR server: normal calls for 10 s while 32 clients call without prefetch against a
  FHIR server that takes 1.5 s over each answer (bench/slowfhir.py);
- first call per worker: one worker, a fresh server, the first call against the next four.
Prints a JSON summary. Takes a few minutes; not part of the suite (timings are never tested).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from processes import PATIENT_VIEW, Front, Service, SlowClients, free_port, percentile, timed_calls  # noqa: E402

HERE = Path(__file__).resolve().parent
CHART_FILE = HERE.parent / "fhir_fixtures" / "requests" / "patient-view" / "mcas-adult--chart-open.json"
CHART = json.loads(CHART_FILE.read_text("utf-8"))


def slow_clients(base: str, port: int) -> dict[str, Any]:
    figures = {}
    for slow in (4, 16, 32):
        with SlowClients(port, headers=slow // 2, bodies=slow // 2):
            results, deadline = [], time.monotonic() + 10
            while time.monotonic() < deadline:
                results += timed_calls(base, CHART, count=1, timeout=2)
        answered = [seconds for status, seconds in results if status == 200]
        figures[f"{slow} slow"] = {"answered": len(answered), "tried": len(results),
                                   "p99_s": round(percentile(answered, 0.99), 3) if answered else None}
    return figures


def burst(base: str, body_file: Path, clients: int = 256, seconds: int = 6) -> dict[str, Any] | str:
    """wrk (as make bench uses it): ``clients`` connections calling back to back for ``seconds``."""
    wrk = shutil.which("wrk")
    if not wrk:
        return "wrk is not installed (apt-get install wrk): not measured"
    out = subprocess.run([wrk, "-t2", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s",
                          str(HERE / "post.lua"), base + PATIENT_VIEW],
                         env={**os.environ, "BENCH_BODY": str(body_file)}, capture_output=True, text=True,
                         timeout=seconds + 60)
    raw = json.loads(next(ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")))
    latency = raw["latency_us"]
    return {"calls": raw["requests"], "not 2xx (503)": raw["errors"]["status"],
            "socket errors": raw["errors"]["connect"] + raw["errors"]["read"] + raw["errors"]["write"]
            + raw["errors"]["timeout"],
            "p50_ms": round(latency["p50"] / 1000, 1), "p99_ms": round(latency["p99"] / 1000, 1),
            "max_ms": round(latency["max"] / 1000, 1)}


def slow_fhir(base: str, fhir: str, callers: int = 32) -> dict[str, Any]:
    """Normal calls (data prefetched) for 10 s while ``callers`` clients keep calling without
    prefetch against a FHIR server that takes 1.5 s over every answer."""
    body = {key: value for key, value in CHART.items() if key != "prefetch"}
    body.update(fhirServer=fhir, fhirAuthorization={"access_token": "bench", "token_type": "Bearer",
                                                    "expires_in": 300, "scope": "patient/*.read", "subject": "bench"})
    stop = threading.Event()

    def caller() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    session.post(base + PATIENT_VIEW, json=body, timeout=15)
                except requests.RequestException:
                    pass

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    results, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline:
        results += timed_calls(base, CHART, count=1, timeout=10)
    stop.set()
    for thread in threads:
        thread.join()
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    answered = [seconds for status, seconds in results if status == 200]
    return {"normal calls": len(results), "statuses": statuses,
            "answered within 2 s": sum(1 for seconds in answered if seconds <= 2.0),
            "p50_ms": round(percentile(answered, 0.5) * 1000, 1) if answered else None,
            "max_ms": round(max(answered) * 1000, 1) if answered else None}


@contextmanager
def fake_fhir(delay_ms: int) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "slowfhir.py"), "--port", str(port), "--delay-ms",
                               str(delay_ms)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while server.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:  # never listened: a measurement against a dead URL would report nonsense
            raise RuntimeError(f"the fake FHIR server did not start (exit code {server.poll()})")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def first_calls(tmp: Path, command: str | None, rounds: int = 3) -> list[list[float]]:
    figures = []
    for n in range(rounds):
        with Service(tmp, f"first-{n}", "--workers", "1", command=command) as service:
            figures.append([round(s * 1000, 1) for _, s in timed_calls(service.base, CHART, count=5, timeout=10)])
    return figures


def measure(base: str, port: int, fhir: str) -> dict[str, Any]:
    return {"slow clients": slow_clients(base, port), "256": burst(base, CHART_FILE),
            "slow FHIR server": slow_fhir(base, fhir)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", help="an older version's cds-service: its `serve` at its defaults is measured too")
    args = parser.parse_args()
    # name: (command, behind nginx, nginx max_conns = what the instance serves at once)
    setups: dict[str, tuple[str | None, bool, int]] = {"now, 4 gthread x 16, direct": (None, False, 64),
                                                       "now, 4 gthread x 16, behind nginx": (None, True, 64)}
    if args.before:
        setups = {"before, 4 sync, direct": (args.before, False, 4),
                  "before, 4 sync, behind nginx": (args.before, True, 4), **setups}
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir, fake_fhir(1500) as fhir:
        tmp = Path(tmp_dir)
        for n, (name, (command, fronted, max_conns)) in enumerate(setups.items()):
            # the fake FHIR server is on loopback: listed, or every fetch is refused at connect time
            # and the "slow FHIR server" callers would never wait on it
            with Service(tmp, f"setup-{n}", "--workers", "4", command=command,
                         env={"CDS_OPEN_FHIR_SERVERS": json.dumps([fhir])}) as service:
                if fronted:
                    with Front(tmp, [f"127.0.0.1:{service.port}"], max_conns) as front:
                        summary[name] = measure(front.base, front.port, fhir)
                else:
                    summary[name] = measure(service.base, service.port, fhir)
            print(name, json.dumps(summary[name]), flush=True)
        summary["first call per worker, ms (now)"] = first_calls(tmp, None)
        if args.before:
            summary["first call per worker, ms (before)"] = first_calls(tmp, args.before)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
