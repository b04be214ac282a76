//! `waybill-api`: the control plane. Tenants discover event types and manage webhook
//! subscriptions; every subscription change reaches the dispatchers through the change feed.

pub mod envelope;
pub mod events;
pub mod openapi;
pub mod relay;
pub mod routes;
pub mod startup;
pub mod state;
pub mod webhooks;

pub use startup::Application;
