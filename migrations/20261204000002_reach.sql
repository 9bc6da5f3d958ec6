-- Issue 15: how to reach a customer who is not in the portal.

-- A customer's own addresses and what to do with in-app messages they leave unread.
-- Quiet hours are local times in `time_zone` (an IANA name PostgreSQL knows); a window
-- whose end is before its start runs over midnight.
CREATE TABLE customer_preferences (
    customer_id          TEXT PRIMARY KEY,
    email                TEXT,
    phone                TEXT,
    fallback             TEXT NOT NULL DEFAULT 'none' CHECK (fallback IN ('sms', 'email', 'none')),
    quiet_start          TIME,
    quiet_end            TIME,
    time_zone            TEXT,
    fallback_after_secs  INTEGER CHECK (fallback_after_secs BETWEEN 60 AND 604800),
    updated_by           TEXT NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (fallback <> 'sms' OR phone IS NOT NULL),
    CHECK (fallback <> 'email' OR email IS NOT NULL),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CHECK (quiet_start IS NULL OR time_zone IS NOT NULL)
);
CREATE INDEX customer_preferences_fallback ON customer_preferences (customer_id)
    WHERE fallback <> 'none';

-- An unread in-app message sent on again: the SMS or email that carried it (one may
-- carry several: a digest). The fallback names what it carries in its metadata.
ALTER TABLE communications
    ADD COLUMN fallback_id       UUID REFERENCES communications (id),
    ADD COLUMN fallback_channel  TEXT CHECK (fallback_channel IN ('sms', 'email'));
-- What the fallback sweep reads: outbound public in-app messages nobody has received.
CREATE INDEX communications_awaiting_fallback ON communications (customer_id, created_at)
    WHERE type = 'inapp' AND direction = 'outbound' AND visibility = 'public'
      AND status IN ('queued', 'sent') AND fallback_id IS NULL AND deleted_at IS NULL;
