-- Go-live (storage/silent.py). What a silent rule would have shown: the same rule, item,
-- indicator and keyed patient hash as an issued card's record, never returned to the EHR.
CREATE TABLE IF NOT EXISTS silent_finding (
    finding_id        TEXT PRIMARY KEY,
    rule_id           TEXT NOT NULL,
    item_key          TEXT NOT NULL,
    indicator         TEXT NOT NULL,
    service_id        TEXT NOT NULL,
    hook_instance     TEXT NOT NULL,
    patient_key       TEXT,
    knowledge_release TEXT NOT NULL,
    found_at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS silent_finding_rule ON silent_finding (rule_id);
CREATE INDEX IF NOT EXISTS silent_finding_found_at ON silent_finding (found_at);
-- The knowledge release each issued card came from (its extension says the same).
CREATE TABLE IF NOT EXISTS card_release (
    card_uuid         TEXT PRIMARY KEY,
    knowledge_release TEXT NOT NULL
);
-- Hook calls per ISO week, service and release: the denominator of "per 1,000 calls".
CREATE TABLE IF NOT EXISTS call_count (
    week              TEXT NOT NULL,
    service_id        TEXT NOT NULL,
    knowledge_release TEXT NOT NULL,
    calls             INTEGER NOT NULL,
    PRIMARY KEY (week, service_id, knowledge_release)
);
