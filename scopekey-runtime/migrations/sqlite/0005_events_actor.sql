-- The keys a key minted (created, or rotated into being) are found by the
-- actor of their events, for a compromise report; only management actions
-- have a key as actor, so the index stays small.
CREATE INDEX scopekey_events_actor ON scopekey_events (actor_key_id)
    WHERE actor_key_id IS NOT NULL;
