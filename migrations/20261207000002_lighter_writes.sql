-- Issue 26: fewer WAL records per message.

-- A new message: the conversation's latest; a customer writing to a closed or archived
-- conversation reopens it; an answer answers every customer message still waiting in
-- the conversation. As before, but a conversation that exists is updated in place: an
-- upsert that meets its row locks it first, a WAL record of its own on every message; a
-- plain UPDATE does not. The upsert stays for a conversation's first message (of two
-- at once exactly one creates it) and for a message filed later than the latest.
CREATE OR REPLACE FUNCTION conversations_note_message() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    created BOOLEAN := false;
    was TEXT;
BEGIN
    IF NEW.visibility = 'internal' THEN
        RETURN NULL;
    END IF;
    UPDATE conversations
    SET last_communication_id = NEW.id, last_message_at = NEW.created_at
    WHERE customer_id = NEW.customer_id
      AND (last_message_at IS NULL OR last_message_at <= NEW.created_at)
    RETURNING status INTO was;
    IF NOT FOUND THEN
        INSERT INTO conversations (customer_id, updated_by, last_communication_id, last_message_at, created_at)
        VALUES (NEW.customer_id, NEW.sender_id, NEW.id, NEW.created_at, NEW.created_at)
        ON CONFLICT (customer_id) DO UPDATE
            SET last_communication_id = EXCLUDED.last_communication_id,
                last_message_at = EXCLUDED.last_message_at
            WHERE conversations.last_message_at IS NULL
               OR conversations.last_message_at <= EXCLUDED.last_message_at
        RETURNING xmax = 0, status INTO created, was;
    END IF;
    IF awaits_answer(NEW.type, NEW.direction, NEW.sender_role) THEN
        IF was IS NULL THEN
            -- A message older than the latest (filed late): the row was left as it is.
            SELECT status INTO was FROM conversations WHERE customer_id = NEW.customer_id FOR UPDATE;
        END IF;
        IF was IN ('closed', 'archived') THEN
            UPDATE conversations SET status = 'open', updated_by = NEW.sender_id, updated_at = now()
            WHERE customer_id = NEW.customer_id;
            -- Announced as staff changing it is (events::EventBody::ConversationStatus),
            -- in the same transaction, through the event outbox.
            INSERT INTO event_outbox (payload) VALUES (jsonb_build_object(
                'type', 'conversation.status', 'customer_id', NEW.customer_id, 'at', now(),
                'status', 'open', 'updated_by', NEW.sender_id));
        END IF;
        IF created OR was IN ('closed', 'archived') THEN
            UPDATE communications SET opens_conversation = true WHERE id = NEW.id;
        END IF;
    END IF;
    IF is_answer(NEW.direction, NEW.sender_role, NEW.visibility, NEW.deleted_at) THEN
        UPDATE communications
        SET answer_id = NEW.id, answered_at = NEW.created_at, answered_by = NEW.sender_id
        WHERE customer_id = NEW.customer_id AND answer_id IS NULL AND wait_closed_at IS NULL
          AND deleted_at IS NULL AND created_at <= NEW.created_at
          AND awaits_answer(type, direction, sender_role);
    END IF;
    RETURN NULL;
END
$$;

-- Recovery reads the event log by position; only retention asks by time, for the
-- oldest rows. Rows arrive in time order, so a block-range index serves it, and a
-- new row costs it nothing until its range is summarised (a B-tree entry a row before).
DROP INDEX event_log_at;
CREATE INDEX event_log_at ON event_log USING brin (at);

-- The search index takes new rows into its pending list (fastupdate: one WAL record a
-- row instead of one per word) and merges the list into the index when it outgrows its
-- limit, inside whichever insert crossed it. At the default 4 MB that merge stalled a
-- batch of sends for about 100 ms every few seconds under load; at 256 kB each merge is
-- short, and the same work is done in smaller pieces.
ALTER INDEX communications_search SET (gin_pending_list_limit = 256);
