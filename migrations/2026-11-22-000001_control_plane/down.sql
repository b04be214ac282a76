DROP TABLE subscription_changes;
DROP TABLE webhook_secrets;
DROP TABLE webhooks;
DROP TABLE event_types;
