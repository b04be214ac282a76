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
//! <p>.dispatch.limbo    dead letters of <p>.dispatch (rejected, or over a delivery limit)
//! <p>.deliveries.limbo  the same for <p>.deliveries
//! <p>.<work>.limbo ──TTL──▶ <p>.<work>.return ──republished──▶ <p>.<work>
//! ```
//!
//! Nothing taken from a work queue is ever dropped by the broker: a message its consumer
//! rejects, or one a quorum queue's delivery limit removes, is dead-lettered to the work queue's
//! limbo queue, waits there for the limbo TTL, is dead-lettered on to the return queue, and a
//! consumer of the return queue publishes it to the work queue again (a new message, without the
//! broker's `x-death` history). The limbo queue cannot dead-letter straight back: RabbitMQ drops
//! a message dead-lettered around a cycle of queues that it judges automatic, and its judgement
//! (from the `x-death` history) drops messages that went over a delivery limit, in practice.

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

/// How long a dead-lettered work message waits in limbo before it goes back to its queue.
pub const LIMBO_TTL: Duration = Duration::from_secs(30);

/// How many messages the dead and invalid queues keep by default (the oldest go first).
pub const PARKED_MAX_LENGTH: u32 = 100_000;

/// The delivery limit of a quorum return queue: a message handed back this often has met a
/// broker that refused its publish for years.
const RETURN_DELIVERY_LIMIT: i64 = 1_000_000;

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
    limbo_ttl: Duration,
    parked_max_length: u32,
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
            limbo_ttl: LIMBO_TTL,
            parked_max_length: PARKED_MAX_LENGTH,
        }
    }

    /// How long dead-lettered work messages wait before they go back ([`LIMBO_TTL`] unless set).
    #[must_use]
    pub fn with_limbo_ttl(mut self, ttl: Duration) -> Self {
        self.limbo_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The most messages the dead and invalid queues keep ([`PARKED_MAX_LENGTH`] unless set).
    #[must_use]
    pub fn with_parked_max_length(mut self, n: u32) -> Self {
        self.parked_max_length = n.max(1);
        self
    }

    pub fn limbo_ttl(&self) -> Duration {
        self.limbo_ttl
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

    /// Where messages dead-lettered from `work` (a work queue's name) wait.
    pub fn limbo_queue(work: &str) -> String {
        format!("{work}.limbo")
    }

    /// Where messages that waited in `work`'s limbo queue wait for a consumer to send them back.
    pub fn return_queue(work: &str) -> String {
        format!("{work}.return")
    }

    /// The work queues: each has a limbo and a return queue.
    pub fn work_queues(&self) -> [String; 2] {
        [self.dispatch_queue(), self.deliveries_queue()]
    }

    /// Every queue [`Topology::declare`] makes, with what it holds: `work`, `limbo`, `return`,
    /// `retry`, `hold`, `dead` or `invalid`.
    pub fn queues(&self) -> Vec<(String, &'static str)> {
        let mut all = Vec::new();
        for work in self.work_queues() {
            all.push((Self::limbo_queue(&work), "limbo"));
            all.push((Self::return_queue(&work), "return"));
            all.push((work, "work"));
        }
        all.push((self.dead_queue(), "dead"));
        all.push((self.invalid_queue(), "invalid"));
        all.extend(
            self.retry_delays
                .iter()
                .map(|d| (self.retry_queue(*d), "retry")),
        );
        all.extend(HOLD_DELAYS.iter().map(|d| (self.hold_queue(*d), "hold")));
        all
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

    /// The delay of a retry or hold queue of this topology, by its name.
    pub fn delay_of(&self, queue: &str) -> Option<Duration> {
        self.retry_delays
            .iter()
            .copied()
            .find(|d| self.retry_queue(*d) == queue)
            .or_else(|| {
                HOLD_DELAYS
                    .iter()
                    .copied()
                    .find(|d| self.hold_queue(*d) == queue)
            })
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

    /// Arguments of a queue that dead-letters to `exchange` with `key`, after `ttl` if given.
    fn dead_lettering(&self, exchange: &str, key: &str, ttl: Option<Duration>) -> FieldTable {
        let mut args = self.queue_args();
        if let Some(ttl) = ttl {
            args.insert(
                ShortString::from("x-message-ttl"),
                AMQPValue::LongLongInt(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            );
        }
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from(exchange)),
        );
        args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(key)),
        );
        if self.queue_type == QueueType::Quorum {
            // Quorum queues dead-letter at most once unless told otherwise; a message must not
            // be lost in a failover between one queue and the next. The strategy needs
            // `reject-publish`, which only matters once a queue has a length limit.
            args.insert(
                ShortString::from("x-dead-letter-strategy"),
                AMQPValue::LongString(LongString::from("at-least-once")),
            );
            args.insert(
                ShortString::from("x-overflow"),
                AMQPValue::LongString(LongString::from("reject-publish")),
            );
        }
        args
    }

    /// Arguments of the dead and invalid queues: a length limit, the oldest dropped first.
    fn parked_args(&self) -> FieldTable {
        let mut args = self.queue_args();
        args.insert(
            ShortString::from("x-max-length"),
            AMQPValue::LongLongInt(i64::from(self.parked_max_length)),
        );
        args
    }

    /// Arguments of a return queue. It has nowhere to dead-letter to (back into its work queue
    /// would be a dead-letter cycle, which RabbitMQ drops), so on quorum queues it carries a
    /// delivery limit of its own, far above any number of hand-backs, instead of RabbitMQ 4's
    /// default of 20. A policy with a lower `delivery-limit` must not match it.
    fn return_args(&self) -> FieldTable {
        let mut args = self.queue_args();
        if self.queue_type == QueueType::Quorum {
            args.insert(
                ShortString::from("x-delivery-limit"),
                AMQPValue::LongLongInt(RETURN_DELIVERY_LIMIT),
            );
        }
        args
    }

    /// Every queue with the arguments it is declared with.
    fn declarations(&self) -> Vec<(String, FieldTable)> {
        let mut queues = Vec::new();
        for work in self.work_queues() {
            let limbo = Self::limbo_queue(&work);
            let back = Self::return_queue(&work);
            queues.push((
                limbo.clone(),
                self.dead_lettering("", &back, Some(self.limbo_ttl)),
            ));
            queues.push((back, self.return_args()));
            queues.push((work, self.dead_lettering("", &limbo, None)));
        }
        queues.push((self.invalid_queue(), self.parked_args()));
        queues.push((self.dead_queue(), self.parked_args()));
        let delay_queues = self
            .retry_delays
            .iter()
            .map(|d| (self.retry_queue(*d), *d))
            .chain(HOLD_DELAYS.iter().map(|d| (self.hold_queue(*d), *d)));
        for (name, delay) in delay_queues {
            let args = self.dead_lettering(&self.deliveries_exchange(), DELIVERY_KEY, Some(delay));
            queues.push((name, args));
        }
        queues
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
        for (name, args) in self.declarations() {
            if let Err(e) = channel
                .queue_declare(name.as_str().into(), queue, args)
                .await
            {
                if is_precondition_failed(&e) {
                    tracing::error!(
                        queue = %name,
                        error = %e,
                        "the queue exists with other arguments (declared by an older version, or with another broker.queue_type); see the README, \"Upgrading the broker topology\": move its messages aside, delete it, and start again"
                    );
                }
                return Err(e);
            }
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
        Ok(())
    }

    /// Deletes every object [`Topology::declare`] makes (tests and decommissioning).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for (q, _) in self.queues() {
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

/// Whether the broker refused a declaration for its arguments (406 PRECONDITION_FAILED).
pub fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 406)
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
