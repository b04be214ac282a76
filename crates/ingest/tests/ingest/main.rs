//! End-to-end tests of `waybill-ingest` over real HTTP, Postgres and RabbitMQ, each test with its
//! own database and broker prefix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod amqp_example;
mod batch;
mod broker;
mod helpers;
mod openapi;
mod operations;
mod publish;
