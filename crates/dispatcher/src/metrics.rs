//! The dispatcher's own instruments, registered next to the HTTP ones on `/metrics`, and the
//! task that looks at the broker's queues for them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use lapin::{Channel, Connection, options::QueueDeclareOptions, types::FieldTable};
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::sync::watch;
use waybill_bus::{Head, Topology, oldest_age};

/// How often the queues' depths are read.
pub const QUEUE_WATCH_EVERY: Duration = Duration::from_secs(5);

/// Help text of the age gauge: what the estimate means.
const AGE_HELP: &str = "Estimated age of the oldest ready message in a work queue, in seconds: 0 when the queue is empty; otherwise the time since the later of (a) when the message this replica last took from the queue had reached it (stamped by the publisher; a message from a delay queue counts from the end of its delay) and (b) when this replica last saw the queue empty (or, knowing neither, since it first looked). An upper bound, close while messages are taken, growing while none is (consumers paused or absent); take the minimum over replicas.";

/// Counters and gauges of fan-out and delivery.
#[derive(Clone)]
pub struct DispatchMetrics {
    /// Events taken from the dispatch queue, by outcome.
    pub events: IntCounterVec,
    /// Delivery messages handled, by outcome: `succeeded`, `retrying`, `failed`, `cancelled`,
    /// `duplicate`, `deferred` (circuit open), `throttled` (over the rate limit), `held` (its
    /// tenant over its share of the replica).
    pub deliveries: IntCounterVec,
    /// Duration of each HTTP attempt, answer or not.
    pub attempt_seconds: Histogram,
    /// Requests to receivers in flight now.
    pub in_flight: IntGauge,
    /// Subscriptions in this replica's index.
    pub index_size: IntGauge,
    /// Ready messages per queue of the topology.
    pub queue_messages: IntGaugeVec,
    /// Estimated age of the oldest message per work queue.
    pub queue_age: GaugeVec,
}

impl DispatchMetrics {
    /// Creates the instruments and registers them with `registry`.
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let m = Self {
            events: IntCounterVec::new(
                Opts::new(
                    "dispatcher_events_total",
                    "Events taken from the dispatch queue, by outcome (fanned_out, duplicate, inactive_type, invalid).",
                ),
                &["outcome"],
            )?,
            deliveries: IntCounterVec::new(
                Opts::new(
                    "dispatcher_deliveries_total",
                    "Delivery messages handled, by outcome (succeeded, retrying, failed, cancelled, duplicate, deferred, throttled, held).",
                ),
                &["outcome"],
            )?,
            attempt_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "dispatcher_attempt_duration_seconds",
                    "Duration of each HTTP attempt to a receiver.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
            )?,
            in_flight: IntGauge::new(
                "dispatcher_requests_in_flight",
                "Requests to receivers in flight.",
            )?,
            index_size: IntGauge::new(
                "dispatcher_index_subscriptions",
                "Subscriptions in this replica's index.",
            )?,
            queue_messages: IntGaugeVec::new(
                Opts::new(
                    "queue_messages",
                    "Ready messages in each queue of the topology (work, limbo, return, retry, hold, dead, invalid), read every 5 s.",
                ),
                &["queue"],
            )?,
            queue_age: GaugeVec::new(
                Opts::new("queue_oldest_message_age_seconds", AGE_HELP),
                &["queue"],
            )?,
        };
        registry.register(Box::new(m.queue_messages.clone()))?;
        registry.register(Box::new(m.queue_age.clone()))?;
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.attempt_seconds.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.index_size.clone()))?;
        Ok(m)
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// What the watch knows of one work queue.
struct Seen {
    first: i64,
    last_empty: Option<i64>,
}

/// Reads every queue's depth with a passive declare (which neither takes nor moves a message)
/// and sets the queue gauges; the work queues' ages come from their consumers' [`Head`]s.
pub struct QueueWatch {
    pub url: String,
    pub topology: Topology,
    /// The consumer of each work queue, by queue name.
    pub heads: Vec<(String, Arc<Head>)>,
    pub metrics: DispatchMetrics,
}

impl QueueWatch {
    /// Looks every [`QUEUE_WATCH_EVERY`] until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut link: Option<(Connection, Channel)> = None;
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let queues = self.topology.queues();
        loop {
            for (queue, kind) in &queues {
                let Some(depth) = self.depth(&mut link, queue).await else {
                    continue;
                };
                self.metrics
                    .queue_messages
                    .with_label_values(&[queue.as_str()])
                    .set(i64::from(depth));
                if *kind != "work" {
                    continue;
                }
                let now = now_ms();
                let s = seen.entry(queue.clone()).or_insert(Seen {
                    first: now,
                    last_empty: None,
                });
                if depth == 0 {
                    s.last_empty = Some(now);
                }
                let taken = self
                    .heads
                    .iter()
                    .find(|(q, _)| q == queue)
                    .and_then(|(_, h)| h.last_taken());
                self.metrics
                    .queue_age
                    .with_label_values(&[queue.as_str()])
                    .set(oldest_age(depth, taken, s.last_empty, s.first, now));
            }
            tokio::select! {
                _ = tokio::time::sleep(QUEUE_WATCH_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// A queue's ready messages; `None` (and a new channel next time) when it cannot be read.
    async fn depth(&self, link: &mut Option<(Connection, Channel)>, queue: &str) -> Option<u32> {
        if !link.as_ref().is_some_and(|(_, ch)| ch.status().connected()) {
            let open = link
                .take()
                .map(|(conn, _)| conn)
                .filter(|conn| conn.status().connected());
            let conn = match open {
                Some(conn) => conn,
                None => waybill_bus::connect(
                    &self.url,
                    lapin::ConnectionProperties::default()
                        .with_connection_name("waybill-queue-watch".into()),
                )
                .await
                .map_err(|e| tracing::debug!(error = %e, "cannot watch the queues yet"))
                .ok()?,
            };
            let channel = conn.create_channel().await.ok()?;
            *link = Some((conn, channel));
        }
        let (_, channel) = link.as_ref()?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => Some(q.message_count()),
            Err(e) => {
                // A missing queue closes the channel; the next look opens another.
                tracing::debug!(queue, error = %e, "cannot read a queue's depth");
                None
            }
        }
    }
}
