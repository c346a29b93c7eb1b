-- Retention (storage.prune): old rows are found by time, and a card's suggestions by card.
CREATE INDEX IF NOT EXISTS issued_card_issued_at ON issued_card (issued_at);
CREATE INDEX IF NOT EXISTS issued_suggestion_card ON issued_suggestion (card_uuid);
CREATE INDEX IF NOT EXISTS feedback_received_at ON feedback (received_at);
