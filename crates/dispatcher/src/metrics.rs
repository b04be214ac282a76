//! The dispatcher's own instruments, registered next to the HTTP ones on `/metrics`.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

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
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.attempt_seconds.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.index_size.clone()))?;
        Ok(m)
    }
}
