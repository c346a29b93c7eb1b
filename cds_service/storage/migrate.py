"""Migrations with Alembic: the revisions are ``migrations/versions/*.py`` (one ``op.execute`` per
statement), recorded in Alembic's ``alembic_version`` table, run at start-up in one transaction
that waits up to 10 s for a lock, so concurrent start-ups migrate one at a time (PostgreSQL: an
advisory lock, SQLite: BEGIN IMMEDIATE).

A database made by the runner before Alembic (its ``schema_version`` table holding versions
1 to 6) is taken over as it is: stamped with the revision of its highest version (revisions
``001`` to ``006`` are those scripts), then upgraded; its rows are kept, and so is its
``schema_version`` table (no longer written).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, inspect, text

from cds_service.storage.backends import MIGRATE

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

    from cds_service.storage.database import Database

# Alembic (11 MB of RSS once imported) is imported where a migration runs, not with the storage:
# the CLI commands and the forecast's worker processes that never migrate do not pay for it.

FOLDER = Path(__file__).with_name("migrations")


@functools.cache
def scripts() -> ScriptDirectory:
    """The revisions, read once per process."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(FOLDER))


def apply(db: "Database") -> None:
    """Bring the database to the newest revision, under the migration lock."""
    with db.transaction(MIGRATE) as tx:
        if db.backend.migration_lock:
            tx.exec_driver_sql(db.backend.migration_lock)
        upgrade(tx)


def upgrade(tx: Connection) -> None:
    """Take over a database the old runner made, then apply the revisions not yet applied; ``tx``
    is in a transaction already, which Alembic joins (it neither commits nor rolls back)."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationContext

    script = scripts()
    context = MigrationContext.configure(tx)
    if context.get_current_revision() is None and (old := runner_version(tx)):
        context.stamp(script, f"{old:03d}")

    def steps(revision: Any, context: MigrationContext) -> Any:
        return script._upgrade_revs("head", revision)

    with EnvironmentContext(Config(), script, fn=steps) as env:
        env.configure(connection=tx)
        with env.begin_transaction():  # a no-op: joins the transaction tx is in
            env.run_migrations()


def runner_version(tx: Connection) -> int | None:
    """The highest version the runner before Alembic recorded in ``schema_version``, if any."""
    if not inspect(tx).has_table("schema_version"):
        return None
    version = tx.execute(text("SELECT MAX(version) FROM schema_version")).scalar()
    return int(version) if version is not None else None


def head() -> str:
    """The newest revision."""
    return str(scripts().get_current_head())
