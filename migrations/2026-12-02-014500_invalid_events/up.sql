-- Events the dispatcher refused (not an envelope, a broken envelope rule, an unknown type, data
-- that fails its type's schema), kept for an operator to read, re-drive or delete. The id is
-- derived from the message itself, so a message redelivered after a crash is one record.
CREATE TABLE invalid_events (
    id uuid PRIMARY KEY,
    -- The envelope's tenant when the body could be read that far.
    tenant text,
    routing_key text NOT NULL,
    message_id text,
    reason text NOT NULL,
    received_at timestamptz NOT NULL,
    -- The message body as it was published, or its first bytes when it was larger than any
    -- event ingest publishes (`body_truncated`; such a record cannot be re-driven).
    body bytea NOT NULL,
    body_truncated boolean NOT NULL,
    -- Size of the whole body as it was published.
    body_bytes integer NOT NULL
);

-- The operator's list (newest first) and retention (oldest first).
CREATE INDEX invalid_events_received_at ON invalid_events (received_at, id);
