-- scopekey: expiry notices and the webhook outbox (PostgreSQL).

-- Receivers, identified by URL so that several instances configured alike
-- share one row (and each event is delivered to it once).
CREATE TABLE scopekey_webhook_endpoints (
    id              UUID PRIMARY KEY,
    url             TEXT NOT NULL UNIQUE,
    event_types     JSONB NOT NULL DEFAULT '[]'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL,
    paused_until    TIMESTAMPTZ,
    disabled_at     TIMESTAMPTZ,
    disabled_reason TEXT
);

-- One notice per key and threshold, ever: the primary key makes restarts and
-- concurrent notifiers idempotent. Threshold 0 marks the `key.expired` event.
CREATE TABLE scopekey_notices (
    key_id            UUID NOT NULL,
    threshold_seconds BIGINT NOT NULL,
    event_id          UUID NOT NULL,
    at                TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key_id, threshold_seconds)
);

-- The outbox: one row per event and endpoint, written in the transaction
-- that wrote the event. Senders claim rows with FOR UPDATE SKIP LOCKED and
-- hold them with a lease (`claimed_until`, `claim_token`); an expired lease
-- makes a row claimable again. The body is TEXT, sent byte for byte.
CREATE TABLE scopekey_deliveries (
    id              UUID PRIMARY KEY,
    endpoint_id     UUID NOT NULL REFERENCES scopekey_webhook_endpoints (id),
    event_id        UUID NOT NULL,
    event_type      TEXT NOT NULL,
    key_id          UUID,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_until   TIMESTAMPTZ,
    claim_token     UUID,
    last_attempt_at TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    finished_at     TIMESTAMPTZ,
    UNIQUE (event_id, endpoint_id)
);

-- The sender's scan: due pending rows only.
CREATE INDEX scopekey_deliveries_due ON scopekey_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX scopekey_deliveries_key ON scopekey_deliveries (key_id, created_at);

-- The notifier's scan: live keys by expiry.
CREATE INDEX scopekey_keys_expires ON scopekey_keys (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
