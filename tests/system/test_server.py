"""The real server: ``cds-service serve`` under gunicorn, spoken to over HTTP."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from fakefhir import free_port
from helpers import request_fixture
from processes import workers_ready

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path):
    port = free_port()
    command = shutil.which("cds-service", path=str(Path(sys.executable).parent)) or "cds-service"
    env = {**os.environ, "CDS_AUTH_REQUIRED": "false", "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen([command, "serve", "--port", str(port), "--workers", "2"], env=env,
                               stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.05)
    else:
        process.kill()
        process.wait()
        log.close()
        pytest.fail(f"server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
    # both workers up, or the SIGTERM below could reach one still starting and be lost (a 30 s stop)
    while not workers_ready(process.pid, 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield base
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=15)
    log.close()


def test_served_service_answers_discovery_hooks_and_feedback(server):
    assert requests.get(f"{server}/readyz", timeout=5).json()["status"] == "ready"
    services = requests.get(f"{server}/cds-services", timeout=5).json()["services"]
    assert len(services) == 3
    response = requests.post(f"{server}/cds-services/back-pain-order-select",
                             json=request_fixture("order-select/mcas-adult--succinylcholine.json"), timeout=5)
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert card["source"]["topic"]["code"] == "mcas.neuromuscular-blocker"
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-23T12:00:00Z"}]}
    answer = requests.post(f"{server}/cds-services/back-pain-order-select/feedback", json=feedback, timeout=5)
    assert answer.status_code == 200 and answer.json() == {}
