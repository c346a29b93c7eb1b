-- Warning cards held back by the override window (overridden with a reason for the same patient,
-- rule and item within the window): one row per card not shown, so that `feedback report` can
-- say how often each rule was silenced. No patient key: the count needs none.
CREATE TABLE IF NOT EXISTS held_back_card (
    held_uuid     TEXT PRIMARY KEY,
    hook_instance TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    item_key      TEXT NOT NULL,
    service_id    TEXT NOT NULL,
    held_at       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS held_back_card_at ON held_back_card (held_at)
