-- Issue 5: the operators' tools. Replays and discards of jobs, one at a time or over a
-- filter (bulk actions, carried out in batches by `ops.bulk` jobs), and their audit.

-- A replay keeps the job's history: attempt numbers keep counting (every job_attempts
-- row stays), and the retry policy counts only the attempts since the last replay.
ALTER TABLE jobs
    -- `attempts` when the job was last replayed: attempts since then = attempts - attempt_base.
    ADD COLUMN attempt_base  INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every replay and carried by each message of the job (header
    -- `job-generation`): a copy published before the replay, still waiting in a delay
    -- tier, arrives with an older generation and is ignored.
    ADD COLUMN generation    INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN replayed_at   TIMESTAMPTZ;

-- The operators' listing: newest first with (created_at, id) as the cursor, by state
-- and error class, by customer.
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state_error_class ON jobs (state, last_error_class, created_at DESC);
CREATE INDEX jobs_customer ON jobs (customer_id, created_at DESC) WHERE customer_id IS NOT NULL;
-- Retention: finished jobs by when they finished (dead ones are kept).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'cancelled');
-- Retention of idempotency keys by age.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- A replay or discard over a filter, carried out in the background.
CREATE TABLE ops_actions (
    id           UUID PRIMARY KEY,
    action       TEXT NOT NULL CHECK (action IN ('replay', 'discard')),
    operator     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    -- The filter as given, relative ages resolved to times when the action was taken.
    filter       JSONB NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'done', 'failed')),
    -- Jobs eligible when the action was taken; only those are acted on (a job that
    -- changed after it is left alone, so two actions never act twice on one job).
    matched      BIGINT NOT NULL,
    done         BIGINT NOT NULL DEFAULT 0,
    -- Matched but no longer eligible when their batch came (acted on by someone else,
    -- finished meanwhile).
    skipped      BIGINT NOT NULL DEFAULT 0,
    -- Why the action failed, when its batch job died.
    last_error   TEXT,
    -- Keyset position: the batches walk the matching jobs by id.
    position     UUID,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ops_actions_created ON ops_actions (created_at DESC, id DESC);

-- Every operator action: who, when, on what (a job, or a filter with its count), why.
-- Kept when the jobs it names are pruned.
CREATE TABLE ops_audit (
    id              BIGSERIAL PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    operator        TEXT NOT NULL,
    -- replay, discard (one job), bulk_replay, bulk_discard (a filter)
    action          TEXT NOT NULL,
    job_id          UUID,
    action_id       UUID REFERENCES ops_actions (id),
    filter          JSONB,
    matched         BIGINT,
    reason          TEXT NOT NULL,
    -- The job as the action found it: its state and last error, cleared on the row by a
    -- replay and kept here.
    previous_state  TEXT,
    previous_error  TEXT,
    previous_error_class TEXT
);
CREATE INDEX ops_audit_at ON ops_audit (at DESC, id DESC);
CREATE INDEX ops_audit_job ON ops_audit (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX ops_audit_operator ON ops_audit (operator, at DESC);
