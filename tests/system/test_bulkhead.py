"""Bulkheads (issue 24, item 5): callers of one slow FHIR server never hold every thread.

The service runs as production does (``cds-service serve``, one gthread worker of 16 threads), straight on
loopback (no front: the service itself must keep its threads). A fake FHIR server answers
every read 5 s late (past the 2 s call budget). While 64, then 128, callers each call again
and again (0.3 s apart) with nothing prefetched and that server as ``fhirServer``, four other
callers send fully prefetched charts for a fixed time; at least 90% of theirs must be answered
200 within 2 s. Each process lets at most half its fetch threads talk to one FHIR server; the
callers over that get their answer at once (412 here: their required data could not be had).

The load is bounded: a fixed number of threads for a fixed time, every request with a timeout.
``python -m pytest tests/test_bulkhead.py -s`` prints the figures.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests
from fakefhir import Exchange, FakeFhir
from helpers import request_fixture
from processes import PATIENT_VIEW, Service, percentile

pytestmark = pytest.mark.slow

FHIR_DELAY = 5.0
LOAD_SECONDS = 5.0  # two and a half call budgets: every slow caller holds its fetch through two at least
WITHIN = 2.0
PREFETCHED_CALLERS = 4
THREADS = 16
PER_SERVER = THREADS // 2  # the bulkhead's default: half the fetch threads to one FHIR server


def _slow(exchange: Exchange) -> None:
    if not exchange.server.stop.wait(FHIR_DELAY):
        exchange.json(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})


@pytest.fixture(scope="module")
def slow_fhir():
    with FakeFhir(_slow) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, slow_fhir: FakeFhir):
    tmp_path: Path = tmp_path_factory.mktemp("bulkhead")
    env = {"CDS_OPEN_FHIR_SERVERS": json.dumps([slow_fhir.url()])}
    with Service(tmp_path, "service", "--workers", "1", "--threads", str(THREADS), env=env) as running:
        yield running


def _loop(base: str, body: dict, stop: threading.Event, pause: float, out: list[tuple[int, float]]) -> None:
    with requests.Session() as session:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = session.post(base + PATIENT_VIEW, json=body, timeout=10).status_code
            except requests.RequestException:
                status = 0
            out.append((status, time.perf_counter() - started))
            stop.wait(pause)


@pytest.mark.parametrize("slow_callers", [64, 128])
def test_prefetched_calls_are_answered_while_many_callers_wait_on_a_slow_fhir_server(service, slow_fhir,
                                                                                     slow_callers):
    chart = request_fixture("patient-view/mcas-adult--chart-open.json")
    starved = {**chart, "fhirServer": slow_fhir.url(), "prefetch": {}}
    stop = threading.Event()
    slow: list[tuple[int, float]] = []
    fine: list[tuple[int, float]] = []
    threads = [threading.Thread(target=_loop, args=(service.base, starved, stop, 0.3, slow))
               for _ in range(slow_callers)]
    asked_before = len(slow_fhir.asked)
    for thread in threads:
        thread.start()
    # the slow server's callers first, holding what they can: the bulkhead's every slot on that server
    deadline = time.monotonic() + 10
    while len(slow_fhir.asked) - asked_before < PER_SERVER and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(slow_fhir.asked) - asked_before >= PER_SERVER, "the slow server's callers never reached it"
    threads += [threading.Thread(target=_loop, args=(service.base, chart, stop, 0.0, fine))
                for _ in range(PREFETCHED_CALLERS)]
    for thread in threads[slow_callers:]:
        thread.start()
    time.sleep(LOAD_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    answered = [seconds for status, seconds in fine if status == 200 and seconds <= WITHIN]
    print(f"\n{slow_callers} callers on a {FHIR_DELAY:.0f} s FHIR server: {len(slow)} of their calls "
          f"({sorted({s for s, _ in slow})}); prefetched calls {len(fine)}, within {WITHIN} s: "
          f"{len(answered)} ({100 * len(answered) / max(1, len(fine)):.1f}%), "
          f"p50 {percentile([s for _, s in fine], 0.5):.3f} s, p99 {percentile([s for _, s in fine], 0.99):.3f} s")
    assert fine, "no prefetched call was answered at all"
    assert len(answered) >= 0.9 * len(fine)
    assert {status for status, _ in slow} <= {200, 412}  # the slow server's callers: answered, never a 500
