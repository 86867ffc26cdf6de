-- Finished deliveries (delivered or given up) are deleted by the notifier
-- once older than its retention period: found by when they finished.
CREATE INDEX scopekey_deliveries_finished ON scopekey_deliveries (finished_at)
    WHERE state <> 'pending';
-- Deliveries are listed oldest first.
CREATE INDEX scopekey_deliveries_created ON scopekey_deliveries (created_at, id);

-- Successors' sealed plaintexts are erased once their delivery finishes;
-- erase those that finished before this migration too.
UPDATE scopekey_deliveries SET payload = ''
    WHERE state <> 'pending' AND substr(payload, 1, 7) = 'sealed:';
