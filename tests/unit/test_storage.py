"""Storage on both backends: SQLite always, PostgreSQL when CDS_TEST_POSTGRES_URL is set.

Each PostgreSQL test gets its own schema (``search_path`` in the URL; the
``database_url`` fixture in conftest.py, shared with the fault and retention tests), dropped
afterwards, so tests neither see nor disturb each other. CI (.ci/run) starts a
throwaway cluster and sets the variable; without it the PostgreSQL cases skip.
"""
from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest
from helpers import POSTGRES_URL
from sqlalchemy import inspect, text

from cds_service.core.issued import IssuedCard
from cds_service.storage import migrate
from cds_service.storage.store import Storage

WHEN = "2026-11-23T12:01:02.345Z"
SYSTEM = "https://cds-back-pain.example.org/fhir/CodeSystem/override-reason"
TABLES = {"alembic_version", "issued_card", "issued_suggestion", "feedback", "jwt_replay", "card_rule"}


@contextmanager
def _schema(url: str) -> Iterator[None]:
    """A fresh PostgreSQL schema named by the URL's search_path for the block (nothing for SQLite)."""
    if not url.startswith("postgresql"):
        yield
        return
    import psycopg

    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    store = Storage(database_url)
    store.migrate()
    yield store
    _close(store)


def _close(store: Storage) -> None:
    store.close()


def _rows(store: Storage, sql: str, **params: Any) -> list[Any]:
    with store.reading() as conn:
        return list(conn.execute(text(sql), params).fetchall())


def _tables(store: Storage) -> set[str]:
    with store.reading() as conn:
        return set(inspect(conn).get_table_names())


def _versions(store: Storage) -> list[str]:
    """The revisions Alembic recorded: the newest alone once migrated."""
    return [row[0] for row in _rows(store, "SELECT version_num FROM alembic_version")]


def _card(rule_id: str, suggestions: int = 1) -> IssuedCard:
    return IssuedCard(str(uuid.uuid4()), (rule_id,), tuple(str(uuid.uuid4()) for _ in range(suggestions)))


def _overridden(card: IssuedCard, code: str | None = "patient-declined", when: str = WHEN) -> dict[str, Any]:
    item: dict[str, Any] = {"card": card.uuid, "outcome": "overridden", "outcomeTimestamp": when}
    if code:
        item["overrideReason"] = {"reason": {"system": SYSTEM, "code": code}}  # no display, as the sandbox sends
    return item


def _accepted(card: IssuedCard, when: str = WHEN) -> dict[str, Any]:
    return {"card": f"urn:uuid:{card.uuid.upper()}", "outcome": "accepted", "outcomeTimestamp": when,
            "acceptedSuggestions": [{"id": card.suggestion_uuids[0]}]}


def test_migrations_apply_twice_idempotently(database_url):
    first = Storage(database_url)
    first.migrate()
    first.migrate()  # same process, again
    second = Storage(database_url)
    second.migrate()  # a restart on the same database
    try:
        assert TABLES <= _tables(second)
        assert _versions(second) == [migrate.head()]
        assert second.writable()
    finally:
        _close(first)
        _close(second)


def test_concurrent_start_ups_migrate_once(database_url):
    """Several instances (or a restart racing a second one) creating and migrating a new database at once."""
    if database_url.startswith("sqlite"):  # a fresh database each round: the race is at its creation
        urls = [database_url.replace(".sqlite3", f"-{n}.sqlite3") for n in range(5)]
    else:
        urls = [database_url.replace("%3Dt_", f"%3Dr{n}_") for n in range(5)]
    for url in urls:
        with _schema(url):
            _race_to_migrate(url)


def all_at_once(stores: list[Storage], action: Callable[[Storage], Any], seconds: float = 30) -> list[Any]:
    """``action`` on every store at the same moment (one thread each, released together), each
    store closed after; the results, or the first exception raised."""
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def run(store: Storage) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(action(store))
        except BaseException as exc:  # noqa: BLE001 - raised below, in the test's thread
            errors.append(exc)
        finally:
            _close(store)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), f"an action did not finish within {seconds} s"
    return results


def _race_to_migrate(url: str) -> None:
    all_at_once([Storage(url) for _ in range(6)], Storage.migrate)
    check = Storage(url)
    try:
        assert _versions(check) == [migrate.head()]
    finally:
        _close(check)


def test_record_cards_stores_cards_and_suggestions_once(storage):
    cards = [_card("mcas.neuromuscular-blocker", 2), _card("mcas.opioid-histamine", 0)]
    storage.record_cards("back-pain-order-select", "hook-1", cards)
    storage.record_cards("back-pain-order-select", "hook-1", cards)  # a retry stores nothing twice
    storage.record_cards("back-pain-order-select", "hook-2", [])
    assert _rows(storage, "SELECT COUNT(*) FROM issued_card")[0][0] == 2
    assert _rows(storage, "SELECT COUNT(*) FROM issued_suggestion")[0][0] == 2
    stats = storage.stats()
    assert stats["mcas.neuromuscular-blocker"]["issued"] == 1
    assert stats["mcas.opioid-histamine"] == {"issued": 1, "accepted": 0, "overridden": 0, "override_reasons": {}}


def _feedback_rows(storage) -> int:
    return int(_rows(storage, "SELECT COUNT(*) FROM feedback")[0][0])


def test_record_feedback_is_idempotent(storage):
    card = _card("mcas.neuromuscular-blocker")
    storage.record_cards("back-pain-order-select", "hook-1", [card])
    items = [_accepted(card), _overridden(card)]
    for _ in range(3):
        storage.record_feedback("back-pain-order-select", items)
    assert _feedback_rows(storage) == 2
    storage.record_feedback("back-pain-order-select", [_overridden(card, when="2026-11-23T12:05:00Z")])
    assert _feedback_rows(storage) == 3  # another decision at another time is new feedback
    row = _rows(storage, "SELECT card_uuid, accepted_suggestions FROM feedback WHERE outcome = 'accepted'")[0]
    assert row[0] == card.uuid  # urn:uuid: prefix and upper case normalised
    assert card.suggestion_uuids[0] in row[1]


def test_remember_jti_detects_replays_until_expiry(storage):
    later = time.time() + 300
    assert storage.remember_jti("https://ehr.example.org", "jti-1", later) is True
    assert storage.remember_jti("https://ehr.example.org", "jti-1", later) is False  # a replay
    assert storage.remember_jti("https://other.example.org", "jti-1", later) is True  # per issuer
    assert storage.remember_jti("https://ehr.example.org", "jti-2", later) is True
    assert storage.remember_jti("https://ehr.example.org", "old", time.time() - 1) is True
    assert storage.remember_jti("https://ehr.example.org", "old", later) is True  # expired ones are forgotten


def test_jti_expiry_is_kept_to_the_millisecond(storage):
    """The replay cache forgets a JWT id only after it expires: the stored expiry must be exact.

    (A 4-byte REAL holds a Unix time only to within 64 s: a jti could be purged
    up to a minute before its token expires, and the token replayed.)
    """
    expires = time.time() + 300.125
    storage.remember_jti("https://ehr.example.org", "precise", expires)
    stored = _rows(storage, "SELECT expires_at FROM jwt_replay WHERE jti = :jti", jti="precise")[0][0]
    assert abs(float(stored) - expires) < 0.001, f"stored {stored!r} for {expires!r}"


def test_remember_jti_is_atomic_across_connections(database_url, storage):
    """The same JWT presented to several workers at once is accepted by exactly one."""
    results = all_at_once([Storage(database_url) for _ in range(4)],
                          lambda store: store.remember_jti("https://ehr.example.org", "raced", time.time() + 300))
    assert sorted(results) == [False, False, False, True]


def test_stats_attribute_feedback_to_rules(storage):
    blocker, opioid = _card("mcas.neuromuscular-blocker"), _card("mcas.opioid-histamine")
    storage.record_cards("back-pain-order-select", "hook-1", [blocker, opioid])
    stranger = _card("never.issued")
    storage.record_feedback("back-pain-order-select", [
        _accepted(blocker),
        _overridden(opioid, "patient-declined"),
        _overridden(opioid, "patient-declined", when="2026-11-23T12:09:00Z"),  # same card again: counted once
        _overridden(stranger, None),
    ])
    assert storage.stats() == {
        "mcas.neuromuscular-blocker": {"issued": 1, "accepted": 1, "overridden": 0, "override_reasons": {}},
        "mcas.opioid-histamine": {"issued": 1, "accepted": 0, "overridden": 1,
                                  "override_reasons": {"patient-declined": 1}},
        "(unknown card)": {"issued": 0, "accepted": 0, "overridden": 1, "override_reasons": {}},
    }


def test_a_merged_card_and_its_feedback_count_for_every_rule_it_carries(storage):
    merged = IssuedCard(str(uuid.uuid4()), ("mcas.anti-mediator-therapy", "mcas.bone-health"), (str(uuid.uuid4()),))
    storage.record_cards("back-pain-patient-view", "hook-1", [merged])
    storage.record_feedback("back-pain-patient-view", [_accepted(merged)])
    stats = storage.stats()
    for rule in merged.rule_ids:
        assert stats[rule] == {"issued": 1, "accepted": 1, "overridden": 0, "override_reasons": {}}
    assert sorted(r for r, _ in storage.card_history()["issued"]) == sorted(merged.rule_ids)


def test_recent_overrides_are_read_by_patient_key_rule_item_and_time(storage):
    since = datetime(2026, 11, 1, tzinfo=timezone.utc)
    cards = {name: IssuedCard(str(uuid.uuid4()), ("mcas.histamine-releasing-opioid",), (), (item,))
             for name, item in [("recent", "7052"), ("old", "2670"), ("accepted", "3423")]}
    storage.record_cards("back-pain-order-sign", "hook-1", list(cards.values()), patient_key="k1")
    storage.record_cards("back-pain-order-sign", "hook-2", [_card("mcas.neuromuscular-blocker")], patient_key="k2")
    storage.record_feedback("back-pain-order-sign", [
        _overridden(cards["recent"], when="2026-11-20T08:00:00-05:00"),
        _overridden(cards["old"], when="2026-10-31T23:59:00Z"),
        {**_overridden(cards["accepted"]), "outcome": "accepted", "acceptedSuggestions": [{"id": str(uuid.uuid4())}]},
    ])
    assert storage.recent_overrides("k1", since) == {("mcas.histamine-releasing-opioid", "7052")}
    assert storage.recent_overrides("k2", since) == frozenset()
    # a site's own window per rule, in the same query: a longer one reaches the older override, 0 days none
    opioid = "mcas.histamine-releasing-opioid"
    longer = {opioid: datetime(2026, 10, 1, tzinfo=timezone.utc)}
    assert storage.recent_overrides("k1", since, longer) == {(opioid, "7052"), (opioid, "2670")}
    assert storage.recent_overrides("k1", since, {opioid: None}) == frozenset()


def test_card_history_reads_issued_cards_within_bounds_and_all_feedback(storage):
    blocker = _card("mcas.neuromuscular-blocker")
    storage.record_cards("back-pain-order-select", "hook-1", [blocker])
    storage.record_feedback("back-pain-order-select", [_overridden(blocker, "patient-declined"), _accepted(_card("x"))])
    history = storage.card_history()
    assert [rule for rule, _ in history["issued"]] == ["mcas.neuromuscular-blocker"]
    assert sorted((row[0], row[2], row[4]) for row in history["feedback"]) == [
        ("(unknown card)", "accepted", None), ("mcas.neuromuscular-blocker", "overridden", "patient-declined")]
    assert storage.card_history(issued_since="2999-01-01T00:00:00.000Z")["issued"] == []
    assert storage.card_history(issued_until="2000-01-01T00:00:00.000Z")["issued"] == []
