-- scopekey: rotation on a schedule (SQLite).
-- A key's rotation period, in seconds (NULL: no policy), and, for keys that
-- rotate themselves, the webhook their successor's plaintext is sent to.
ALTER TABLE scopekey_keys ADD COLUMN rotation_period_seconds INTEGER;
ALTER TABLE scopekey_keys ADD COLUMN rotation_webhook_url TEXT;
-- That webhook's signing secret, sealed under the service's rotation secret
-- (never in the clear); successors inherit it.
ALTER TABLE scopekey_keys ADD COLUMN rotation_webhook_secret TEXT;

-- Endpoints created for one key's successor deliveries (not configured
-- receivers): any notifier with a delivery secret sends to them.
ALTER TABLE scopekey_webhook_endpoints ADD COLUMN key_delivery INTEGER NOT NULL DEFAULT 0;

-- The notifier's scan for keys due an automatic rotation.
CREATE INDEX scopekey_keys_auto_rotate ON scopekey_keys (expires_at)
    WHERE rotation_webhook_url IS NOT NULL AND revoked_at IS NULL AND rotated_at IS NULL;
