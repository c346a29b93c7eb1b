"""What is kept: issued cards, feedback, the JWT replay cache, retention and the feedback report;
SQLite or PostgreSQL through SQLAlchemy Core (one engine and pool per process), migrated with Alembic."""
