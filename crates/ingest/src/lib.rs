//! `waybill-ingest`: the HTTP front door for upstream services that do not speak AMQP. An event
//! is checked against its type's schema and answered 202 only once the broker confirmed it.
//! The publishing code itself is `waybill-publisher`, for Rust services to embed.

pub mod events;
pub mod openapi;
pub mod routes;
pub mod startup;

pub use startup::Application;
