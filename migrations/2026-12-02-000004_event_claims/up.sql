-- A replica claims an event before it publishes the event's deliveries, in the statement that
-- records it: two copies of one event taken at once by two replicas (a publisher retrying after
-- a lost 202) are then fanned out once. The owner renews `claimed_until` while its fan-out
-- runs; a claim left by a replica that died expires, and a copy arriving after that takes the
-- event over as an unfinished fan-out. `claims` counts the fan-outs begun: more than one means
-- delivery messages may be out already. Rows from before this migration count as claimed once.
ALTER TABLE events
    ADD COLUMN claimed_by text,
    ADD COLUMN claimed_until timestamptz,
    ADD COLUMN claims integer NOT NULL DEFAULT 1;
