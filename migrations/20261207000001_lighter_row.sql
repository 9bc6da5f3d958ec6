-- Issue 26: a lighter row on the write path.

-- A delivered in-app message (queued → sent) is updated in place (a HOT update, no new
-- entry in any index): no index names its status any more, and each page keeps room
-- for the new version of its rows. The fallback sweep's index says "not received yet"
-- by `delivered_at` (set with `delivered` and `read`); the sweep itself still asks for
-- `queued` or `sent`, so a failed message never falls back.
DROP INDEX communications_awaiting_fallback;
CREATE INDEX communications_awaiting_fallback ON communications (customer_id, created_at)
    WHERE type = 'inapp' AND direction = 'outbound' AND visibility = 'public'
      AND delivered_at IS NULL AND fallback_id IS NULL AND deleted_at IS NULL;
ALTER TABLE communications SET (fillfactor = 85);

-- Operators filter by error class among jobs that failed: a job that succeeds at once
-- (nearly all) never enters this index, on any of its three writes.
DROP INDEX jobs_state_error_class;
CREATE INDEX jobs_state_error_class ON jobs (state, last_error_class, created_at DESC)
    WHERE last_error_class IS NOT NULL;
