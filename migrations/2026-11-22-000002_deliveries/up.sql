-- Events as the dispatcher took them in: one row per (tenant, id), so an id published again is
-- not fanned out again. `fanned_out_at` is set once every delivery message of the event was
-- confirmed by the broker; an event without it is fanned out again when its message returns.
CREATE TABLE events (
    tenant text NOT NULL,
    id text NOT NULL,
    event_type text NOT NULL,
    client_id text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    fanned_out_at timestamptz,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX events_created_idx ON events (created_at);

-- One row per (event, subscription). No foreign keys: the delivery log outlives a deleted
-- subscription, and the hot path inserts without taking locks on other tables.
CREATE TABLE deliveries (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    webhook_id uuid NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error text,
    next_attempt_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
-- The delivery log reads a subscription's newest first; the count of a filter-less listing is an
-- index-only scan of it.
CREATE INDEX deliveries_webhook_created_idx ON deliveries (webhook_id, created_at DESC, id DESC);
CREATE INDEX deliveries_created_idx ON deliveries (created_at);

-- Every HTTP attempt of a delivery (or a refusal before any request, such as a blocked address).
CREATE TABLE delivery_attempts (
    delivery_id uuid NOT NULL,
    number integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    status_code integer,
    error text,
    response_body text,
    PRIMARY KEY (delivery_id, number)
);
CREATE INDEX delivery_attempts_started_idx ON delivery_attempts (started_at);
