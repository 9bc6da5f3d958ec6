-- Issue 15: mail that comes into the Gmail mailbox.

-- Where incremental reading of the mailbox stands: its `historyId`.
CREATE TABLE gmail_sync (
    mailbox     TEXT PRIMARY KEY,
    history_id  BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every Gmail message the sync has seen, once: its `email.file` job is enqueued with
-- the insert, so a message Gmail lists again is not filed again.
CREATE TABLE gmail_seen (
    gmail_id  TEXT PRIMARY KEY,
    seen_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Mail that matched no customer, for staff to assign.
CREATE TABLE unmatched_emails (
    id              UUID PRIMARY KEY,
    gmail_id        TEXT NOT NULL UNIQUE,
    thread_id       TEXT NOT NULL,
    message_id      TEXT,
    sender          TEXT NOT NULL,
    subject         TEXT NOT NULL DEFAULT '',
    message         TEXT NOT NULL DEFAULT '',
    in_reply_to     TEXT,
    "references"    TEXT,
    received_at     TIMESTAMPTZ NOT NULL,
    assigned_to     TEXT,
    assigned_by     TEXT,
    communication_id UUID REFERENCES communications (id)
);
CREATE INDEX unmatched_emails_open ON unmatched_emails (received_at DESC) WHERE assigned_to IS NULL;

CREATE INDEX communications_email_thread ON communications (provider_thread_id)
    WHERE type = 'email' AND provider_thread_id IS NOT NULL;
CREATE INDEX communications_rfc822 ON communications (rfc822_message_id)
    WHERE rfc822_message_id IS NOT NULL;
