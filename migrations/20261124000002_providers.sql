-- Issue 4: RingCentral (SMS, MMS, call logs, webhooks) and Gmail.

-- The other party of an SMS, email or call, and what the provider knows of it.
ALTER TABLE communications
    -- E.164 phone number (sms, call) or email address (email), normalised.
    ADD COLUMN remote_address       TEXT,
    -- Our own number or mailbox the message went from or came to.
    ADD COLUMN local_address        TEXT,
    -- RingCentral message-store id, call-log record id, or Gmail message id.
    ADD COLUMN provider_message_id  TEXT,
    -- The provider's own status word (Queued, Sent, Delivered, DeliveryFailed, SENT…).
    ADD COLUMN provider_status      TEXT,
    -- Gmail: the thread the message belongs to; RingCentral: conversationId.
    ADD COLUMN provider_thread_id   TEXT,
    -- Email: our deterministic Message-ID (<communication-id@domain>), and the ids it replies to.
    ADD COLUMN rfc822_message_id    TEXT,
    ADD COLUMN in_reply_to          TEXT,
    ADD COLUMN "references"         TEXT,
    -- Calls: seconds, and when the call started.
    ADD COLUMN duration_seconds     INTEGER CHECK (duration_seconds >= 0),
    ADD COLUMN occurred_at          TIMESTAMPTZ;
-- An inbound message or an imported call is recorded once, however often it is seen.
CREATE UNIQUE INDEX communications_provider_message
    ON communications (type, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX communications_remote_address
    ON communications (remote_address) WHERE remote_address IS NOT NULL;

-- Which customer a phone number or address belongs to: learned from sends, used to
-- put inbound SMS and imported calls into the right conversation.
CREATE TABLE customer_contacts (
    kind         TEXT NOT NULL CHECK (kind IN ('phone', 'email')),
    address      TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, address)
);
CREATE INDEX customer_contacts_customer ON customer_contacts (customer_id);

-- Never send twice. A row is committed *before* a provider call (state 'sending') and
-- updated after it, outside the job's transaction, so a worker that dies after the
-- provider accepted leaves the evidence behind. The next attempt finds 'accepted' and
-- does not send at all; finds 'unknown' (the call ended without an answer: a timeout,
-- a dropped connection) or a 'sending' older than a call can last (its worker died) and
-- reconciles with the provider (Gmail by Message-ID, RingCentral by its message store)
-- before sending again; finds a recent 'sending' and waits: another delivery of the job
-- is calling right now.
CREATE TABLE provider_sends (
    id                   UUID PRIMARY KEY,
    communication_id     UUID NOT NULL REFERENCES communications (id),
    job_id               UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt              INTEGER NOT NULL,
    provider             TEXT NOT NULL CHECK (provider IN ('ringcentral', 'gmail')),
    state                TEXT NOT NULL DEFAULT 'sending'
                         CHECK (state IN ('sending', 'unknown', 'accepted', 'rejected', 'not_sent')),
    provider_message_id  TEXT,
    provider_status      TEXT,
    -- Gmail's threadId, RingCentral's conversationId: kept for the communication.
    provider_thread_id   TEXT,
    http_status          SMALLINT,
    error                TEXT,
    started_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at          TIMESTAMPTZ
);
CREATE INDEX provider_sends_communication ON provider_sends (communication_id, started_at);
-- At most one send can be accepted for a communication, and at most one be under way:
-- two deliveries of the same job racing to call the provider, one wins the insert.
CREATE UNIQUE INDEX provider_sends_one_accepted
    ON provider_sends (communication_id) WHERE state = 'accepted';
CREATE UNIQUE INDEX provider_sends_one_under_way
    ON provider_sends (communication_id) WHERE state = 'sending';

-- What the provider said, on the attempt row operators read.
ALTER TABLE job_attempts
    ADD COLUMN provider_status  TEXT,
    ADD COLUMN provider_id      TEXT,
    ADD COLUMN http_status      SMALLINT;

-- Where an incremental import stopped (RingCentral call log).
CREATE TABLE provider_cursors (
    name        TEXT PRIMARY KEY,
    position    TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
