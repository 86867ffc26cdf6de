-- scopekey: keys and their audit log (SQLite).
-- Times are integer microseconds since the Unix epoch, UTC.
CREATE TABLE scopekey_keys (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    metadata       TEXT NOT NULL DEFAULT '{}',
    hint           TEXT NOT NULL,
    key_hash       BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER,
    revoked_reason TEXT,
    rotated_at     INTEGER,
    parent_key_id  TEXT REFERENCES scopekey_keys (id),
    last_used_at   INTEGER
);

-- Verification: one indexed lookup by hash.
CREATE UNIQUE INDEX scopekey_keys_hash ON scopekey_keys (key_hash);
-- At most one successor per key, whatever the application does.
CREATE UNIQUE INDEX scopekey_keys_parent ON scopekey_keys (parent_key_id)
    WHERE parent_key_id IS NOT NULL;
-- Keyset pagination, newest first.
CREATE INDEX scopekey_keys_created ON scopekey_keys (created_at DESC, id DESC);

CREATE TABLE scopekey_events (
    id           TEXT PRIMARY KEY NOT NULL,
    key_id       TEXT,
    type         TEXT NOT NULL,
    actor_key_id TEXT,
    at           INTEGER NOT NULL,
    details      TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX scopekey_events_at ON scopekey_events (at DESC, id DESC);
CREATE INDEX scopekey_events_key ON scopekey_events (key_id, at DESC, id DESC);
