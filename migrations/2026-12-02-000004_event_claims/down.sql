ALTER TABLE events
    DROP COLUMN claimed_by,
    DROP COLUMN claimed_until,
    DROP COLUMN claims;
