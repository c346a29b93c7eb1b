-- JWT ids seen within their lifetime, shared by every worker (replay protection).
CREATE TABLE IF NOT EXISTS jwt_replay (
    issuer      TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX IF NOT EXISTS jwt_replay_expiry ON jwt_replay (expires_at);
