//! Waybill's RabbitMQ layer: exchange and queue names, one connection per process that comes
//! back by itself, and publishing that waits for the broker's confirm.

pub mod connect;
pub mod consumer;
pub mod publisher;
pub mod topology;

pub use connect::{broker_urls, connect};
pub use consumer::{
    Consumer, ConsumerSpec, Handler, Head, Outcome, Returner, TRACEPARENT_HEADER, oldest_age,
    queued_at, reconnect_backoff, traceparent,
};
pub use publisher::{Broker, BusError, Outgoing, QUEUED_AT_HEADER};
pub use topology::Topology;
