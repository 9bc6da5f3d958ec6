-- Issue 9: the original API's values and fields, search, templates, conversations with
-- unread counts, edits and deletions.

-- The channel as the original named it on the wire: inapp, sms, email, phone.
ALTER TABLE communications DROP CONSTRAINT communications_type_check;
UPDATE communications SET type = 'inapp' WHERE type = 'in_app';
UPDATE communications SET type = 'phone' WHERE type = 'call';
ALTER TABLE communications ADD CONSTRAINT communications_type_check
    CHECK (type IN ('inapp', 'sms', 'email', 'phone'));

ALTER TABLE communications
    -- Who posted the read receipt (the original's `read_by`).
    ADD COLUMN read_by           TEXT,
    -- In-app messages edited or deleted by their sender (deleted: staff too); the text
    -- before each edit is in communication_edits.
    ADD COLUMN edited_at         TIMESTAMPTZ,
    ADD COLUMN deleted_at        TIMESTAMPTZ,
    ADD COLUMN deleted_by        TEXT,
    -- A message rendered from a template: which one, at which version.
    ADD COLUMN template_id       UUID,
    ADD COLUMN template_version  INTEGER;

-- Every earlier text of an edited or deleted message: moderation and disputes need it,
-- the conversation never shows it.
CREATE TABLE communication_edits (
    id                BIGSERIAL PRIMARY KEY,
    communication_id  UUID NOT NULL REFERENCES communications (id),
    action            TEXT NOT NULL CHECK (action IN ('edit', 'delete')),
    previous_message  TEXT NOT NULL,
    previous_attachments JSONB NOT NULL DEFAULT '[]',
    by_user           TEXT NOT NULL,
    by_role           TEXT NOT NULL,
    at                TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX communication_edits_communication ON communication_edits (communication_id, at);

-- Search: what a communication is found by, weighted: subject (A), text (B), the names
-- of its attached files (C: whole, and with `.` and `_` read as spaces, so both
-- `roof-estimate.pdf` and `roof-estimate` find `roof-estimate.pdf`) and the other
-- party's address (D). Texts are plain, not markup: `<` and `>` are read as spaces, or
-- the parser would skip what it takes for tags (and all of a <script>'s content). A
-- deleted message is found by nothing. IMMUTABLE (the two-argument to_tsvector is), so it can feed a generated
-- column.
CREATE FUNCTION communication_search_document(
    subject TEXT, message TEXT, attachments JSONB, remote_address TEXT, deleted_at TIMESTAMPTZ
) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN deleted_at IS NOT NULL THEN ''::tsvector ELSE
        setweight(to_tsvector('english'::regconfig, translate(coalesce(subject, ''), '<>', '  ')), 'A')
        || setweight(to_tsvector('english'::regconfig, translate(coalesce(message, ''), '<>', '  ')), 'B')
        || setweight(to_tsvector('english'::regconfig, coalesce(
               (SELECT string_agg((f ->> 'filename') || ' ' || regexp_replace(f ->> 'filename', '[._]', ' ', 'g'), ' ')
                FROM jsonb_array_elements(attachments) AS f), '')), 'C')
        || setweight(to_tsvector('english'::regconfig, coalesce(remote_address, '')), 'D')
    END
$$;

ALTER TABLE communications ADD COLUMN search_document tsvector
    GENERATED ALWAYS AS (
        communication_search_document(subject, message, attachments, remote_address, deleted_at)
    ) STORED;
CREATE INDEX communications_search ON communications USING GIN (search_document);

-- Unread, per conversation and side: staff count inbound not read, a customer outbound
-- not read. Small, since read messages leave it.
CREATE INDEX communications_unread ON communications (customer_id, direction)
    WHERE read_at IS NULL AND deleted_at IS NULL;

-- A conversation's latest message, kept by the trigger below whoever writes the
-- message (the api's sends, the workers' inbound SMS and imported calls), so the
-- conversation list is ordered by an index, not by scanning every message.
ALTER TABLE conversations
    ADD COLUMN last_communication_id  UUID,
    ADD COLUMN last_message_at        TIMESTAMPTZ;
UPDATE conversations c SET last_communication_id = l.id, last_message_at = l.created_at
FROM (SELECT DISTINCT ON (customer_id) customer_id, id, created_at FROM communications
      ORDER BY customer_id, created_at DESC, id DESC) l
WHERE l.customer_id = c.customer_id;
CREATE INDEX conversations_activity
    ON conversations ((coalesce(last_message_at, created_at)) DESC, customer_id DESC);
CREATE INDEX conversations_status_activity
    ON conversations (status, (coalesce(last_message_at, created_at)) DESC, customer_id DESC);

CREATE FUNCTION conversations_note_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversations (customer_id, last_communication_id, last_message_at)
    VALUES (NEW.customer_id, NEW.id, NEW.created_at)
    ON CONFLICT (customer_id) DO UPDATE
        SET last_communication_id = EXCLUDED.last_communication_id,
            last_message_at = EXCLUDED.last_message_at
        WHERE conversations.last_message_at IS NULL
           OR conversations.last_message_at <= EXCLUDED.last_message_at;
    RETURN NULL;
END
$$;
CREATE TRIGGER communications_note_message AFTER INSERT ON communications
    FOR EACH ROW EXECUTE FUNCTION conversations_note_message();

-- Templates, as the original had them (name, content, type, category, created_by,
-- created_at, active) plus an email subject, the placeholders found, and versions: an
-- edit makes a new version and a message records the version it was rendered from.
-- The issue-2 table was never written to; it is replaced.
DROP TABLE message_templates;
CREATE TABLE message_templates (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL CHECK (type IN ('inapp', 'sms', 'email')),
    category    TEXT,
    subject     TEXT,
    content     TEXT NOT NULL,
    variables   JSONB NOT NULL DEFAULT '[]',
    version     INTEGER NOT NULL DEFAULT 1,
    -- Deleting deactivates: messages sent from it still name it.
    active      BOOLEAN NOT NULL DEFAULT true,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by  TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One active template per name (case-insensitive); inactive ones keep theirs.
CREATE UNIQUE INDEX message_templates_active_name ON message_templates (lower(name)) WHERE active;
CREATE INDEX message_templates_listing ON message_templates (active, type, category, name);

-- Every version's text, so a message names exactly what it was rendered from.
CREATE TABLE message_template_versions (
    template_id  UUID NOT NULL REFERENCES message_templates (id),
    version      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    subject      TEXT,
    content      TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, version)
);
