-- Issue 4: RingCentral retries a webhook delivery it did not see answered in time, with
-- the same notification uuid. One row per notification taken in, written in the same
-- transaction as its `ringcentral.event` job: a repeat finds the row and enqueues nothing.
CREATE TABLE webhook_receipts (
    provider         TEXT NOT NULL CHECK (provider IN ('ringcentral')),
    -- The envelope's `uuid`.
    notification_id  TEXT NOT NULL,
    event            TEXT NOT NULL,
    -- The job that acts on it (no foreign key: finished jobs are pruned, receipts may outlive them).
    job_id           UUID NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, notification_id)
);