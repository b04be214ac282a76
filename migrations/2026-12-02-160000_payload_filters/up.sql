-- A subscription's payload filter, as the tenant sent it (the dispatcher evaluates it against
-- the body a receiver would get); NULL: every event its `events` and `client_ids` select.
ALTER TABLE webhooks ADD COLUMN filter jsonb
    CHECK (jsonb_typeof(filter) = 'object');
