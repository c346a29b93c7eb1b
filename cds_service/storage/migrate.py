"""The migration runner: ``migrations/NNN_*.sql`` applied in order, each once, recorded in
``schema_version``, all in one transaction that waits up to 10 s for a lock, so concurrent
start-ups migrate one at a time (PostgreSQL: an advisory lock, SQLite: BEGIN IMMEDIATE).

A script is split on ";" into statements: write no ";" inside a string or a comment."""
from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from cds_service.storage.backends import MIGRATE
from cds_service.storage.values import now_iso

if TYPE_CHECKING:
    from cds_service.storage.database import Database


def apply(db: "Database") -> None:
    folder = resources.files(__package__).joinpath("migrations")
    scripts = sorted((e for e in folder.iterdir() if e.name.endswith(".sql")), key=lambda p: p.name)
    with db.transaction(MIGRATE) as tx:
        if db.backend.migration_lock:
            tx.execute(db.backend.migration_lock)
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {row[0] for row in tx.execute("SELECT version FROM schema_version").fetchall()}
        for entry in scripts:
            version = int(entry.name.split("_", 1)[0])
            if version in done:
                continue
            for statement in entry.read_text("utf-8").split(";"):
                if statement.strip():
                    tx.execute(statement)
            db.execute(tx, "INSERT INTO schema_version VALUES (?, ?) ON CONFLICT DO NOTHING", (version, now_iso()))
