//! Names and declarations of Waybill's exchanges and queues. Every name starts with a
//! configurable prefix (`waybill` by default), so several installations or test runs can share
//! one broker without seeing each other.

use lapin::{Channel, ExchangeKind, options::ExchangeDeclareOptions, types::FieldTable};

/// The broker objects of one installation.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Fanout exchange of the subscription change feed.
    pub fn subscriptions_exchange(&self) -> String {
        format!("{}.subscriptions", self.prefix)
    }

    /// Declares the exchanges this crate knows (idempotent: same arguments every time).
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        channel
            .exchange_declare(
                self.subscriptions_exchange().as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
    }
}
