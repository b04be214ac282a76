//! Real outages under load, each on servers of the test's own (the shared PostgreSQL and
//! RabbitMQ the rest of the suite uses are never touched): every event the ingest answered 202
//! reaches the receiver, duplicates only around the fault, nothing left pending. Each test
//! prints a line `accepted=N delivered=N duplicates=N` and appends it to
//! `target/outage-report.txt`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// libtest starts tests in name order, two at a time on two cores: the longest (a minute of
// PostgreSQL down) first, so the three end soonest.
mod load;
mod postgres;
mod rabbit_cluster;
mod rabbit_restart;
