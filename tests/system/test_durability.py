"""Durability: what the service acknowledged survives a SIGKILL of the whole server.

The real server (``cds-service serve --workers 2``, gunicorn, SQLite in WAL
mode) receives feedback from four client processes at once, one item per
POST as the sandbox sends it. Mid-stream the server's whole process group
(master and workers) is killed with SIGKILL, the server is restarted on the
same database, and every item that was acknowledged with a 200 must be in
the SQLite file, read directly. The figures are printed (visible with ``-s``)
and written to /tmp/cds-durability-summary.json.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from processes import Service

pytestmark = pytest.mark.slow

CLIENTS = 4
ITEMS_PER_CLIENT = 50
KILL_AFTER_ACKS = 100  # of 200: mid-stream
SUMMARY_FILE = Path("/tmp/cds-durability-summary.json")
FEEDBACK = "/cds-services/back-pain-order-select/feedback"

# One client: posts its items one per request; appends each acknowledged card uuid
# to its file (flushed at once); stops at the first failure (the server is gone).
CLIENT = r"""
import sys, uuid, requests
base, client, count, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with open(out, "a", encoding="utf-8") as acked, requests.Session() as session:
    for i in range(count):
        card = str(uuid.uuid5(uuid.NAMESPACE_URL, f"durability/{client}/{i}"))
        item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z",
                "overrideReason": {"reason": {"code": "patient-declined",
                                              "system": "https://cds-back-pain.example.org/fhir/CodeSystem/override-reason"}}}
        try:
            response = session.post(base + "/cds-services/back-pain-order-select/feedback",
                                    json={"feedback": [item]}, timeout=10)
        except requests.RequestException:
            break
        if response.status_code != 200:
            break
        acked.write(card + "\n")
        acked.flush()
"""


def _server(tmp_path: Path, database: Path, name: str) -> Service:
    """``cds-service serve --workers 2`` on the database, in its own session (killed as a group)."""
    return Service(tmp_path, name, "--workers", "2", env={"CDS_DATABASE_URL": f"sqlite:///{database}"})


def _acknowledged(files: list[Path]) -> list[str]:
    lines: list[str] = []
    for path in files:
        if path.exists():
            lines.extend(line for line in path.read_text("utf-8").splitlines() if len(line) == 36)
    return lines


def test_acknowledged_feedback_survives_sigkill_of_the_server(tmp_path: Path):
    database = tmp_path / "cds.sqlite3"
    clients: list[subprocess.Popen[bytes]] = []
    with _server(tmp_path, database, "first") as server:
        try:
            files = [tmp_path / f"acked-{n}.txt" for n in range(CLIENTS)]
            clients = [
                subprocess.Popen([sys.executable, "-c", CLIENT, server.base, str(n), str(ITEMS_PER_CLIENT),
                                  str(files[n])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for n in range(CLIENTS)
            ]
            deadline = time.monotonic() + 120  # a bound on a stuck stream, not a speed target
            while len(_acknowledged(files)) < KILL_AFTER_ACKS and time.monotonic() < deadline:
                if all(c.poll() is not None for c in clients):
                    break
                time.sleep(0.002)
            acked_at_kill = len(_acknowledged(files))
            server.kill()
            for c in clients:
                c.wait(timeout=20)
        finally:
            for c in clients:
                if c.poll() is None:
                    c.kill()
                    c.wait()

    acknowledged = set(_acknowledged(files))
    total = CLIENTS * ITEMS_PER_CLIENT
    assert acked_at_kill >= KILL_AFTER_ACKS, f"only {acked_at_kill} acknowledged before the kill"
    assert len(acknowledged) < total, "the kill came after the stream had ended: not mid-stream"

    with _server(tmp_path, database, "restarted") as restarted:  # start-up (migrations) works after the kill
        answer = requests.post(f"{restarted.base}{FEEDBACK}", timeout=10, json={"feedback": [
            {"card": "00000000-0000-4000-8000-000000000001", "outcome": "overridden",
             "outcomeTimestamp": "2026-11-23T12:00:00Z"}]})
        assert answer.status_code == 200

    with sqlite3.connect(database) as conn:
        stored = {row[0] for row in conn.execute("SELECT DISTINCT card_uuid FROM feedback")}
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    found = acknowledged & stored
    lost = sorted(acknowledged - stored)
    unacknowledged_but_stored = len(stored - acknowledged) - 1  # minus the item posted after the restart
    summary = {"clients": CLIENTS, "items_per_client": ITEMS_PER_CLIENT, "posted_at_most": total,
               "acknowledged_when_killed": acked_at_kill, "acknowledged": len(acknowledged),
               "found_after_restart": len(found), "lost": len(lost),
               "stored_without_acknowledgement": unacknowledged_but_stored, "integrity_check": integrity}
    SUMMARY_FILE.write_text(json.dumps(summary, indent=2), "utf-8")
    print(f"\nfeedback durability after SIGKILL of the server's process group: {len(acknowledged)} acknowledged,"
          f" {len(found)} found after restart, {len(lost)} lost ({unacknowledged_but_stored} stored without"
          f" an acknowledgement, in flight at the kill); {CLIENTS} clients x {ITEMS_PER_CLIENT} items;"
          f" integrity {integrity}; details in {SUMMARY_FILE}")
    assert integrity == "ok"
    assert not lost, f"{len(lost)} acknowledged feedback items lost, e.g. {lost[:3]}"
