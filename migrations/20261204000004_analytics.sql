-- Issue 16: analytics (response times, volume, engagement) and the operators' live view.
--
-- Analytics are computed on read, over an index, from facts kept as messages are
-- written: which staff answer a customer's message first answered it (and when), which
-- customer message opened or reopened its conversation, and every change of a
-- conversation's status. So a 30-day summary is one range scan, not a search for each
-- message's answer; and edits, deletions and late receipts change the figures the
-- moment they change the rows.

-- Who answers: staff, crew and operators, in a message the customer sees. The system's
-- own sends (dispatch notices, fallbacks) and internal notes answer nobody.
CREATE FUNCTION is_answer(direction TEXT, sender_role TEXT, visibility TEXT, deleted_at TIMESTAMPTZ)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT direction = 'outbound' AND visibility = 'public' AND deleted_at IS NULL
       AND sender_role IN ('staff', 'crew', 'operator')
$$;

-- What waits for an answer: a customer's message (in-app, SMS, email). A call is
-- answered or missed as it happens; it is counted in volume only.
CREATE FUNCTION awaits_answer(type TEXT, direction TEXT, sender_role TEXT)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT direction = 'inbound' AND sender_role = 'customer' AND type IN ('inapp', 'sms', 'email')
$$;

ALTER TABLE communications
    -- A customer's message: the first answer written at or after it.
    ADD COLUMN answer_id           UUID,
    ADD COLUMN answered_at         TIMESTAMPTZ,
    ADD COLUMN answered_by         TEXT,
    -- A customer's message still waiting when staff closed or archived its conversation:
    -- it waits no more (a closing "thanks!" is not left unanswered for ever), and a later
    -- answer is not counted as its answer.
    ADD COLUMN wait_closed_at      TIMESTAMPTZ,
    -- A customer's message that began its conversation or reopened a closed one: where
    -- first-response time starts.
    ADD COLUMN opens_conversation  BOOLEAN NOT NULL DEFAULT false;

-- Customer messages still waiting: what a new answer looks for. Small (answered
-- messages leave it).
CREATE INDEX communications_awaiting_answer ON communications (customer_id, created_at)
    WHERE answer_id IS NULL AND wait_closed_at IS NULL AND deleted_at IS NULL
      AND awaits_answer(type, direction, sender_role);

-- The analytics scan: every public message in a time range, read from the index alone
-- (all it needs is included), so a month of a busy business is one index range.
CREATE INDEX communications_analytics ON communications (created_at)
    INCLUDE (type, direction, sender_role, customer_id, deleted_at, read_at,
             answered_at, answered_by, wait_closed_at, opens_conversation)
    WHERE visibility = 'public';

-- Every change of a conversation's status, the beginning included (from_status NULL):
-- opened, closed, archived and reopened counts, and an audit of who did it.
CREATE TABLE conversation_transitions (
    id           BIGSERIAL PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    -- Staff who set it, or the sender of the message that opened or reopened it.
    by_user      TEXT,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX conversation_transitions_at ON conversation_transitions (at);

CREATE FUNCTION conversations_note_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_transitions (customer_id, from_status, to_status, by_user, at)
    VALUES (NEW.customer_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
            NEW.updated_by, CASE WHEN TG_OP = 'INSERT' THEN NEW.created_at ELSE now() END);
    IF TG_OP = 'UPDATE' AND NEW.status IN ('closed', 'archived') THEN
        UPDATE communications SET wait_closed_at = now()
        WHERE customer_id = NEW.customer_id AND answer_id IS NULL AND wait_closed_at IS NULL
          AND deleted_at IS NULL AND awaits_answer(type, direction, sender_role);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER conversations_note_transition_insert AFTER INSERT ON conversations
    FOR EACH ROW EXECUTE FUNCTION conversations_note_transition();
CREATE TRIGGER conversations_note_transition_update AFTER UPDATE OF status ON conversations
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION conversations_note_transition();

-- A new message: the conversation's latest (as before); a customer writing to a closed
-- or archived conversation reopens it; an answer answers every customer message still
-- waiting in the conversation.
CREATE OR REPLACE FUNCTION conversations_note_message() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    created BOOLEAN := false;
    was TEXT;
BEGIN
    IF NEW.visibility = 'internal' THEN
        RETURN NULL;
    END IF;
    -- The upsert comes first: it takes the conversation's row lock, so of two first
    -- messages at once exactly one creates (opens) it, and it tells the status before.
    INSERT INTO conversations (customer_id, updated_by, last_communication_id, last_message_at, created_at)
    VALUES (NEW.customer_id, NEW.sender_id, NEW.id, NEW.created_at, NEW.created_at)
    ON CONFLICT (customer_id) DO UPDATE
        SET last_communication_id = EXCLUDED.last_communication_id,
            last_message_at = EXCLUDED.last_message_at
        WHERE conversations.last_message_at IS NULL
           OR conversations.last_message_at <= EXCLUDED.last_message_at
    RETURNING xmax = 0, status INTO created, was;
    IF awaits_answer(NEW.type, NEW.direction, NEW.sender_role) THEN
        IF NOT FOUND THEN
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

-- An answer deleted answers nothing: what it answered waits for the next answer
-- written after it, or for none.
CREATE FUNCTION communications_unanswer_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communications waiting
    SET (answer_id, answered_at, answered_by) = (
        SELECT a.id, a.created_at, a.sender_id FROM communications a
        WHERE a.customer_id = waiting.customer_id AND a.created_at >= waiting.created_at
          AND is_answer(a.direction, a.sender_role, a.visibility, a.deleted_at)
        ORDER BY a.created_at, a.id LIMIT 1)
    WHERE waiting.customer_id = NEW.customer_id AND waiting.answer_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER communications_unanswer_deleted AFTER UPDATE OF deleted_at ON communications
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL AND NEW.direction = 'outbound')
    EXECUTE FUNCTION communications_unanswer_deleted();

-- What was there before: each conversation began when it was created; each customer
-- message is answered by the first answer after it; the first customer message of each
-- conversation opened it.
INSERT INTO conversation_transitions (customer_id, from_status, to_status, by_user, at)
SELECT customer_id, NULL, 'open', NULL, created_at FROM conversations;
INSERT INTO conversation_transitions (customer_id, from_status, to_status, by_user, at)
SELECT customer_id, 'open', status, updated_by, updated_at FROM conversations WHERE status <> 'open';
UPDATE communications waiting
SET (answer_id, answered_at, answered_by) = (a.id, a.created_at, a.sender_id)
FROM communications w
CROSS JOIN LATERAL (
    SELECT id, created_at, sender_id FROM communications a
    WHERE a.customer_id = w.customer_id AND a.created_at >= w.created_at
      AND is_answer(a.direction, a.sender_role, a.visibility, a.deleted_at)
    ORDER BY a.created_at, a.id LIMIT 1) a
WHERE waiting.id = w.id AND awaits_answer(w.type, w.direction, w.sender_role);
UPDATE communications SET opens_conversation = true
WHERE id IN (SELECT DISTINCT ON (customer_id) id FROM communications
             WHERE awaits_answer(type, direction, sender_role) AND visibility = 'public'
             ORDER BY customer_id, created_at, id);

-- The operators' live view: jobs run per minute and kind, added up by every worker
-- process every few seconds; and each queue's depth, sampled by the workers, the
-- deepest seen in each minute. Kept for a week (retention).
CREATE TABLE job_activity (
    minute     TIMESTAMPTZ NOT NULL,
    kind       TEXT NOT NULL,
    succeeded  BIGINT NOT NULL DEFAULT 0,
    retried    BIGINT NOT NULL DEFAULT 0,
    dead       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, kind)
);
CREATE TABLE queue_depths (
    minute    TIMESTAMPTZ NOT NULL,
    queue     TEXT NOT NULL,
    messages  BIGINT NOT NULL,
    PRIMARY KEY (minute, queue)
);
