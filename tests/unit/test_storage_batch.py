"""The calls' records queued together are written in one transaction (cards and go-live record
alike); a failure is counted once per call, each call is still told (its log line), nothing raises."""
from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from typing import Any

from test_storage import _close, _rows

from cds_service.core.issued import IssuedCard, SilentFinding
from cds_service.storage.background import Background
from cds_service.storage.issued import CallRecord
from cds_service.storage.store import Storage

SERVICE = "back-pain-order-select"
RULE = "mcas.neuromuscular-blocker"


def _record(n: int) -> CallRecord:
    card = IssuedCard(str(uuid.uuid4()), (RULE,), (str(uuid.uuid4()),), ("",))
    return CallRecord(SERVICE, f"hook-{n}", [card], "k" * 64, [(RULE, "7052")], "1.0+sha256.a",
                      [SilentFinding("mcas.silent-rule", "", "warning")])


def test_batched_items_queued_together_are_handed_over_at_once():
    gate, busy, batches, done = threading.Event(), threading.Event(), [], []
    background = Background(batch=batches.append)
    background.submit(lambda: (busy.set(), gate.wait(10)))  # holds the thread while the others queue
    assert busy.wait(10)
    for n in range(5):
        background.submit_batched(n)
    background.submit(lambda: done.append("plain"))
    gate.set()
    assert background.wait_idle()
    assert batches == [[0, 1, 2, 3, 4]] and done == ["plain"]


def test_while_calls_come_back_to_back_a_record_waits_for_the_next_ones_and_an_isolated_one_does_not(monkeypatch):
    """Group commit: one connection's calls arrive one after another, never queued together; the
    thread waits (here up to 2 s) for the next record once calls are coming, not for the first."""
    from cds_service.storage import background as module

    monkeypatch.setattr(module, "GATHER_SECONDS", 2.0)
    monkeypatch.setattr(module, "BUSY_SECONDS", 60.0)
    batches: list[list[int]] = []
    written = threading.Semaphore(0)
    background = Background(batch=lambda items: (batches.append(items), written.release()))
    background.submit_batched(1)  # nothing before it: written at once, alone
    assert written.acquire(timeout=1.5)  # well within the 2 s it would wait if it gathered
    background.submit_batched(2)  # calls are coming now: it waits for more
    time.sleep(0.2)  # the next call's record, a little later (without the wait: written apart)
    background.submit_batched(3)
    assert written.acquire(timeout=10)
    assert batches == [[1], [2, 3]]


def test_waiting_for_the_records_cuts_the_gathering_short(monkeypatch):
    from cds_service.storage import background as module

    monkeypatch.setattr(module, "GATHER_SECONDS", 30.0)
    monkeypatch.setattr(module, "BUSY_SECONDS", 60.0)
    batches: list[list[int]] = []
    background = Background(batch=batches.append)
    background.submit_batched(1)
    assert background.wait_idle(10)
    background.submit_batched(2)  # would wait 30 s for company
    assert background.wait_idle(5) and batches == [[1], [2]]


def test_records_of_several_calls_go_in_one_transaction(database_url, monkeypatch):
    store = Storage(database_url)
    store.migrate()
    transaction, opened, told = store.transaction, [], []

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0].operation)
        return transaction(*args, **kwargs)

    monkeypatch.setattr(store, "transaction", counted)
    try:
        store.record_calls([(_record(n), lambda ok, share: told.append((ok, share > 0))) for n in range(3)])
        assert opened == ["record_cards"]  # one transaction for the three calls, go-live record included
        assert told == [(True, True)] * 3
        counts = store.row_counts()
        assert counts["issued_card"] == 3 and counts["held_back_card"] == 3
        assert _rows(store, "SELECT SUM(calls) FROM call_count")[0][0] == 3
        assert _rows(store, "SELECT COUNT(*) FROM card_release")[0][0] == 3
        assert _rows(store, "SELECT COUNT(*) FROM silent_finding")[0][0] == 3
    finally:
        _close(store)


def test_a_failed_batch_is_counted_per_call_and_every_call_is_told(tmp_path, monkeypatch):
    path = tmp_path / "locked.sqlite3"
    store = Storage(f"sqlite:///{path}")
    store.migrate()
    failures: list[tuple[str, int]] = []
    monkeypatch.setattr("cds_service.metrics.storage_failed",
                        lambda operation, count=1: failures.append((operation, count)))
    told: list[bool] = []
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock past the 200 ms wait
        store.record_calls([(_record(n), lambda ok, share: told.append(ok)) for n in range(4)])
        locker.execute("ROLLBACK")
        assert told == [False] * 4
        assert sorted(failures) == [("record_cards", 4), ("record_silent", 4)]
        store.record_calls([(_record(9), lambda ok, share: told.append(ok))])  # healed
        assert told[-1] is True and store.row_counts()["issued_card"] == 1
    finally:
        locker.close()
        _close(store)


def test_plain_jobs_between_records_neither_split_the_batch_nor_count_towards_its_limit(monkeypatch):
    """Every request queues the prune after its answer: with a record between each, 100 records
    still go in batches of BATCH_LIMIT, not half that."""
    from cds_service.storage import background as module

    monkeypatch.setattr(module, "BATCH_LIMIT", 10)
    gate, busy, batches = threading.Event(), threading.Event(), []
    background = Background(batch=batches.append)
    background.submit(lambda: (busy.set(), gate.wait(10)))  # holds the thread while the others queue
    assert busy.wait(10)
    for n in range(20):
        background.submit_batched(n)
        background.submit(lambda: None)
    gate.set()
    assert background.wait_idle()
    assert [len(b) for b in batches] == [10, 10]


def test_one_bad_record_does_not_cost_the_others_in_its_batch_theirs(database_url, monkeypatch):
    """A record the database refuses for its own rows (here a held-back item key that is NULL) used
    to roll back the whole batch: every call queued with it lost its cards and go-live count."""
    store = Storage(database_url)
    store.migrate()
    failures: list[tuple[str, int]] = []
    monkeypatch.setattr("cds_service.metrics.storage_failed",
                        lambda operation, count=1: failures.append((operation, count)))
    good = [_record(n) for n in range(3)]
    bad = _record(7)
    bad = CallRecord(bad.service_id, bad.hook_instance, bad.issued, bad.patient_key, [(RULE, None)],  # type: ignore[list-item]
                     bad.release, bad.silent)
    try:
        assert store.cards.record([good[0], bad, good[1], good[2]]) is False  # not every record was written
        counts = store.row_counts()
        assert counts["issued_card"] == 3 and counts["held_back_card"] == 3
        assert _rows(store, "SELECT SUM(calls) FROM call_count")[0][0] == 3
        assert sorted(failures) == [("record_cards", 1), ("record_silent", 1)]  # the bad one, once
    finally:
        _close(store)
