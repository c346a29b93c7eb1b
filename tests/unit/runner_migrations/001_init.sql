-- Cards the service issued (no patient data) and the feedback clinicians gave.
CREATE TABLE IF NOT EXISTS issued_card (
    card_uuid      TEXT PRIMARY KEY,
    rule_id        TEXT NOT NULL,
    service_id     TEXT NOT NULL,
    hook_instance  TEXT NOT NULL,
    issued_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS issued_card_rule ON issued_card (rule_id);

CREATE TABLE IF NOT EXISTS issued_suggestion (
    suggestion_uuid TEXT PRIMARY KEY,
    card_uuid       TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS feedback (
    card_uuid          TEXT NOT NULL,
    service_id         TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    outcome_timestamp  TEXT NOT NULL,
    accepted_suggestions TEXT,
    override_system    TEXT,
    override_code      TEXT,
    override_display   TEXT,
    user_comment       TEXT,
    received_at        TEXT NOT NULL,
    PRIMARY KEY (card_uuid, outcome, outcome_timestamp)
);
