"""What is kept: issued cards, feedback, the JWT replay cache, retention and the feedback report; SQLite or PostgreSQL."""
