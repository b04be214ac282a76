//! What Waybill's test suites share: a stack of services on a per-test database and broker
//! prefix, a scriptable webhook receiver, a TCP proxy (to the broker or the database) that can
//! be cut, hand-written slow requests, and the waits and look-ups the suites make. Test-only: no
//! service depends on it, and it depends on no service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

pub mod amqp;
pub mod db;
pub mod examples;
pub mod openapi;
pub mod otlp;
pub mod private;
pub mod proxy;
pub mod receiver;
pub mod response;
pub mod service;
pub mod slow_client;
pub mod stack;

pub use amqp::queue_depth;
pub use db::{DbGuard, TopologyGuard, admin_url, cleanup, create_database, db_url};
pub use examples::{example, example_data};
pub use otlp::{Collector, ExportedSpan};
pub use private::{PrivatePostgres, PrivateRabbit, RabbitCluster};
pub use proxy::{BrokerProxy, Proxy};
pub use receiver::{Received, Receiver, Reply};
pub use response::Response;
pub use service::ServiceProcess;
pub use stack::{Build, READ_WRITE, Stack, StackBuilder};
/// The broker the tests use (`WAYBILL_TEST_BROKER_URL`, default the local RabbitMQ).
pub fn broker_url() -> String {
    std::env::var("WAYBILL_TEST_BROKER_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `host:port` of [`broker_url`], where the proxy forwards to.
pub fn broker_addr() -> String {
    let url = broker_url();
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let host_port = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, hp)| hp);
    host_port
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5672")
        .to_owned()
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
