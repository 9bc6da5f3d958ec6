-- Issue 14: field crews, projects at customers' sites, dispatches and crews' positions.

-- A crew: a name and its members. Deleting a crew keeps the row (dispatches and
-- messages name it) and frees its members.
CREATE TABLE crews (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ
);

-- A user is in at most one crew at a time: the primary key is the user.
CREATE TABLE crew_members (
    user_id   TEXT PRIMARY KEY,
    crew_id   UUID NOT NULL REFERENCES crews (id),
    name      TEXT NOT NULL,
    phone     TEXT NOT NULL,
    added_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX crew_members_crew ON crew_members (crew_id);

-- A job at a customer's site. Status moves forward only:
-- scheduled → dispatched → on_site → done, or to cancelled from any but done.
CREATE TABLE projects (
    id               UUID PRIMARY KEY,
    customer_id      TEXT NOT NULL,
    title            TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    address          TEXT NOT NULL CHECK (length(address) BETWEEN 1 AND 500),
    lat              DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lng              DOUBLE PRECISION NOT NULL CHECK (lng BETWEEN -180 AND 180),
    scheduled_start  TIMESTAMPTZ,
    scheduled_end    TIMESTAMPTZ,
    crew_id          UUID REFERENCES crews (id),
    status           TEXT NOT NULL DEFAULT 'scheduled'
                     CHECK (status IN ('scheduled', 'dispatched', 'on_site', 'done', 'cancelled')),
    created_by       TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (scheduled_end IS NULL OR scheduled_start IS NULL OR scheduled_end >= scheduled_start)
);
CREATE INDEX projects_customer ON projects (customer_id, created_at DESC);
CREATE INDEX projects_crew ON projects (crew_id, created_at DESC) WHERE crew_id IS NOT NULL;

-- A crew sent to a project. `arrived_at` is set once, when the crew's position first
-- comes within ARRIVAL_RADIUS_M of the site; `ack_checked_at` once, when the sweep
-- that texts members who have not acknowledged has taken it.
CREATE TABLE dispatches (
    id               UUID PRIMARY KEY,
    project_id       UUID NOT NULL REFERENCES projects (id),
    crew_id          UUID NOT NULL REFERENCES crews (id),
    note             TEXT NOT NULL DEFAULT '',
    eta              TIMESTAMPTZ,
    notify_customer  BOOLEAN NOT NULL DEFAULT false,
    dispatched_by    TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    ack_checked_at   TIMESTAMPTZ,
    arrived_at       TIMESTAMPTZ
);
CREATE INDEX dispatches_project ON dispatches (project_id, created_at DESC);
CREATE INDEX dispatches_unchecked ON dispatches (created_at) WHERE ack_checked_at IS NULL;
CREATE INDEX dispatches_en_route ON dispatches (crew_id) WHERE arrived_at IS NULL;

-- Who acknowledged a dispatch, once each.
CREATE TABLE dispatch_acks (
    dispatch_id  UUID NOT NULL REFERENCES dispatches (id),
    user_id      TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dispatch_id, user_id)
);

-- Crews' reported positions, kept for LOCATION_RETENTION_HOURS.
CREATE TABLE crew_locations (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    crew_id      UUID NOT NULL REFERENCES crews (id),
    user_id      TEXT NOT NULL,
    lat          DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lng          DOUBLE PRECISION NOT NULL CHECK (lng BETWEEN -180 AND 180),
    accuracy_m   DOUBLE PRECISION CHECK (accuracy_m >= 0),
    at           TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX crew_locations_latest ON crew_locations (crew_id, at DESC, id DESC);
CREATE INDEX crew_locations_received ON crew_locations (received_at);

-- A message may belong to a project; an internal one is seen by staff and the
-- project's crew only, never by the customer.
ALTER TABLE communications
    ADD COLUMN project_id  UUID REFERENCES projects (id),
    ADD COLUMN visibility  TEXT NOT NULL DEFAULT 'public'
                           CHECK (visibility IN ('public', 'internal'));
CREATE INDEX communications_project ON communications (project_id, created_at DESC, id DESC)
    WHERE project_id IS NOT NULL;

-- An internal message is not the conversation's latest message (the customer's list
-- shows that one).
CREATE OR REPLACE FUNCTION conversations_note_message() RETURNS trigger LANGUAGE plpgsql AS $$
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
$$;
