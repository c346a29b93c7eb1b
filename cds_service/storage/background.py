"""The work left after an answer, on one background thread per process.

Recording the issued cards (and the call's log line) and the periodic prune used to run on the
gthread worker thread once the response was closed, so the next call on that keep-alive
connection waited for them. They now go to a queue served by one thread per process, started on
first use after a fork (a thread of the gunicorn master is not inherited by its workers).

- Nothing acknowledged is lost on a graceful stop: ``drain`` (registered with ``atexit``, which
  runs when a gunicorn worker ends on SIGTERM or a SIGHUP reload) runs every queued job first.
  A SIGKILL loses what is queued, as it lost the record of an answer being written before.
- A queue that is full (the database slower than the calls) makes the caller run its job itself:
  bounded by the storage deadlines, never dropped.
- ``idle`` work (the prune, which keeps its own schedule) runs after each job and at least every
  ``idle_seconds`` when no call comes.
- Items given to ``submit_batched`` (the calls' records) that are queued together, up to
  ``BATCH_LIMIT``, are handed to the ``batch`` function at once (one transaction for them all);
  while calls come back to back the thread waits up to ``GATHER_SECONDS`` for more (group commit).
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

Job = Callable[[], None]
_STOP = object()
_FLUSH = object()  # from wait_idle: stop gathering, write now
QUEUE_LIMIT = 10_000  # jobs waiting; each holds one call's decision until it is recorded
DRAIN_SECONDS = 20.0  # at exit; within gunicorn's graceful timeout (30 s)
BATCH_LIMIT = 64  # batched items handed over at once: one write stays well within its deadline
# Group commit: a transaction's commit is most of a call's record (SQLite: ~0.5 ms of CPU, the WAL
# writes), whatever it holds. While calls come back to back (the last batch ended less than
# BUSY_SECONDS ago), the thread waits up to GATHER_SECONDS for more records before writing, so one
# commit serves several calls even with one connection. An isolated call is written at once.
GATHER_SECONDS = 0.02
BUSY_SECONDS = 0.1


class _Batched:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


class Background:
    def __init__(self, idle: Job | None = None, idle_seconds: float = 30.0, limit: int = QUEUE_LIMIT,
                 batch: Callable[[list[Any]], None] | None = None) -> None:
        self._idle = idle
        self._batch = batch
        self._idle_seconds = idle_seconds
        self._limit = limit
        self._pid = 0  # the process the thread below belongs to
        self._start_lock = threading.Lock()

    def submit(self, job: Job) -> None:
        """Run ``job`` on this process's background thread, soon; never raises."""
        self._put(job)

    def submit_batched(self, item: Any) -> None:
        """Hand ``item`` to the ``batch`` function on the background thread, soon, with the other
        batched items queued at the time; never raises."""
        self._put(_Batched(item))

    def _put(self, job: object) -> None:
        self._ensure_thread()
        with self._pending_changed:
            self._pending += 1
        try:
            self._queue.put_nowait(job)
        except queue.Full:  # the database is slower than the calls: this caller waits for its own job
            self._run_all([job])
            self._finished()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every job submitted so far has run (tests, and the drain)."""
        if self._pid != os.getpid():
            return True
        if self._pending:
            try:  # a batch being gathered is written now, not after its window
                self._queue.put_nowait(_FLUSH)
            except queue.Full:
                pass  # a full queue is written batch after batch, with no wait to cut short
        with self._pending_changed:
            return self._pending_changed.wait_for(lambda: self._pending == 0, timeout)

    def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Run what is queued, then stop the thread (at exit)."""
        if self._pid != os.getpid() or not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("background work not finished at exit", extra={"pending": self._pending})

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            # new state for this process: what a fork copied may be mid-use by a thread that is not here
            self._queue: queue.Queue[object] = queue.Queue(self._limit)
            self._pending = 0
            self._pending_changed = threading.Condition()
            self._thread = threading.Thread(target=self._serve, name="cds-after-answer", daemon=True)
            self._thread.start()
            self._pid = os.getpid()
            atexit.register(self.drain)

    def _serve(self) -> None:
        last_batch = 0.0  # when the last batch was written (monotonic)
        while True:
            try:
                job = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                job = None
            if job is _STOP:
                return
            jobs = [] if job is None or job is _FLUSH else [job]
            busy = time.monotonic() - last_batch < BUSY_SECONDS
            jobs, stop = self._gather(jobs, GATHER_SECONDS if busy else 0.0)
            self._run_all(jobs)
            if any(isinstance(j, _Batched) for j in jobs):
                last_batch = time.monotonic()
            if self._idle is not None:
                self._run(self._idle)
            for _ in jobs:
                self._finished()
            if stop:
                return

    def _gather(self, jobs: list[object], seconds: float) -> tuple[list[object], bool]:
        """``jobs`` and what else is queued now, or arrives within ``seconds`` once a batched item
        is among them, up to BATCH_LIMIT batched items (plain jobs, such as the prune a request
        queues, neither count nor start the wait); and whether the stop came meanwhile. A flush
        (wait_idle) ends the wait."""
        deadline = time.monotonic() + seconds
        batched = sum(isinstance(job, _Batched) for job in jobs)
        while jobs and batched < BATCH_LIMIT:
            wait = deadline - time.monotonic() if batched else 0.0
            try:
                more = self._queue.get(timeout=max(0.0, wait))
            except queue.Empty:
                break
            if more is _STOP:
                return jobs, True
            if more is _FLUSH:
                deadline = 0.0  # what is queued already still goes with it
                continue
            jobs.append(more)
            batched += isinstance(more, _Batched)
        return jobs, False

    def _run_all(self, jobs: list[object]) -> None:
        """The batched items in one call of ``batch``, then the other jobs in order."""
        items = [job.item for job in jobs if isinstance(job, _Batched)]
        if items:
            batch = self._batch
            if batch is None:
                log.error("batched work without a batch function", extra={"items": len(items)})
            else:
                self._run(lambda: batch(items))
        for job in jobs:
            if not isinstance(job, _Batched):
                self._run(job)  # type: ignore[arg-type]

    def _finished(self) -> None:
        with self._pending_changed:
            self._pending -= 1
            self._pending_changed.notify_all()

    @staticmethod
    def _run(job: Job) -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any one job
            log.error("background work failed", extra={"error": type(exc).__name__})
