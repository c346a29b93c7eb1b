"""Revision 002: jwt replay (was migrations/002_jwt_replay.sql, applied by the runner before Alembic)."""
from alembic import op

revision = "002"
down_revision = "001"


def upgrade() -> None:
    # JWT ids seen within their lifetime, shared by every worker (replay protection).
    op.execute("""
        CREATE TABLE IF NOT EXISTS jwt_replay (
            issuer      TEXT NOT NULL,
            jti         TEXT NOT NULL,
            expires_at  DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (issuer, jti)
        )
    """)
    op.execute("CREATE INDEX IF NOT EXISTS jwt_replay_expiry ON jwt_replay (expires_at)")
