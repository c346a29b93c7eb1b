"""Serving options: ``serve``'s settings and GUNICORN_CMD_ARGS, the call budget from the front.

The gunicorn application is configured but not run; the budget is seen at the transport (a
mocked FHIR server that is or is not called).
"""
from __future__ import annotations

import tempfile
import time

import pytest
import responses
from click.testing import CliRunner
from helpers import request_fixture

from cds_service import cli, create_app
from cds_service.web.front import queued_seconds

FHIR = "https://ehr.example.org/fhir"


def _configured(monkeypatch, *args: str, env_args: str | None = None):
    """The gunicorn configuration ``cds-service serve ARGS`` would run with."""
    if env_args is None:
        monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    else:
        monkeypatch.setenv("GUNICORN_CMD_ARGS", env_args)
    made = []
    monkeypatch.setattr(cli._Gunicorn, "run", lambda self: made.append(self))
    # serve points prometheus_client at a multiprocess directory for the whole process: restore it
    # afterwards, or every later test in this process would read metrics from empty files.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="cds-test-metrics-"))
    result = CliRunner().invoke(cli.main, ["serve", *args])
    assert result.exit_code == 0, result.output
    return made[0].cfg


def test_production_defaults_are_threaded_recycled_and_drained(monkeypatch):
    cfg = _configured(monkeypatch)
    assert (cfg.worker_class_str, cfg.threads) == ("gthread", 16)
    assert (cfg.max_requests, cfg.max_requests_jitter) == (10000, 1000)
    assert (cfg.graceful_timeout, cfg.preload_app) == (30, True)


def test_every_serving_option_reaches_gunicorn(monkeypatch):
    cfg = _configured(monkeypatch, "--worker-class", "gthread", "--threads", "3", "--timeout", "12",
                      "--graceful-timeout", "7", "--backlog", "64", "--max-requests", "50",
                      "--max-requests-jitter", "5", "--keep-alive", "9", "--workers", "3")
    assert (cfg.threads, cfg.timeout, cfg.graceful_timeout, cfg.backlog) == (3, 12, 7, 64)
    assert (cfg.max_requests, cfg.max_requests_jitter, cfg.keepalive, cfg.workers) == (50, 5, 9, 3)


def test_gunicorn_cmd_args_beat_defaults_and_the_command_line_beats_both(monkeypatch):
    cfg = _configured(monkeypatch, "--timeout", "11", env_args="--threads 3 --timeout 99 --bind 127.0.0.1:9999")
    assert cfg.threads == 3  # from the environment, over serve's default
    assert cfg.timeout == 11  # given on the command line, over the environment
    assert cfg.bind == ["127.0.0.1:9999"]  # --host/--port were not given


def test_sync_means_one_call_per_worker(monkeypatch):
    cfg = _configured(monkeypatch, "--worker-class", "sync")
    assert (cfg.worker_class_str, cfg.threads) == ("sync", 1)  # gunicorn would otherwise run gthread


@pytest.mark.parametrize("header, waited", [
    ("t=1000.250", 1.75), ("1000.250", 1.75), ("t=1002.5", 0.0),  # a stamp from the future: a clock
    ("t=", 0.0), ("t=abc", 0.0), ("t=nan", 0.0), ("t=0", 0.0),  # 0: absurdly old
])
def test_queue_time_is_read_from_the_fronts_stamp(header, waited):
    assert queued_seconds(header, now=1002.0) == pytest.approx(waited)


def _unfetched_chart() -> dict:
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    del body["prefetch"]
    body["fhirServer"] = FHIR
    body["fhirAuthorization"] = {"access_token": "token-1", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    return body


@responses.activate
@pytest.mark.parametrize("trusted, fetched", [(True, False), (False, True)])
def test_a_call_that_queued_past_its_budget_does_not_wait_on_fhir_again(app_config, trusted, fetched):
    responses.get(f"{FHIR}/Condition", json={"resourceType": "Bundle", "type": "searchset", "entry": []})
    client = create_app({**app_config, "TRUST_REQUEST_START": trusted}).test_client()
    stamp = f"t={time.time() - 5:.3f}"  # the front received it 5 s ago; the budget is 2 s
    response = client.post("/cds-services/back-pain-patient-view", json=_unfetched_chart(),
                           headers={"X-Request-Start": stamp})
    assert any(FHIR in call.request.url for call in responses.calls) is fetched
    assert response.status_code == (200 if fetched else 412)  # conditions are required
