-- scopekey: keys and their audit log (PostgreSQL).
CREATE TABLE scopekey_keys (
    id             UUID PRIMARY KEY,
    name           TEXT NOT NULL,
    scopes         JSONB NOT NULL,
    metadata       JSONB NOT NULL DEFAULT '{}'::jsonb,
    hint           TEXT NOT NULL,
    key_hash       BYTEA NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ,
    revoked_at     TIMESTAMPTZ,
    revoked_reason TEXT,
    rotated_at     TIMESTAMPTZ,
    parent_key_id  UUID REFERENCES scopekey_keys (id),
    last_used_at   TIMESTAMPTZ
);

-- Verification: one indexed lookup by hash.
CREATE UNIQUE INDEX scopekey_keys_hash ON scopekey_keys (key_hash);
-- At most one successor per key, whatever the application does.
CREATE UNIQUE INDEX scopekey_keys_parent ON scopekey_keys (parent_key_id)
    WHERE parent_key_id IS NOT NULL;
-- Keyset pagination, newest first.
CREATE INDEX scopekey_keys_created ON scopekey_keys (created_at DESC, id DESC);

CREATE TABLE scopekey_events (
    id           UUID PRIMARY KEY,
    key_id       UUID,
    type         TEXT NOT NULL,
    actor_key_id UUID,
    at           TIMESTAMPTZ NOT NULL,
    details      JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX scopekey_events_at ON scopekey_events (at DESC, id DESC);
CREATE INDEX scopekey_events_key ON scopekey_events (key_id, at DESC, id DESC);
