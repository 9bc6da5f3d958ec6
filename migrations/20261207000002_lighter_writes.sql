-- Issue 26: less work, and fewer WAL records, per message.

-- New messages: each conversation's latest; a customer writing to a closed or archived
-- conversation reopens it; an answer answers every customer message still waiting in
-- its conversation. As before, but once per statement over the rows it wrote (a
-- transition table), not once per row: a batch of sends runs these few statements,
-- not three for each of its rows. Conversations that exist are updated in place (an
-- upsert that meets a row locks it first: a WAL record of its own); the upsert stays
-- for new ones, so of two first messages at once exactly one creates the conversation.
-- Within a statement, messages count in (created_at, id) order.
CREATE FUNCTION conversations_note_messages() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    created TEXT[];
BEGIN
    WITH latest AS (
        SELECT DISTINCT ON (customer_id) customer_id, id, created_at
        FROM added WHERE visibility = 'public'
        ORDER BY customer_id, created_at DESC, id DESC)
    UPDATE conversations c SET last_communication_id = l.id, last_message_at = l.created_at
    FROM latest l
    WHERE c.customer_id = l.customer_id
      AND (c.last_message_at IS NULL OR c.last_message_at <= l.created_at);

    WITH latest AS (
        SELECT DISTINCT ON (customer_id) customer_id, id, created_at
        FROM added WHERE visibility = 'public'
        ORDER BY customer_id, created_at DESC, id DESC),
    first AS (
        SELECT DISTINCT ON (customer_id) customer_id, sender_id, created_at
        FROM added WHERE visibility = 'public'
        ORDER BY customer_id, created_at, id),
    inserted AS (
        INSERT INTO conversations (customer_id, updated_by, last_communication_id, last_message_at, created_at)
        SELECT l.customer_id, f.sender_id, l.id, l.created_at, f.created_at
        FROM latest l JOIN first f USING (customer_id)
        WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.customer_id = l.customer_id)
        ORDER BY l.customer_id
        ON CONFLICT (customer_id) DO UPDATE
            SET last_communication_id = EXCLUDED.last_communication_id,
                last_message_at = EXCLUDED.last_message_at
            WHERE conversations.last_message_at IS NULL
               OR conversations.last_message_at <= EXCLUDED.last_message_at
        RETURNING customer_id, xmax = 0 AS fresh)
    SELECT array_agg(customer_id) FILTER (WHERE fresh) INTO created FROM inserted;

    IF EXISTS (SELECT 1 FROM added WHERE visibility = 'public'
               AND awaits_answer(type, direction, sender_role)) THEN
        -- A conversation is opened by its first message when that message waits for
        -- an answer: the one that created it, or the first to a closed one.
        WITH first_message AS (
            SELECT DISTINCT ON (customer_id) customer_id, id, sender_id,
                   awaits_answer(type, direction, sender_role) AS waits
            FROM added WHERE visibility = 'public'
            ORDER BY customer_id, created_at, id),
        first_waiting AS (
            SELECT DISTINCT ON (customer_id) customer_id, id, sender_id
            FROM added WHERE visibility = 'public' AND awaits_answer(type, direction, sender_role)
            ORDER BY customer_id, created_at, id),
        reopened AS (
            UPDATE conversations c SET status = 'open', updated_by = w.sender_id, updated_at = now()
            FROM first_waiting w
            WHERE c.customer_id = w.customer_id AND c.status IN ('closed', 'archived')
            RETURNING c.customer_id, w.id, w.sender_id),
        -- Announced as staff changing it is (events::EventBody::ConversationStatus),
        -- in the same transaction, through the event outbox.
        announced AS (
            INSERT INTO event_outbox (payload)
            SELECT jsonb_build_object('type', 'conversation.status', 'customer_id', customer_id,
                       'at', now(), 'status', 'open', 'updated_by', sender_id)
            FROM reopened ORDER BY customer_id)
        UPDATE communications SET opens_conversation = true
        WHERE id IN (SELECT id FROM reopened
                     UNION ALL
                     SELECT id FROM first_message
                     WHERE waits AND customer_id = ANY (coalesce(created, '{}')));
    END IF;

    IF EXISTS (SELECT 1 FROM added
               WHERE is_answer(direction, sender_role, visibility, deleted_at)) THEN
        -- Each waiting message takes the first answer written at or after it. Found
        -- conversation by conversation (OFFSET 0 keeps the planner, which cannot size a
        -- transition table, from scanning every waiting message instead).
        WITH answering AS (
            SELECT customer_id, max(created_at) AS until
            FROM added WHERE is_answer(direction, sender_role, visibility, deleted_at)
            GROUP BY customer_id),
        waiting AS (
            SELECT w.id, w.customer_id, w.created_at
            FROM answering,
            LATERAL (SELECT id, customer_id, created_at FROM communications
                     WHERE customer_id = answering.customer_id
                       AND created_at <= answering.until
                       AND answer_id IS NULL AND wait_closed_at IS NULL AND deleted_at IS NULL
                       AND awaits_answer(type, direction, sender_role)
                     OFFSET 0) w)
        UPDATE communications c SET (answer_id, answered_at, answered_by) = (
            SELECT a.id, a.created_at, a.sender_id FROM added a
            WHERE a.customer_id = waiting.customer_id AND a.created_at >= waiting.created_at
              AND is_answer(a.direction, a.sender_role, a.visibility, a.deleted_at)
            ORDER BY a.created_at, a.id LIMIT 1)
        FROM waiting
        WHERE c.id = waiting.id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER communications_note_message ON communications;
DROP FUNCTION conversations_note_message();
CREATE TRIGGER communications_note_messages AFTER INSERT ON communications
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION conversations_note_messages();

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
