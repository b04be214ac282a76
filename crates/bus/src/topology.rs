//! Names and declarations of Waybill's exchanges and queues. Every name starts with a
//! configurable prefix (`waybill` by default), so several installations or test runs can share
//! one broker without seeing each other.
//!
//! ```text
//! <p>.events (topic) ──#──▶ <p>.dispatch                      events to fan out
//!                           <p>.events.invalid                malformed or unknown messages
//! <p>.deliveries (direct) ──delivery──▶ <p>.deliveries         one message per delivery
//! <p>.retry.<delay>  TTL = delay, dead-letters to <p>.deliveries/delivery
//! <p>.hold.<delay>   the same, fixed short delays: deliveries waiting for a rate-limit slot
//! <p>.deliveries.dead                                          attempts used up
//! <p>.subscriptions (fanout)                                   subscription change feed
//! ```

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

/// Routing key of every message on the deliveries exchange.
pub const DELIVERY_KEY: &str = "delivery";

/// The delays of the hold queues, where a delivery waits without holding a consumer: for its
/// rate-limit slot (hopping through the longest one that fits until the slot is near), or for
/// an open circuit.
pub const HOLD_DELAYS: [Duration; 6] = [
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(3600),
];

/// Classic queues on one node, quorum queues in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    pub fn parse(raw: &str) -> Option<QueueType> {
        match raw {
            "classic" => Some(QueueType::Classic),
            "quorum" => Some(QueueType::Quorum),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// The broker objects of one installation.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    retry_delays: Vec<Duration>,
}

/// A delay as it appears in a retry queue's name: `250ms`, `30s`, `5m`, `1h`.
pub fn delay_label(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0ms".into(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

impl Topology {
    /// `retry_delays` are the delay tiers; duplicates are declared once.
    pub fn new(
        prefix: impl Into<String>,
        queue_type: QueueType,
        retry_delays: &[Duration],
    ) -> Self {
        let mut delays = retry_delays.to_vec();
        delays.sort();
        delays.dedup();
        Self {
            prefix: prefix.into(),
            queue_type,
            retry_delays: delays,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Topic exchange upstream services publish events to, routing key = event type.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Queue the dispatchers fan events out from.
    pub fn dispatch_queue(&self) -> String {
        format!("{}.dispatch", self.prefix)
    }

    /// Where malformed or unknown messages are parked, with the reason in a header.
    pub fn invalid_queue(&self) -> String {
        format!("{}.events.invalid", self.prefix)
    }

    /// Exchange of delivery messages (routing key [`DELIVERY_KEY`]).
    pub fn deliveries_exchange(&self) -> String {
        format!("{}.deliveries", self.prefix)
    }

    /// Queue the dispatchers deliver from.
    pub fn deliveries_queue(&self) -> String {
        format!("{}.deliveries", self.prefix)
    }

    /// Where deliveries whose attempts are used up are parked.
    pub fn dead_queue(&self) -> String {
        format!("{}.deliveries.dead", self.prefix)
    }

    /// Fanout exchange of the subscription change feed.
    pub fn subscriptions_exchange(&self) -> String {
        format!("{}.subscriptions", self.prefix)
    }

    /// The retry queue holding messages for `delay` (one of the configured tiers).
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.prefix, delay_label(delay))
    }

    /// The configured tiers, shortest first.
    pub fn retry_delays(&self) -> &[Duration] {
        &self.retry_delays
    }

    /// The shortest tier at least `wanted` long, or the longest tier.
    pub fn tier_for(&self, wanted: Duration) -> Option<Duration> {
        self.retry_delays
            .iter()
            .copied()
            .find(|d| *d >= wanted)
            .or_else(|| self.retry_delays.last().copied())
    }

    /// The hold queue holding messages for `delay` (one of [`HOLD_DELAYS`]).
    pub fn hold_queue(&self, delay: Duration) -> String {
        format!("{}.hold.{}", self.prefix, delay_label(delay))
    }

    /// The longest hold delay not past `wait`; `None` when `wait` is shorter than every one.
    pub fn hold_for(wait: Duration) -> Option<Duration> {
        HOLD_DELAYS.iter().rev().copied().find(|d| *d <= wait)
    }

    /// The shortest hold delay at least `wait` long, or the longest one.
    pub fn hold_at_least(wait: Duration) -> Duration {
        HOLD_DELAYS
            .iter()
            .copied()
            .find(|d| *d >= wait)
            .unwrap_or(HOLD_DELAYS[HOLD_DELAYS.len() - 1])
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from(self.queue_type.as_str())),
        );
        args
    }

    /// Declares every exchange, queue and binding. Idempotent: the same settings declare the
    /// same objects; a changed tier list adds queues (the delay is in the name, since a queue's
    /// arguments cannot change once declared).
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (self.events_exchange(), ExchangeKind::Topic),
            (self.deliveries_exchange(), ExchangeKind::Direct),
            (self.subscriptions_exchange(), ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await?;
        }
        for name in [
            self.dispatch_queue(),
            self.invalid_queue(),
            self.deliveries_queue(),
            self.dead_queue(),
        ] {
            channel
                .queue_declare(name.as_str().into(), queue, self.queue_args())
                .await?;
        }
        let bind = |q: String, x: String, key: &'static str| async move {
            channel
                .queue_bind(
                    q.as_str().into(),
                    x.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        bind(self.dispatch_queue(), self.events_exchange(), "#").await?;
        bind(
            self.deliveries_queue(),
            self.deliveries_exchange(),
            DELIVERY_KEY,
        )
        .await?;
        let delay_queues = self
            .retry_delays
            .iter()
            .map(|d| (self.retry_queue(*d), *d))
            .chain(HOLD_DELAYS.iter().map(|d| (self.hold_queue(*d), *d)));
        for (name, delay) in delay_queues {
            let mut args = self.queue_args();
            args.insert(
                ShortString::from("x-message-ttl"),
                AMQPValue::LongLongInt(delay.as_millis() as i64),
            );
            args.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(LongString::from(self.deliveries_exchange().as_str())),
            );
            args.insert(
                ShortString::from("x-dead-letter-routing-key"),
                AMQPValue::LongString(LongString::from(DELIVERY_KEY)),
            );
            if self.queue_type == QueueType::Quorum {
                // Quorum queues dead-letter at most once unless told otherwise; a retry must
                // not be lost in a failover between the delay queue and the deliveries queue.
                args.insert(
                    ShortString::from("x-dead-letter-strategy"),
                    AMQPValue::LongString(LongString::from("at-least-once")),
                );
                args.insert(
                    ShortString::from("x-overflow"),
                    AMQPValue::LongString(LongString::from("reject-publish")),
                );
            }
            channel
                .queue_declare(name.as_str().into(), queue, args)
                .await?;
        }
        Ok(())
    }

    /// Deletes every object [`Topology::declare`] makes (tests and decommissioning).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let mut queues = vec![
            self.dispatch_queue(),
            self.invalid_queue(),
            self.deliveries_queue(),
            self.dead_queue(),
        ];
        queues.extend(self.retry_delays.iter().map(|d| self.retry_queue(*d)));
        queues.extend(HOLD_DELAYS.iter().map(|d| self.hold_queue(*d)));
        for q in queues {
            channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for x in [
            self.events_exchange(),
            self.deliveries_exchange(),
            self.subscriptions_exchange(),
        ] {
            channel
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tiers() {
        let t = Topology::new(
            "wb",
            QueueType::Classic,
            &[
                Duration::from_secs(300),
                Duration::from_secs(3600),
                Duration::from_millis(250),
                Duration::from_secs(300),
            ],
        );
        assert_eq!(t.retry_delays().len(), 3, "deduplicated");
        assert_eq!(t.retry_queue(Duration::from_secs(300)), "wb.retry.5m");
        assert_eq!(t.retry_queue(Duration::from_secs(3600)), "wb.retry.1h");
        assert_eq!(t.retry_queue(Duration::from_millis(250)), "wb.retry.250ms");
        assert_eq!(t.retry_queue(Duration::from_secs(90)), "wb.retry.90s");
        assert_eq!(
            t.tier_for(Duration::from_secs(1)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            t.tier_for(Duration::from_secs(301)),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            t.tier_for(Duration::from_secs(86_400)),
            Some(Duration::from_secs(3600)),
            "capped at the longest"
        );
        assert_eq!(
            Topology::new("x", QueueType::Quorum, &[]).tier_for(Duration::ZERO),
            None
        );
    }

    #[test]
    fn hold_hops_never_overshoot() {
        let t = Topology::new("wb", QueueType::Classic, &[]);
        assert_eq!(t.hold_queue(Duration::from_millis(100)), "wb.hold.100ms");
        assert_eq!(Topology::hold_for(Duration::from_millis(99)), None);
        assert_eq!(
            Topology::hold_for(Duration::from_millis(999)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            Topology::hold_for(Duration::from_secs(59)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            Topology::hold_for(Duration::from_secs(86_400)),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            Topology::hold_at_least(Duration::from_secs(20)),
            Duration::from_secs(60)
        );
        assert_eq!(
            Topology::hold_at_least(Duration::ZERO),
            Duration::from_millis(100)
        );
        assert_eq!(
            Topology::hold_at_least(Duration::from_secs(86_400)),
            Duration::from_secs(3600)
        );
    }
}
