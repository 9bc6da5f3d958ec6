-- What the analytics facts (migrations/…_analytics.sql) cost on the write path: 20,000
-- messages each inserted and committed alone, with the facts, then with the analytics
-- indexes and triggers dropped (the schema before that migration). On a scratch
-- database, migrated; it changes the schema, so never on one you keep. How to run it:
-- docs/performance.md (Analytics).
\timing on
CREATE OR REPLACE PROCEDURE load_messages(n int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role, message, status)
    VALUES (gen_random_uuid(), 'cust-' || (i % 2000), 'inapp',
            CASE WHEN i % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
            CASE WHEN i % 2 = 0 THEN 'user-' || (i % 2000) ELSE 'staff-1' END,
            CASE WHEN i % 2 = 0 THEN 'customer' ELSE 'staff' END, 'hello there, the crew is on its way', 'sent');
    COMMIT;
  END LOOP;
END $$;
TRUNCATE communications, conversations, conversation_transitions CASCADE;
CALL load_messages(3000);
TRUNCATE communications, conversations, conversation_transitions CASCADE;
\echo with analytics facts
CALL load_messages(20000);
-- the schema as it was before the analytics migration
DROP INDEX communications_analytics;
DROP INDEX communications_awaiting_answer;
DROP TRIGGER communications_unanswer_deleted ON communications;
DROP TRIGGER conversations_note_transition_insert ON conversations;
DROP TRIGGER conversations_note_transition_update ON conversations;
CREATE OR REPLACE FUNCTION conversations_note_message() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF NEW.visibility = 'internal' THEN
        RETURN NULL;
    END IF;
    INSERT INTO conversations (customer_id, last_communication_id, last_message_at)
    VALUES (NEW.customer_id, NEW.id, NEW.created_at)
    ON CONFLICT (customer_id) DO UPDATE
        SET last_communication_id = EXCLUDED.last_communication_id,
            last_message_at = EXCLUDED.last_message_at
        WHERE conversations.last_message_at IS NULL
           OR conversations.last_message_at <= EXCLUDED.last_message_at;
    RETURN NULL;
END
$f$;
TRUNCATE communications, conversations, conversation_transitions CASCADE;
CALL load_messages(3000);
TRUNCATE communications, conversations, conversation_transitions CASCADE;
\echo without
CALL load_messages(20000);
