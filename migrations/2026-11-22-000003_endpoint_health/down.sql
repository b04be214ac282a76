DROP TABLE endpoint_health;
DROP TABLE endpoint_throttle;
ALTER TABLE webhooks DROP COLUMN rate_limit;
