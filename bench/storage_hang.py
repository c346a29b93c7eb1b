"""A hung or unreachable PostgreSQL: what a direct hook call, /readyz and feedback cost.

In-process (the Flask app, its real storage, a real PostgreSQL): a few warm-up calls, then every
process of the cluster is stopped with SIGSTOP (``frozen``) or the URL is pointed at a loopback
port nobody listens on (``refused``), and three hook calls (with the override lookup on), /readyz
and one feedback call are timed. The cluster is resumed with SIGCONT at the end, and after
``--resume-after`` seconds whatever happens (an unbounded wait then shows as that long).
Figures are printed, never asserted (tests/test_storage_hang.py asserts the behaviour).

    python bench/storage_hang.py frozen --postgres-url URL --postmaster-pid PID
    python bench/storage_hang.py refused --postgres-url URL

PID: the first line of the cluster's ``postmaster.pid``. Run it as root or the server's user.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import NOW, request_fixture  # noqa: E402

from cds_service import create_app  # noqa: E402

FIXTURE = "order-select/mcas-adult--succinylcholine.json"
CALL = "/cds-services/back-pain-order-select"
FEEDBACK = {"feedback": [{"card": "8b1c2d3e-0000-4000-8000-000000000001", "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-23T12:00:00Z"}]}


def cluster(postmaster: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
        except OSError:
            pass
    return [postmaster, *children]


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def timed(client: Any, method: str, path: str, **kwargs: Any) -> tuple[int, float, float, str]:
    """(status, ms until the answer, ms with the after-answer work, storage said by /readyz)."""
    started = time.monotonic()
    response = getattr(client, method)(path, buffered=False, **kwargs)
    response.get_data()
    answered = time.monotonic() - started
    response.close()
    said = response.get_json().get("storage", "") if path == "/readyz" else ""
    return response.status_code, answered * 1000, (time.monotonic() - started) * 1000, said


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["frozen", "refused"])
    parser.add_argument("--postgres-url", required=True)
    parser.add_argument("--postmaster-pid", type=int)
    parser.add_argument("--resume-after", type=float, default=25.0)
    args = parser.parse_args()
    app = create_app({"TESTING": True, "AUTH_REQUIRED": False, "DATABASE_URL": args.postgres_url,
                      "CLOCK": lambda: NOW, "OPEN_FHIR_SERVERS": [], "PATIENT_KEY_SECRET": "bench-only-secret"})
    client = app.test_client()
    for _ in range(3):
        timed(client, "post", CALL, json=request_fixture(FIXTURE))
    pids: list[int] = []
    if args.scenario == "frozen":
        pids = cluster(args.postmaster_pid)
        threading.Timer(args.resume_after, lambda: signal_all(pids, signal.SIGCONT)).start()
        signal_all(pids, signal.SIGSTOP)
    else:
        storage = app.extensions["cds"].storage
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        storage.backend.url = args.postgres_url.replace(f":{urlsplit(args.postgres_url).port}/", f":{port}/")
        storage.close()  # the pool's connections: the next ones go to the closed port
    try:
        for n in range(3):
            status, answered, whole, _ = timed(client, "post", CALL, json=request_fixture(FIXTURE))
            print(f"{args.scenario}: hook call {n + 1}: {status} answered in {answered:.0f} ms "
                  f"({whole:.0f} ms with the card record after the answer)")
        status, answered, _, said = timed(client, "get", "/readyz")
        print(f"{args.scenario}: /readyz {status} in {answered:.0f} ms: {said}")
        status, answered, _, _ = timed(client, "post", CALL + "/feedback", json=FEEDBACK)
        print(f"{args.scenario}: feedback {status} in {answered:.0f} ms")
    finally:
        signal_all(pids, signal.SIGCONT)
    os._exit(0)  # the resume timer is not waited for


if __name__ == "__main__":
    main()
