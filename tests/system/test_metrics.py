"""Prometheus metrics (docs/metrics.md): scraped after real calls, and closed to other addresses.

In-process (the Flask test client) the metrics live in this process's registry
and add up across tests, so each test compares a scrape before and after its
calls. The served test runs ``cds-service serve`` with two workers and checks
that a scrape adds up both workers and that a former run's files are removed.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from helpers import request_fixture
from processes import free_port
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

ORDER_SELECT = "back-pain-order-select"
PATIENT_VIEW = "back-pain-patient-view"
RULE = "mcas.neuromuscular-blocker"


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def metric_value(client, name: str, **labels: str) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    return value(parse(response.get_data(as_text=True)), name, **labels)


def test_calls_cards_stages_and_feedback_are_counted(client):
    before = parse(client.get("/metrics").get_data(as_text=True))
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=request_fixture("order-select/mcas-adult--succinylcholine.json"))
    (card,) = response.get_json()["cards"]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}
    assert client.post(f"/cds-services/{ORDER_SELECT}/feedback", json={"feedback": [item]}).status_code == 200
    stranger = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}
    assert client.post(f"/cds-services/{ORDER_SELECT}/feedback", json={"feedback": [stranger]}).status_code == 200
    assert client.post("/cds-services/no-such-service", json={}).status_code == 404
    assert client.post(f"/cds-services/{ORDER_SELECT}", json={"hook": "order-select"}).status_code == 400
    scrape = client.get("/metrics")
    assert scrape.headers["Content-Type"].startswith("text/plain")
    after = parse(scrape.get_data(as_text=True))

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("cds_calls_total", service=ORDER_SELECT, hook="order-select", status="200") == 1
    assert moved("cds_calls_total", service=ORDER_SELECT, hook="order-select", status="400") == 1
    assert moved("cds_calls_total", service=ORDER_SELECT, hook="feedback", status="200") == 2
    assert moved("cds_calls_total", service="unknown", hook="unknown", status="404") == 1
    assert moved("cds_cards_total", rule_id=RULE, indicator=card["indicator"]) == 1
    assert moved("cds_feedback_total", rule_id=RULE, outcome="overridden") == 1
    assert moved("cds_feedback_total", rule_id="unknown", outcome="overridden") == 1
    for stage in ("prefetch", "evaluate", "store"):  # of the call that got as far as deciding
        assert moved("cds_call_stage_seconds_count", service=ORDER_SELECT, stage=stage) == 1, stage
    assert moved("cds_call_stage_seconds_count", service=ORDER_SELECT, stage="total") == 2  # the 400 too
    assert moved("cds_call_stage_seconds_sum", service=ORDER_SELECT, stage="total") > 0


def test_every_card_answered_is_counted_by_its_topic_and_indicator_the_checks_not_run_card_too(client):
    body = request_fixture("patient-view/mcas-ms-older-adult--chart-open.json")
    del body["prefetch"]["medications"]  # no FHIR server named either: the medication checks cannot run
    before = parse(client.get("/metrics").get_data(as_text=True))
    cards = client.post(f"/cds-services/{PATIENT_VIEW}", json=body).get_json()["cards"]
    after = parse(client.get("/metrics").get_data(as_text=True))
    answered = [(c["source"]["topic"]["code"], c["indicator"]) for c in cards]
    assert ("service.checks-not-run", "info") in answered and len(answered) > 1
    for topic, indicator in set(answered):
        moved = (value(after, "cds_cards_total", rule_id=topic, indicator=indicator)
                 - value(before, "cds_cards_total", rule_id=topic, indicator=indicator))
        assert moved == answered.count((topic, indicator)), (topic, indicator)


def test_fhir_fetch_failures_are_counted_by_key(client):
    body = request_fixture("patient-view/mcas-ms-older-adult--chart-open.json")
    del body["prefetch"]["medications"]
    body["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"  # connection refused
    body["fhirAuthorization"] = {"access_token": "dummy", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    before = metric_value(client, "cds_fhir_fetch_failures_total", prefetch_key="medications", kind="error")
    assert client.post(f"/cds-services/{PATIENT_VIEW}", json=body).status_code == 200
    after = metric_value(client, "cds_fhir_fetch_failures_total", prefetch_key="medications", kind="error")
    assert after == before + 1


@pytest.mark.parametrize("environ, headers", [
    ({"REMOTE_ADDR": "10.1.2.3"}, {}),
    ({"REMOTE_ADDR": "192.0.2.7"}, {}),
    ({"REMOTE_ADDR": "127.0.0.1"}, {"X-Forwarded-For": "198.51.100.4"}),  # came through a front
    ({"REMOTE_ADDR": "127.0.0.1"}, {"Forwarded": "for=198.51.100.4"}),
], ids=["private", "public", "x-forwarded-for", "forwarded"])
def test_metrics_are_closed_to_other_addresses(client, environ, headers):
    response = client.get("/metrics", environ_base=environ, headers=headers)
    assert response.status_code == 403
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "forbidden"
    assert "cds_calls_total" not in response.get_data(as_text=True)


def test_metrics_allow_list_is_configurable(app_config):
    from cds_service import create_app

    client = create_app({**app_config, "METRICS_ALLOW": ["10.0.0.0/8"]}).test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403


def calls_by_pid(metrics_dir: Path) -> dict[str, float]:
    """The order-select calls each process counted, read from its own multiprocess file."""
    found = {}
    for path in metrics_dir.glob("counter_*.db"):
        calls = sum(v for key, v, *_ in MmapedDict.read_all_values_from_file(str(path))
                    if json.loads(key)[1] == "cds_calls_total" and json.loads(key)[2].get("service") == ORDER_SELECT)
        if calls:
            found[path.stem.split("_")[-1]] = calls
    return found


@pytest.mark.slow
def test_served_metrics_add_up_every_worker_and_forget_a_former_run(tmp_path: Path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"left by a former run")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = shutil.which("cds-service", path=str(Path(sys.executable).parent)) or "cds-service"
    env = {**os.environ, "CDS_AUTH_REQUIRED": "false", "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "CDS_LOG_LEVEL": "WARNING", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen([command, "serve", "--port", str(port), "--workers", "2"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert not stale.exists()
        body = request_fixture("order-select/mcas-adult--succinylcholine.json")

        def call() -> None:  # a connection of its own each (no keep-alive session)
            response = requests.post(f"{base}/cds-services/{ORDER_SELECT}", json=body, timeout=10)
            assert response.status_code == 200

        # Calls four at a time until two workers have each answered some: one gthread worker can
        # take every call of a sequence, and then nothing here would be added up.
        sent, answered_by = 0, {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            deadline = time.monotonic() + 60
            while len(answered_by) < 2 or sent < 20:
                assert time.monotonic() < deadline, f"calls were answered only by {answered_by} (pid: calls)"
                list(pool.map(lambda _: call(), range(4)))
                sent += 4
                answered_by = calls_by_pid(metrics_dir)
        assert sum(answered_by.values()) == sent, answered_by  # what each worker counted, from its own file
        samples = parse(requests.get(f"{base}/metrics", timeout=10).text)
        assert value(samples, "cds_calls_total", service=ORDER_SELECT, status="200") == sent
        assert value(samples, "cds_cards_total", rule_id=RULE) == sent
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def test_start_up_empties_the_metrics_folder_of_prometheus_files_only(tmp_path: Path, monkeypatch):
    """Pointed at the database's folder, a restart once deleted the database (issue 24, item 6)."""
    from cds_service.web.metrics import MULTIPROC_ENV, _multiprocess_dir

    ours = ["counter_123.db", "histogram_123.db", "gauge_livesum_9.db", "gauge_all_9.db", "summary_4.db"]
    theirs = ["cds.db", "counter.db", "gauge_123.db", "histogram_12a.db", "cds.sqlite3"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    _multiprocess_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_a_start_that_fails_leaves_no_temporary_metrics_directory(tmp_path: Path):
    """Broken knowledge: serve exits 1, and the metrics directory it made for itself is gone."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    broken = tmp_path / "knowledge"
    broken.mkdir()  # no services.yaml: the app does not load
    command = shutil.which("cds-service", path=str(Path(sys.executable).parent)) or "cds-service"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"TMPDIR": str(temp), "CDS_KNOWLEDGE_DIR": str(broken), "CDS_AUTH_REQUIRED": "false",
                "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"})
    done = subprocess.run([command, "serve", "--port", str(free_port()), "--workers", "1"], env=env,
                          capture_output=True, timeout=60)
    assert done.returncode != 0, done.stderr[-2000:]
    assert not list(temp.glob("cds-metrics-*")), "a failed start left its metrics directory behind"
