"""Retention: issued cards, feedback and JWT ids are deleted after their time, and the database stops growing.

The soak writes what a busy service writes (cards with suggestions, some
feedback, a JWT id per call) hour after simulated hour, passing the time in,
and prunes every six simulated hours as the workers do. Row counts and, for
SQLite, the file size level off once the retention periods have passed. The
daily figures are printed (visible with ``-s``).
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from click.testing import CliRunner
from test_storage import _close, _overridden

from cds_service import create_app
from cds_service.cli import main
from cds_service.core.issued import IssuedCard
from cds_service.storage.store import Retention, Storage

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SERVICE = "back-pain-order-select"
RULE = "mcas.neuromuscular-blocker"
DAYS = 16
CARDS_PER_HOUR = 60
FEEDBACK_PER_HOUR = 2
TOKENS_PER_HOUR = 10
RETENTION = Retention(issued_card_days=2, feedback_days=5, interval_seconds=6 * 3600)


def _cards(count: int) -> list[IssuedCard]:
    return [IssuedCard(str(uuid.uuid4()), (RULE,), (str(uuid.uuid4()), str(uuid.uuid4()))) for _ in range(count)]


def _size(store: Storage) -> int:
    """Bytes on disk of the SQLite file once the WAL is folded back in; 0 for PostgreSQL."""
    if not store.backend.describe().startswith("SQLite"):
        return 0
    with store.reading() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.exec_driver_sql("PRAGMA page_count").scalar_one() * conn.exec_driver_sql("PRAGMA page_size").scalar_one())


def test_soak_row_counts_and_size_level_off(database_url):
    store = Storage(database_url, RETENTION)
    store.migrate()
    daily: list[dict[str, int]] = []
    try:
        for hour in range(DAYS * 24):
            now = START + timedelta(hours=hour)
            cards = _cards(CARDS_PER_HOUR)
            assert store.record_cards(SERVICE, str(uuid.uuid4()), cards, at=now)
            store.record_feedback(SERVICE, [_overridden(c, when=now.isoformat()) for c in cards[:FEEDBACK_PER_HOUR]], at=now)
            for _ in range(TOKENS_PER_HOUR):
                assert store.remember_jti("https://ehr.example.org", str(uuid.uuid4()), now.timestamp() + 360,
                                          now=now.timestamp())
            if hour % 6 == 5:
                store.prune(now)
            if hour % 24 == 23:
                daily.append({**store.row_counts(), "bytes": _size(store)})
    finally:
        _close(store)
    print("\nretention soak, per simulated day (rows per table, SQLite bytes):")
    for day, figures in enumerate(daily, 1):
        print(f"  day {day:2}: {figures}")
    settled = daily[7:]  # past the longest retention (5 days) and a margin
    # at most the retention period (plus the 6 h between prunes) of each kind of row
    hours_kept = RETENTION.issued_card_days * 24 + 6
    for figures in settled:
        with_feedback = (RETENTION.feedback_days * 24 + 6) * FEEDBACK_PER_HOUR
        assert figures["issued_card"] <= hours_kept * CARDS_PER_HOUR + with_feedback
        assert figures["issued_suggestion"] == 2 * figures["issued_card"]
        assert figures["feedback"] <= with_feedback
        assert figures["jwt_replay"] <= 7 * TOKENS_PER_HOUR
    counts = [f["issued_card"] for f in settled]
    assert max(counts) - min(counts) <= 0.05 * max(counts)  # level, not growing
    if daily[0]["bytes"]:
        sizes = [f["bytes"] for f in settled]
        assert max(sizes) <= 1.1 * sizes[0], sizes  # freed pages are reused: the file stops growing
        assert daily[-1]["bytes"] < 1.2 * daily[2]["bytes"]  # 16 days written, about 3 days' worth kept


def test_a_card_with_feedback_is_kept_as_long_as_its_feedback(database_url):
    store = Storage(database_url, RETENTION)
    store.migrate()
    try:
        answered, silent = _cards(1)[0], _cards(1)[0]
        store.record_cards(SERVICE, "hook-1", [answered, silent], at=START)
        store.record_feedback(SERVICE, [_overridden(answered)], at=START)
        assert store.prune(START + timedelta(days=3)) == {"jwt_replay": 0, "feedback": 0, "issued_card": 1, "held_back_card": 0,
                                                            "silent_finding": 0, "card_release": 0}
        assert store.stats()[RULE] == {"issued": 1, "accepted": 0, "overridden": 1,
                                       "override_reasons": {"patient-declined": 1}}  # still attributed
        # its feedback goes first, then the card in the same run
        assert store.prune(START + timedelta(days=6)) == {"jwt_replay": 0, "feedback": 1, "issued_card": 1, "held_back_card": 0,
                                                            "silent_finding": 0, "card_release": 0}
        assert store.row_counts() == {"issued_card": 0, "issued_suggestion": 0, "feedback": 0, "jwt_replay": 0,
                                     "held_back_card": 0}
    finally:
        _close(store)


def test_replay_entries_go_when_their_token_expires_not_before(database_url):
    store = Storage(database_url, RETENTION)
    store.migrate()
    try:
        now = START.timestamp()
        store.remember_jti("https://ehr.example.org", "short", now + 60, now=now)
        store.remember_jti("https://ehr.example.org", "long", now + 3600, now=now)
        assert store.prune(START + timedelta(minutes=30))["jwt_replay"] == 1
        fresh = Storage(database_url, RETENTION)  # another worker: only the database remembers
        try:
            assert fresh.remember_jti("https://ehr.example.org", "long", now + 3600, now=now + 1800) is False
        finally:
            _close(fresh)
    finally:
        _close(store)


def _old_rows(url: str) -> Storage:
    store = Storage(url)
    store.migrate()
    long_ago = datetime.now(timezone.utc) - timedelta(days=400)
    store.record_cards(SERVICE, "old", _cards(3), at=long_ago)
    store.record_cards(SERVICE, "new", _cards(2))
    return store


def test_workers_prune_by_themselves_after_answering(app_config):
    store = _old_rows(app_config["DATABASE_URL"])
    app = create_app({**app_config, "PRUNE_INTERVAL_SECONDS": 300})
    try:
        response = app.test_client().get("/healthz", buffered=False)  # not closed yet
        assert store.row_counts()["issued_card"] == 5  # nothing happens before the answer is sent
        response.close()  # what the WSGI server does once the answer is sent
        assert app.extensions["cds"].storage.background.wait_idle()  # the prune runs on the background thread
        assert store.row_counts()["issued_card"] == 2
    finally:
        _close(store)


def test_storage_prune_command(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    _close(_old_rows(url))
    # in process (tests/behaviour/test_cli.py starts `python -m cds_service` itself): the same command
    env = {"CDS_DATABASE_URL": url, "CDS_ISSUED_CARD_RETENTION_DAYS": "30"}
    result = CliRunner().invoke(main, ["storage", "prune"], env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"feedback": 0, "issued_card": 3, "jwt_replay": 0, "held_back_card": 0,
                                         "silent_finding": 0, "card_release": 0}


def test_held_back_cards_are_kept_as_long_as_issued_cards(database_url):
    store = Storage(database_url, RETENTION)
    store.migrate()
    try:
        assert store.record_cards(SERVICE, "hook-1", [], held_back=[(RULE, "7052|oral|15")] * 2, at=START)
        assert store.prune(START + timedelta(days=1))["held_back_card"] == 0
        assert store.row_counts()["held_back_card"] == 2
        assert store.prune(START + timedelta(days=3))["held_back_card"] == 2
        assert store.row_counts()["held_back_card"] == 0
    finally:
        _close(store)
