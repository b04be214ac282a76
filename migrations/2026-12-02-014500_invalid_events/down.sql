DROP TABLE invalid_events;
