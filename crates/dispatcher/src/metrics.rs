//! The dispatcher's own instruments, registered next to the HTTP ones on `/metrics`, and the
//! task that looks at the broker's queues for them.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use lapin::{Channel, Connection, options::QueueDeclareOptions, types::FieldTable};
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use tokio::sync::watch;
use waybill_bus::{Head, Topology, oldest_age};

/// How often the queues' depths are read.
pub const QUEUE_WATCH_EVERY: Duration = Duration::from_secs(5);

/// Help text of the age gauge: what the estimate means.
const AGE_HELP: &str = "Estimated age of the oldest ready message in a work queue, in seconds: 0 when the queue is empty; otherwise the time since the later of (a) when the message this replica last took from the queue had reached it (stamped by the publisher; a message from a delay queue counts from the end of its delay) and (b) when this replica last saw the queue empty (or, knowing neither, since it first looked). An upper bound, close while messages are taken, growing while none is (consumers paused or absent); take the minimum over replicas.";

/// The `tenant` label of the deliveries of every tenant past `metrics.tenant_label_limit`. No
/// tenant can be called this (`~` is not allowed in a tenant id), so it never mixes with one.
pub const OTHER_TENANTS: &str = "~other";

/// Upper bounds of the end-to-end lag's buckets, in seconds: 5 ms (a delivery on the first
/// attempt to a fast receiver) to 8 h (past the default retry schedule's whole length, 6 h 15 m,
/// so that a delivery failed for good still lands in a bucket).
const LAG_BUCKETS: [f64; 23] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1200.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 28800.0,
];

const LAG_HELP: &str = "Time from an event's acceptance (its received_at: ingest's 202, or what a direct AMQP publisher stamped) to the end of the attempt that settled one of its deliveries: the first successful one (outcome succeeded), or the last one when every attempt failed (outcome failed). Tenants' retries and recovers are not counted.";

const TENANT_HELP: &str = "Deliveries handled, by tenant and outcome (as dispatcher_deliveries_total). The first metrics.tenant_label_limit tenants this replica sees get their own label; later ones count under tenant=\"~other\", so the series are at most (limit + 1) x 8 outcomes per replica.";

const FILTERED_HELP: &str = "Subscriptions an event's type and client matched but whose payload filter did not, so no delivery was made for them; counted when the event's fan-out is recorded.";

const FIRST_ATTEMPTS_HELP: &str = "Deliveries of fanned-out events by where their first attempt was made: inline (by the fan-out stage, under a free delivery slot of its tenant; no delivery message) or queued (a delivery message on the deliveries queue: no slot free, or the attempt could not be settled in place); counted when the event's fan-out is recorded.";

const CIRCUITS_HELP: &str = "Subscriptions whose circuit is open now or half-open (cooldown over, waiting for a successful probe), over every replica: read from Postgres every 5 s; every replica reports the same number, take the max.";

const FAILING_HELP: &str = "Subscriptions whose receiver failed its last request (a failing streak, circuit open or not), over every replica: read from Postgres every 5 s; every replica reports the same number, take the max.";

/// Which tenants keep a `tenant` label of their own: the first `limit` this replica counted.
/// The set only grows (a label that came and went would split one tenant's counts between its
/// name and [`OTHER_TENANTS`]), and a replica's restart starts it again.
pub struct TenantLabels {
    limit: usize,
    named: RwLock<HashSet<String>>,
}

impl TenantLabels {
    /// Labels for at most `limit` tenants; 0: none (the per-tenant counter is off).
    pub fn new(limit: u32) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            named: RwLock::new(HashSet::new()),
        }
    }

    /// Calls `f` with the label `tenant`'s deliveries count under; not at all when the counter
    /// is off. A tenant already named, and every tenant once the set is full, costs a shared
    /// read and no allocation.
    pub fn with_label(&self, tenant: &str, f: impl FnOnce(&str)) {
        if self.limit == 0 {
            return;
        }
        {
            let named = self.named.read().unwrap_or_else(PoisonError::into_inner);
            if named.contains(tenant) {
                return f(tenant);
            }
            if named.len() >= self.limit {
                return f(OTHER_TENANTS);
            }
        }
        let mut named = self.named.write().unwrap_or_else(PoisonError::into_inner);
        if named.contains(tenant) {
            f(tenant)
        } else if named.len() < self.limit {
            named.insert(tenant.to_owned());
            f(tenant)
        } else {
            f(OTHER_TENANTS)
        }
    }
}

/// Counters and gauges of fan-out and delivery.
#[derive(Clone)]
pub struct DispatchMetrics {
    /// Events taken from the dispatch queue, by outcome.
    pub events: IntCounterVec,
    /// Subscriptions of an event's type and client that its payload filter kept out.
    pub filtered_out: IntCounter,
    /// Deliveries of fanned-out events by where their first attempt was made: `inline` (by the
    /// fan-out stage itself, no delivery message) or `queued` (on the deliveries queue).
    pub first_attempts: IntCounterVec,
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
    /// From an event's acceptance to the attempt that settled a delivery of it, by outcome
    /// (`succeeded`, `failed`).
    pub lag: HistogramVec,
    /// Delivery messages handled, by tenant (bounded by [`TenantLabels`]) and outcome.
    pub tenant_deliveries: IntCounterVec,
    /// Which tenants have a label of their own in `tenant_deliveries`.
    pub tenant_labels: Arc<TenantLabels>,
    /// Subscriptions whose circuit is open or half-open, over every replica.
    pub circuits_open: IntGauge,
    /// Subscriptions with a failing streak, over every replica.
    pub receivers_failing: IntGauge,
}

impl DispatchMetrics {
    /// Creates the instruments and registers them with `registry`; `tenant_label_limit` tenants
    /// get a label of their own in the per-tenant counter.
    pub fn register(registry: &Registry, tenant_label_limit: u32) -> anyhow::Result<Self> {
        let m = Self {
            events: IntCounterVec::new(
                Opts::new(
                    "dispatcher_events_total",
                    "Events taken from the dispatch queue, by outcome (fanned_out, duplicate, inactive_type, invalid).",
                ),
                &["outcome"],
            )?,
            filtered_out: IntCounter::new("dispatcher_filtered_out_total", FILTERED_HELP)?,
            first_attempts: IntCounterVec::new(
                Opts::new("dispatcher_first_attempts_total", FIRST_ATTEMPTS_HELP),
                &["path"],
            )?,
            deliveries: IntCounterVec::new(
                Opts::new(
                    "dispatcher_deliveries_total",
                    "Deliveries handled (a first attempt the fan-out stage made itself, or a delivery message), by outcome (succeeded, retrying, failed, cancelled, duplicate, deferred, throttled, held).",
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
            lag: HistogramVec::new(
                HistogramOpts::new("delivery_lag_seconds", LAG_HELP).buckets(LAG_BUCKETS.to_vec()),
                &["outcome"],
            )?,
            tenant_deliveries: IntCounterVec::new(
                Opts::new("dispatcher_tenant_deliveries_total", TENANT_HELP),
                &["tenant", "outcome"],
            )?,
            tenant_labels: Arc::new(TenantLabels::new(tenant_label_limit)),
            circuits_open: IntGauge::new("circuits_open", CIRCUITS_HELP)?,
            receivers_failing: IntGauge::new("receivers_failing", FAILING_HELP)?,
        };
        registry.register(Box::new(m.queue_messages.clone()))?;
        registry.register(Box::new(m.queue_age.clone()))?;
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.filtered_out.clone()))?;
        registry.register(Box::new(m.first_attempts.clone()))?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.attempt_seconds.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.index_size.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.tenant_deliveries.clone()))?;
        registry.register(Box::new(m.circuits_open.clone()))?;
        registry.register(Box::new(m.receivers_failing.clone()))?;
        Ok(m)
    }

    /// Counts a handled delivery message of `tenant` with `outcome`, in both counters.
    pub fn delivery(&self, tenant: &str, outcome: &str) {
        self.deliveries.with_label_values(&[outcome]).inc();
        self.tenant_labels.with_label(tenant, |label| {
            self.tenant_deliveries
                .with_label_values(&[label, outcome])
                .inc();
        });
    }

    /// Observes the lag of a delivery settled at `settled` with `outcome`, of an event accepted
    /// at `accepted` (an acceptance after it, by a publisher's clock, counts as no lag).
    pub fn settled(&self, outcome: &str, accepted: DateTime<Utc>, settled: DateTime<Utc>) {
        let lag = (settled - accepted).to_std().unwrap_or_default();
        self.lag
            .with_label_values(&[outcome])
            .observe(lag.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tenants_keep_their_label_and_the_rest_share_one() {
        let labels = TenantLabels::new(2);
        let label = |tenant: &str| {
            let mut out = None;
            labels.with_label(tenant, |l| out = Some(l.to_owned()));
            out
        };
        assert_eq!(label("acme").as_deref(), Some("acme"));
        assert_eq!(label("globex").as_deref(), Some("globex"));
        assert_eq!(label("initech").as_deref(), Some(OTHER_TENANTS));
        // A tenant seen before keeps its label after the limit is reached.
        assert_eq!(label("acme").as_deref(), Some("acme"));
        assert_eq!(label("umbrella").as_deref(), Some(OTHER_TENANTS));
        assert!(waybill_domain::TenantId::parse(OTHER_TENANTS).is_err());
    }

    #[test]
    fn a_limit_of_zero_turns_the_tenant_counter_off() {
        let registry = Registry::new();
        let m = DispatchMetrics::register(&registry, 0).unwrap();
        m.delivery("acme", "succeeded");
        assert_eq!(m.deliveries.with_label_values(&["succeeded"]).get(), 1);
        let families = registry.gather();
        let tenant = families
            .iter()
            .find(|f| f.name() == "dispatcher_tenant_deliveries_total");
        assert!(tenant.is_none_or(|f| f.get_metric().is_empty()));
    }
}
