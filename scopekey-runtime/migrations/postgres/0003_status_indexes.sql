-- Listing by status stays fast on large stores: revoked and rotated keys
-- are few, and partial indexes find them without a scan.
CREATE INDEX scopekey_keys_revoked ON scopekey_keys (created_at DESC, id DESC)
    WHERE revoked_at IS NOT NULL;
CREATE INDEX scopekey_keys_rotating ON scopekey_keys (created_at DESC, id DESC)
    WHERE rotated_at IS NOT NULL;
