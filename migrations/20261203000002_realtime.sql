-- Issue 10: presence across api instances, and the event log WebSocket clients recover
-- missed events from.

-- Each api instance says it is alive every PRESENCE_HEARTBEAT_SECS; one silent for
-- PRESENCE_TTL_SECS is dead, and whichever instance sweeps first takes its users
-- offline (with `presence` events) and deletes its rows.
CREATE TABLE presence_instances (
    instance_id   UUID PRIMARY KEY,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A user's open WebSockets on one instance. Online = a row on a live instance.
CREATE TABLE presence (
    instance_id  UUID NOT NULL REFERENCES presence_instances (instance_id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    role         TEXT NOT NULL,
    connections  INTEGER NOT NULL CHECK (connections > 0),
    since        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, user_id)
);
CREATE INDEX presence_user ON presence (user_id);

-- Every event relayed to WebSocket clients, by its position `seq`. Positions are taken
-- by the relay under one transaction-scoped advisory lock, so they are in commit order:
-- a reader that has every event up to N never finds one below N committed later.
-- `customer_id` is the conversation (NULL for presence, which is not one's).
CREATE SEQUENCE event_log_seq;
CREATE TABLE event_log (
    seq          BIGINT PRIMARY KEY,
    customer_id  TEXT,
    payload      JSONB NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX event_log_customer ON event_log (customer_id, seq);
CREATE INDEX event_log_at ON event_log (at);
