-- The event catalog. Rows are upserted from proto-schemas/ at start; `active` and an operator's
-- description survive that upsert.
CREATE TABLE event_types (
    name text PRIMARY KEY,
    group_name text NOT NULL,
    action text NOT NULL,
    description text NOT NULL,
    description_overridden boolean NOT NULL DEFAULT false,
    schema jsonb NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_types_group_idx ON event_types (group_name, name);

-- Webhook subscriptions. `auth_credential` (password or token) is AES-256-GCM ciphertext.
CREATE TABLE webhooks (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    url text NOT NULL,
    method text NOT NULL CHECK (method IN ('POST', 'PUT')),
    events text[] NOT NULL,
    -- The sorted, space-joined events: the order-insensitive identity used for duplicates.
    events_key text NOT NULL,
    client_ids text[] NOT NULL DEFAULT '{}',
    headers jsonb NOT NULL DEFAULT '{}',
    auth_type text NOT NULL DEFAULT 'none' CHECK (auth_type IN ('none', 'basic', 'token')),
    auth_username text,
    auth_header text,
    auth_credential bytea,
    active boolean NOT NULL DEFAULT true,
    disabled_reason text,
    revision bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
-- Hashes keep the key small: urls and event lists can exceed a btree entry.
CREATE UNIQUE INDEX webhooks_identity_key
    ON webhooks (tenant, method, md5(url), md5(events_key));
CREATE INDEX webhooks_tenant_created_idx ON webhooks (tenant, created_at, id);
CREATE INDEX webhooks_tenant_updated_idx ON webhooks (tenant, updated_at, id);
CREATE INDEX webhooks_tenant_name_idx ON webhooks (tenant, name, id);
CREATE INDEX webhooks_events_idx ON webhooks USING gin (events);

-- Signing secrets, AES-256-GCM ciphertext. The current one has no expiry; rotated-out ones
-- keep signing until `expires_at`.
CREATE TABLE webhook_secrets (
    id bigserial PRIMARY KEY,
    webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    secret bytea NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz
);
CREATE INDEX webhook_secrets_webhook_idx ON webhook_secrets (webhook_id);
CREATE UNIQUE INDEX webhook_secrets_current_key ON webhook_secrets (webhook_id) WHERE expires_at IS NULL;

-- Transactional outbox of the subscription change feed: written in the same transaction as the
-- change, published to the broker (with confirms) by a relay, so no change is lost while the
-- broker is away.
CREATE TABLE subscription_changes (
    seq bigserial PRIMARY KEY,
    webhook_id uuid NOT NULL,
    tenant text NOT NULL,
    revision bigint NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX subscription_changes_pending_idx ON subscription_changes (seq) WHERE published_at IS NULL;
CREATE INDEX subscription_changes_published_idx ON subscription_changes (published_at) WHERE published_at IS NOT NULL;
