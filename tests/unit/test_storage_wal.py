"""The SQLite write-ahead log stays bounded (issue 24, item 6): under steady load some connection
always reads, so SQLite's own checkpoints never reset the WAL and it grew to 64-108 MB beside an
8 MB database. A reader held open through a burst stands in for that load here."""
from __future__ import annotations

import os
import sqlite3
import uuid

from test_storage import _close

from cds_service.core.issued import IssuedCard
from cds_service.storage.store import WAL_CHECKPOINT_BYTES, WAL_LIMIT_BYTES, Storage

SERVICE = "back-pain-order-select"
RULE = "mcas.neuromuscular-blocker"


def _wal_bytes(path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


def _record(store: Storage) -> None:
    cards = [IssuedCard(str(uuid.uuid4()), (RULE,), tuple(str(uuid.uuid4()) for _ in range(3)), ("",))
             for _ in range(4)]
    assert store.record_cards(SERVICE, str(uuid.uuid4()), cards, patient_key="k" * 64)


def test_the_wal_is_cut_back_once_the_readers_that_held_it_are_gone(tmp_path):
    path = tmp_path / "wal.sqlite3"
    store = Storage(f"sqlite:///{path}")
    store.migrate()
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM issued_card").fetchone()  # a snapshot: the WAL cannot be reset
        calls = 0
        while _wal_bytes(path) <= WAL_CHECKPOINT_BYTES + (1 << 20):
            _record(store)
            calls += 1
        reader.execute("ROLLBACK")
        for _ in range(3):
            _record(store)
        assert _wal_bytes(path) <= WAL_LIMIT_BYTES
        assert store.row_counts()["issued_card"] == 4 * (calls + 3)  # nothing lost to the checkpoint
    finally:
        reader.close()
        _close(store)
