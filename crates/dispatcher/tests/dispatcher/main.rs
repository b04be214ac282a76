//! End-to-end tests of `waybill-dispatcher` through the real api, Postgres, RabbitMQ and an HTTP
//! receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
mod delivery;
mod endpoints;
mod fairness;
mod fanout;
mod fast_path;
mod filters;
mod helpers;
mod invalid_events;
mod log;
mod metrics;
mod operations;
mod outage;
mod replay;
mod retries;
mod safety;
mod test_send;
mod traces;
