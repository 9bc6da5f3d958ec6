-- Web Push (issue 29): the VAPID key every api and workers instance signs with, made
-- once when VAPID_PRIVATE_KEY is not set, and each person's browsers (one row per push
-- endpoint: a browser that subscribes again updates its row).
CREATE TABLE vapid_keys (
    only_one    BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_one),
    private_key TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE push_subscriptions (
    id          UUID PRIMARY KEY,
    user_id     TEXT NOT NULL,
    role        TEXT NOT NULL,
    customer_id TEXT,
    endpoint    TEXT NOT NULL UNIQUE,
    p256dh      TEXT NOT NULL,
    auth        TEXT NOT NULL,
    expires_at  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- A person's browsers, for their listing and for sending to them.
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id);
