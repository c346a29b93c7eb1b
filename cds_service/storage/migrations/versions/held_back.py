"""Revision 005: held back (was migrations/005_held_back.sql, applied by the runner before Alembic)."""
from alembic import op

revision = "005"
down_revision = "004"


def upgrade() -> None:
    # Warning cards held back by the override window (overridden with a reason for the same patient,
    # rule and item within the window): one row per card not shown, so that `feedback report` can
    # say how often each rule was silenced. No patient key: the count needs none.
    op.execute("""
        CREATE TABLE IF NOT EXISTS held_back_card (
            held_uuid     TEXT PRIMARY KEY,
            hook_instance TEXT NOT NULL,
            rule_id       TEXT NOT NULL,
            item_key      TEXT NOT NULL,
            service_id    TEXT NOT NULL,
            held_at       TEXT NOT NULL
        )
    """)
    op.execute("CREATE INDEX IF NOT EXISTS held_back_card_at ON held_back_card (held_at)")
