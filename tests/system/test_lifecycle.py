"""Lifecycle of the real server: SIGTERM drains, SIGHUP reloads knowledge without dropping a call.

``cds-service serve`` runs under gunicorn in its own session; calls are made over real sockets.
"""
from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from helpers import request_fixture
from processes import PATIENT_VIEW, ROOT, Service, slow_fhir_server

pytestmark = pytest.mark.slow

TITLE = "Back pain in MCAS and MS - chart review"


def test_a_call_in_flight_when_sigterm_arrives_is_answered(tmp_path: Path):
    asked = threading.Event()
    with slow_fhir_server(1.0, asked) as server:
        body = {**request_fixture("patient-view/mcas-adult--chart-open.json"), "fhirServer": server}
        del body["prefetch"]
        with Service(tmp_path, "drain", "--workers", "1", env={"CDS_OPEN_FHIR_SERVERS": f'["{server}"]'}) as service:
            with ThreadPoolExecutor(2) as pool:
                in_flight = pool.submit(requests.post, service.base + PATIENT_VIEW, json=body, timeout=10)
                assert asked.wait(10)  # the call is now waiting on the slow FHIR server (for a second)
                service.signal(signal.SIGTERM)
                response = in_flight.result()
            assert response.status_code == 200 and "cards" in response.json()
            assert service.process.wait(timeout=30) == 0  # then it stopped, cleanly


def _title(base: str) -> str:
    services = requests.get(base + "/cds-services", timeout=5).json()["services"]
    return next(s["title"] for s in services if s["id"] == "back-pain-patient-view")


def test_sighup_reloads_knowledge_and_no_call_is_dropped_meanwhile(tmp_path: Path):
    knowledge = tmp_path / "knowledge"
    shutil.copytree(ROOT / "knowledge", knowledge)
    services = knowledge / "services.yaml"
    chart = request_fixture("patient-view/mcas-adult--chart-open.json")
    with Service(tmp_path, "reload", "--workers", "2", env={"CDS_KNOWLEDGE_DIR": str(knowledge)}) as service:
        assert _title(service.base) == TITLE
        stop, statuses = threading.Event(), []

        def keep_calling() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    try:
                        statuses.append(session.post(service.base + PATIENT_VIEW, json=chart, timeout=10).status_code)
                    except requests.RequestException as exc:
                        statuses.append(type(exc).__name__)

        caller = threading.Thread(target=keep_calling)
        caller.start()
        try:
            services.write_text(services.read_text("utf-8").replace(TITLE, "Chart review (reloaded)"), "utf-8")
            service.signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while _title(service.base) != "Chart review (reloaded)" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _title(service.base) == "Chart review (reloaded)"

            services.write_text("services: [unclosed", "utf-8")  # a broken edit: the running knowledge stays
            workers = service.workers()
            service.signal(signal.SIGHUP)
            service.replaced_after(workers, "knowledge not reloaded")  # the calls go on meanwhile
            assert _title(service.base) == "Chart review (reloaded)"
        finally:
            stop.set()
            caller.join(timeout=15)
        # said where log alerting reads it: an ERROR line of the JSON log, naming the file at fault
        (failure,) = _reload_failures(service.log())
        assert failure["level"] == "ERROR" and "services.yaml" in failure["error"], failure
    assert len(statuses) > 10 and set(statuses) == {200}, sorted(set(map(str, statuses)))


def _reload_failures(log: str) -> list[dict]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "reload_failed"]
