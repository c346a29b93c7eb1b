"""Figures for the front and the serving defaults (docs/operations.md quotes them).

    .venv/bin/python bench/front.py [--before CMD]   # CMD: an older version's cds-service
                                                     # (installed in its own virtualenv)

For each server setup (optionally an older version's ``serve`` for a before/after):
- slow clients: how many normal hook calls are answered in 10 s (2 s timeout each, one after
  another) while 4, 16 or 32 connections trickle a byte a second (half in their headers, half
  in their bodies), straight at gunicorn and behind deploy/nginx.conf;
- 256 connections: wrk with 256 connections calling back to back for 6 s: p50/p99, refusals;
- first call per worker: one worker, a fresh server, the first call against the next four.
Prints a JSON summary. Takes a few minutes; not part of the suite (timings are never tested).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from processes import PATIENT_VIEW, Front, Service, SlowClients, percentile, timed_calls  # noqa: E402

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


def first_calls(tmp: Path, command: str | None, rounds: int = 3) -> list[list[float]]:
    figures = []
    for n in range(rounds):
        with Service(tmp, f"first-{n}", "--workers", "1", command=command) as service:
            figures.append([round(s * 1000, 1) for _, s in timed_calls(service.base, CHART, count=5, timeout=10)])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", help="an older version's cds-service: its `serve` at its defaults is measured too")
    args = parser.parse_args()
    setups: dict[str, tuple[str | None, tuple[str, ...], bool]] = {"now, gthread, direct": (None, (), False),
                                                                  "now, gthread, behind nginx": (None, (), True)}
    if args.before:
        setups = {"before, direct": (args.before, (), False), "before, behind nginx": (args.before, (), True),
                  **setups}
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name, (command, serve_args, fronted) in setups.items():
            with Service(tmp, name.replace(" ", "").replace(",", "-"), "--workers", "4", *serve_args,
                         command=command) as service:
                if fronted:
                    with Front(tmp, [f"127.0.0.1:{service.port}"], 32) as front:
                        summary[name] = {"slow clients": slow_clients(front.base, front.port), "256": burst(front.base, CHART_FILE)}
                else:
                    summary[name] = {"slow clients": slow_clients(service.base, service.port),
                                     "256": burst(service.base, CHART_FILE)}
            print(name, json.dumps(summary[name]), flush=True)
        summary["first call per worker, ms (now)"] = first_calls(tmp, None)
        if args.before:
            summary["first call per worker, ms (before)"] = first_calls(tmp, args.before)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
