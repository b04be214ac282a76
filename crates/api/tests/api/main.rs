#![allow(clippy::unwrap_used, clippy::expect_used)]

//! End-to-end tests of `waybill-api` over real HTTP, Postgres and RabbitMQ. Each test gets its
//! own database (cloned from a migrated template) and its own broker name prefix, so the suite
//! runs in parallel and leaves nothing behind.

mod auth;
mod change_feed;
mod encryption;
mod events;
mod filters;
mod helpers;
mod http_edges;
mod invalid_events;
mod openapi;
mod process;
mod retention;
mod robustness;
mod secrets;
mod slow_clients;
mod test_send;
mod webhook_limit;
mod webhooks_create;
mod webhooks_list;
mod webhooks_update;
