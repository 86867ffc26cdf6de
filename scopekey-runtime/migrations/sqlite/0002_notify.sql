-- scopekey: expiry notices and the webhook outbox (SQLite).
-- Times are integer microseconds since the Unix epoch, UTC.

-- Receivers, identified by URL so that several instances configured alike
-- share one row (and each event is delivered to it once).
CREATE TABLE scopekey_webhook_endpoints (
    id              TEXT PRIMARY KEY NOT NULL,
    url             TEXT NOT NULL UNIQUE,
    event_types     TEXT NOT NULL DEFAULT '[]',
    created_at      INTEGER NOT NULL,
    paused_until    INTEGER,
    disabled_at     INTEGER,
    disabled_reason TEXT
);

-- One notice per key and threshold, ever: the primary key makes restarts and
-- concurrent notifiers idempotent. Threshold 0 marks the `key.expired` event.
CREATE TABLE scopekey_notices (
    key_id            TEXT NOT NULL,
    threshold_seconds INTEGER NOT NULL,
    event_id          TEXT NOT NULL,
    at                INTEGER NOT NULL,
    PRIMARY KEY (key_id, threshold_seconds)
);

-- The outbox: one row per event and endpoint, written in the transaction
-- that wrote the event. A sender claims a row by setting `claimed_until`
-- (a lease) and `claim_token`; an expired lease makes it claimable again.
CREATE TABLE scopekey_deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    endpoint_id     TEXT NOT NULL REFERENCES scopekey_webhook_endpoints (id),
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    key_id          TEXT,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,
    claim_token     TEXT,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    finished_at     INTEGER,
    UNIQUE (event_id, endpoint_id)
);

-- The sender's scan: due pending rows only.
CREATE INDEX scopekey_deliveries_due ON scopekey_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX scopekey_deliveries_key ON scopekey_deliveries (key_id, created_at);

-- The notifier's scan: live keys by expiry.
CREATE INDEX scopekey_keys_expires ON scopekey_keys (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
