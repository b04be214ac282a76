//! `waybill-api`: the control plane. Tenants discover event types and manage webhook
//! subscriptions and read their delivery log; every subscription change reaches the dispatchers through the change feed.

pub mod access;
pub mod admin;
pub mod deliveries;
pub mod envelope;
pub mod events;
pub mod filters;
pub mod openapi;
pub mod path_id;
pub mod relay;
pub mod retention;
pub mod routes;
pub mod startup;
pub mod state;
pub mod webhooks;

pub use startup::Application;
