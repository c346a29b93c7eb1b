"""The work after an answer (the card record, the prune) runs on one background thread per
process (issue 24, item 6): it used to run on the gthread worker thread once the response was
closed, so the next call on that keep-alive connection waited for it. On a graceful stop what is
queued is still done: nothing acknowledged is lost."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from helpers import request_fixture
from processes import Service

from cds_service import create_app
from cds_service.storage.background import Background

ORDER_SELECT = "/cds-services/back-pain-order-select"
FIXTURE = "order-select/mcas-adult--succinylcholine.json"


def test_a_slow_card_record_does_not_hold_the_connection(app_config, monkeypatch):
    app = create_app(app_config)
    storage = app.extensions["cds"].storage
    record, threads = storage.record_calls, []

    def slow_record(*args, **kwargs):
        threads.append(threading.current_thread().name)
        time.sleep(0.5)  # a database slow to take the write
        return record(*args, **kwargs)

    monkeypatch.setattr(storage, "record_calls", slow_record)
    response = app.test_client().post(ORDER_SELECT, json=request_fixture(FIXTURE), buffered=False)
    assert response.status_code == 200 and len(response.get_json()["cards"]) == 1
    started = time.monotonic()
    response.close()  # what the server does once the answer is sent; then it reads the next call
    assert time.monotonic() - started < 0.2
    assert storage.background.wait_idle()
    assert threads == ["cds-after-answer"] and storage.row_counts()["issued_card"] == 1


def test_jobs_run_in_order_and_a_failing_job_does_not_stop_the_thread():
    done: list[int] = []
    background = Background()
    background.submit(lambda: done.append(1))
    background.submit(lambda: 1 / 0)
    background.submit(lambda: done.append(2))
    assert background.wait_idle() and done == [1, 2]


def test_a_full_queue_makes_the_caller_do_its_own_job():
    gate, busy, done = threading.Event(), threading.Event(), []
    background = Background(limit=1)
    background.submit(lambda: (busy.set(), gate.wait(10)))  # holds the thread
    assert busy.wait(10)
    background.submit(lambda: done.append("queued"))  # fills the queue
    background.submit(lambda: done.append(threading.current_thread().name))  # no room: run here
    assert done == [threading.current_thread().name]
    gate.set()
    assert background.wait_idle() and done[1] == "queued"


def test_queued_work_is_done_when_the_process_exits(tmp_path: Path):
    marker = tmp_path / "done"
    script = ("import sys, time\n"
              "from cds_service.storage.background import Background\n"
              "b = Background()\n"
              "b.submit(lambda: (time.sleep(0.5), open(sys.argv[1], 'w').write('done')))\n"
              "sys.exit(0)\n")
    subprocess.run([sys.executable, "-c", script, str(marker)], check=True, timeout=30)
    assert marker.read_text() == "done"


@pytest.mark.slow
def test_every_answered_call_is_recorded_when_sigterm_stops_the_server(tmp_path: Path):
    database = tmp_path / "drain.sqlite3"
    with Service(tmp_path, "drain", "--workers", "1", "--threads", "8",
                 env={"CDS_DATABASE_URL": f"sqlite:///{database}"}) as service:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.post(service.base + ORDER_SELECT, json=request_fixture(FIXTURE),
                                                            timeout=10), range(80)))
        service.signal(signal.SIGTERM)
        assert service.process.wait(timeout=30) == 0
    assert [a.status_code for a in answers] == [200] * 80
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM issued_card").fetchone()[0] == 80
    conn.close()
