-- Deliveries per second a receiver accepts; NULL: no limit.
ALTER TABLE webhooks ADD COLUMN rate_limit integer
    CHECK (rate_limit BETWEEN 1 AND 10000);

-- The rate limiter shared by every dispatcher replica: the next free slot of each rate-limited
-- subscription. Losing it in a crash only resets the limiter, so it skips the WAL.
CREATE UNLOGGED TABLE endpoint_throttle (
    webhook_id uuid PRIMARY KEY,
    next_slot timestamptz NOT NULL
);

-- Subscriptions whose receiver is failing: the circuit breaker and the failing streak that
-- leads to auto-disable. No row: healthy.
CREATE TABLE endpoint_health (
    webhook_id uuid PRIMARY KEY,
    failures integer NOT NULL,
    failing_since timestamptz NOT NULL,
    -- The circuit is open (no requests) until then; NULL: closed.
    open_until timestamptz,
    cooldown_ms integer NOT NULL,
    updated_at timestamptz NOT NULL
);
