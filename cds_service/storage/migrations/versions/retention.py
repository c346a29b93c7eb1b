"""Revision 003: retention (was migrations/003_retention.sql, applied by the runner before Alembic)."""
from alembic import op

revision = "003"
down_revision = "002"


def upgrade() -> None:
    # Retention (storage.prune): old rows are found by time, and a card's suggestions by card.
    op.execute("CREATE INDEX IF NOT EXISTS issued_card_issued_at ON issued_card (issued_at)")
    op.execute("CREATE INDEX IF NOT EXISTS issued_suggestion_card ON issued_suggestion (card_uuid)")
    op.execute("CREATE INDEX IF NOT EXISTS feedback_received_at ON feedback (received_at)")
