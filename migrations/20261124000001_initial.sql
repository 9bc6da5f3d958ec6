-- The seed's four collections, the job ledger (which doubles as the outbox of jobs),
-- the attempts, the event outbox and idempotency keys.

CREATE TABLE conversations (
    customer_id  TEXT PRIMARY KEY,
    status       TEXT NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'closed', 'archived')),
    updated_by   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE communications (
    id              UUID PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    -- in_app, sms, email, call
    type            TEXT NOT NULL CHECK (type IN ('in_app', 'sms', 'email', 'call')),
    direction       TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    sender_id       TEXT NOT NULL,
    sender_role     TEXT NOT NULL,
    subject         TEXT,
    message         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'sent', 'delivered', 'read', 'failed')),
    failure_reason  TEXT,
    attachments     JSONB NOT NULL DEFAULT '[]',
    metadata        JSONB NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ,
    read_at         TIMESTAMPTZ
);
-- Newest-first listing, per customer and overall, with (created_at, id) as the cursor.
CREATE INDEX communications_customer_created ON communications (customer_id, created_at DESC, id DESC);
CREATE INDEX communications_created ON communications (created_at DESC, id DESC);

CREATE TABLE message_templates (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('in_app', 'sms', 'email')),
    subject     TEXT,
    body        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT message_templates_name_unique UNIQUE (name)
);

-- Files: every upload keeps its own record (name, uploader, conversation); the bytes
-- are stored once per content in `blobs`, shared by every record with that SHA-256.
-- A blob's references are the records pointing at it, counted when needed, never a
-- stored counter that could drift.
CREATE TABLE blobs (
    sha256          TEXT PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    storage_key     TEXT NOT NULL UNIQUE,
    size            BIGINT NOT NULL CHECK (size > 0),
    file_type       TEXT NOT NULL,
    -- Made once, by the first record with this content to be processed.
    thumbnail_key   TEXT,
    thumbnail_type  TEXT,
    width           INTEGER,
    height          INTEGER,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE file_attachments (
    id                UUID PRIMARY KEY,
    customer_id       TEXT NOT NULL,
    communication_id  UUID REFERENCES communications (id),
    uploaded_by       TEXT NOT NULL,
    -- For display only: the name the uploader gave, made safe.
    original_name     TEXT NOT NULL,
    -- Generated (timestamp + unique id + extension); what URLs name.
    stored_name       TEXT NOT NULL UNIQUE,
    file_size         BIGINT NOT NULL CHECK (file_size >= 0),
    file_type         TEXT NOT NULL,
    file_category     TEXT NOT NULL CHECK (file_category IN ('images', 'documents', 'videos', 'audio')),
    -- Where the upload was streamed to; cleared once the bytes live in their blob.
    staging_key       TEXT,
    sha256            TEXT REFERENCES blobs (sha256),
    status            TEXT NOT NULL DEFAULT 'processing'
                      CHECK (status IN ('processing', 'ready', 'failed')),
    failure_reason    TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX file_attachments_customer ON file_attachments (customer_id);
CREATE INDEX file_attachments_sha256 ON file_attachments (sha256);

-- The job ledger: the truth about every job. A row in state 'pending' is the outbox:
-- written in the request's transaction, published by the relay, then 'queued'.
CREATE TABLE jobs (
    id                UUID PRIMARY KEY,
    kind              TEXT NOT NULL,
    payload           JSONB NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'queued', 'running', 'retrying', 'succeeded', 'dead', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    next_attempt_at   TIMESTAMPTZ,
    last_error        TEXT,
    -- transient, permanent, exhausted, unparseable, delivery_limit, rejected, expired, unroutable
    last_error_class  TEXT,
    communication_id  UUID,
    customer_id       TEXT,
    -- What the broker said when it dead-lettered the job on its own (x-death), if it did.
    broker_death      JSONB,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    queued_at         TIMESTAMPTZ,
    first_failed_at   TIMESTAMPTZ,
    last_failed_at    TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ
);
-- The relay's scan: only pending rows, oldest first.
CREATE INDEX jobs_pending ON jobs (created_at) WHERE state = 'pending';
CREATE INDEX jobs_state_kind ON jobs (state, kind, created_at DESC);
CREATE INDEX jobs_communication ON jobs (communication_id) WHERE communication_id IS NOT NULL;

-- One row per try of a job, with its outcome.
CREATE TABLE job_attempts (
    job_id        UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    outcome       TEXT NOT NULL CHECK (outcome IN ('succeeded', 'transient', 'permanent')),
    error_class   TEXT,
    error         TEXT,
    -- The delay the retry policy chose, for a transient failure.
    retry_in_ms   BIGINT,
    worker        TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

-- Events for the notifier, written in the same transaction as the effect they announce,
-- relayed to the events exchange and then deleted.
CREATE TABLE event_outbox (
    id          BIGSERIAL PRIMARY KEY,
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A retried POST with the same key returns the first answer and creates nothing new.
CREATE TABLE idempotency_keys (
    user_id          TEXT NOT NULL,
    key              TEXT NOT NULL,
    -- SHA-256 of method, path and body: the same key with another request is refused.
    request_hash     TEXT NOT NULL,
    response_status  SMALLINT NOT NULL,
    response_body    JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
