//! `waybill-dispatcher`: consumes events, fans each out to the matching subscriptions, signs and
//! sends the HTTP callbacks, retries failures on the broker's delay queues and records every
//! delivery and attempt. Stateless apart from its subscription index; run as many replicas as
//! the load needs.

pub mod batch;
pub mod budget;
pub mod deliver;
pub mod fairness;
pub mod fanout;
pub mod health;
pub mod index;
pub mod metrics;
pub mod openapi;
pub mod recorder;
pub mod startup;
pub mod sync;

pub use startup::Application;
