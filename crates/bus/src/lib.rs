//! Waybill's RabbitMQ layer: exchange and queue names, one connection per process that comes
//! back by itself, and publishing that waits for the broker's confirm.

pub mod connect;
pub mod consumer;
pub mod publisher;
pub mod topology;

pub use connect::{broker_urls, connect};
pub use consumer::{Consumer, ConsumerSpec, Handler, Outcome, reconnect_backoff};
pub use publisher::{Broker, BusError, Outgoing};
pub use topology::Topology;
