-- Every rule a card carries: one, or several for a merged info card (patient-view), each with
-- the item an override of it is remembered by (first RxNorm ingredient, procedure code, or ''
-- for a patient-level rule). Feedback on a card counts for every rule it carries.
CREATE TABLE IF NOT EXISTS card_rule (
    card_uuid  TEXT NOT NULL,
    rule_id    TEXT NOT NULL,
    item_key   TEXT NOT NULL,
    PRIMARY KEY (card_uuid, rule_id, item_key)
);
CREATE INDEX IF NOT EXISTS card_rule_rule ON card_rule (rule_id);
INSERT INTO card_rule (card_uuid, rule_id, item_key)
    SELECT card_uuid, rule_id, '' FROM issued_card;
-- A keyed hash (HMAC-SHA256, secret CDS_PATIENT_KEY_SECRET) of the patient id, never the id
-- itself: the override window looks up a patient's recent overrides by it.
ALTER TABLE issued_card ADD COLUMN patient_key TEXT;
CREATE INDEX IF NOT EXISTS issued_card_patient ON issued_card (patient_key)
