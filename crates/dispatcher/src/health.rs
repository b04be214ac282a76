//! What keeps a failing or slow receiver from being hammered: the circuit breaker, the
//! per-subscription rate limit and auto-disable. Their state lives in Postgres so every replica
//! obeys the same circuit and the same limit; each replica remembers only the receivers it saw
//! failing, so a healthy receiver costs no query.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use waybill_bus::Topology;
use waybill_domain::{EventTypeName, TenantId, WebhookId, event::EventEnvelope};
use waybill_publisher::EventPublisher;
use waybill_store::{
    Cipher, PgPool,
    endpoints::{self, BreakerPolicy, Health, ProbeClaim},
    webhooks,
};

use crate::index::{Index, Target};

/// The event type that tells a tenant one of its subscriptions was disabled.
pub const DISABLED_EVENT: &str = "webhook.disabled";

/// Whether a request may go to a receiver now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send it; `probe` when it is the half-open probe of an open circuit.
    Send { probe: bool },
    /// The circuit is open until then: no request.
    Open(DateTime<Utc>),
}

/// What a [`Breaker`] is made of.
pub struct BreakerSetup {
    pub pool: PgPool,
    pub policy: BreakerPolicy,
    /// How long a claimed probe keeps the circuit open to the other replicas (longer than a
    /// request may take).
    pub probe_lease: Duration,
    /// Failing this long without a success disables a subscription.
    pub disable_after: Duration,
    /// Publishes the `webhook.disabled` events.
    pub publisher: EventPublisher,
    pub index: Index,
    pub cipher: Arc<Cipher>,
}

/// The circuit breaker and auto-disable of one dispatcher replica.
pub struct Breaker {
    setup: BreakerSetup,
    /// Receivers this replica saw failing.
    failing: Mutex<HashMap<WebhookId, Seen>>,
}

/// A failing receiver as this replica last saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The subscription's revision then.
    revision: i64,
    /// The end of its open circuit; `None`: closed.
    open_until: Option<DateTime<Utc>>,
}

impl Breaker {
    pub fn new(setup: BreakerSetup) -> Self {
        Self {
            setup,
            failing: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self, id: WebhookId) -> Option<Seen> {
        self.failing.lock().ok().and_then(|m| m.get(&id).copied())
    }

    fn remember(&self, target: &Target, open_until: Option<DateTime<Utc>>) {
        if let Ok(mut m) = self.failing.lock() {
            m.insert(
                target.id,
                Seen {
                    revision: target.revision,
                    open_until,
                },
            );
        }
    }

    fn forget(&self, id: WebhookId) {
        if let Ok(mut m) = self.failing.lock() {
            m.remove(&id);
        }
    }

    /// Whether a request may go to `target` now. A receiver this replica has not seen failing
    /// is let through without a query; one whose cooldown is over is probed by one replica
    /// only. After a change of the subscription (which may have closed its circuit), Postgres
    /// is asked again.
    pub async fn gate(&self, target: &Target) -> Result<Gate, String> {
        let now = Utc::now();
        match self.seen(target.id) {
            None => return Ok(Gate::Send { probe: false }),
            Some(seen) if seen.revision == target.revision => match seen.open_until {
                None => return Ok(Gate::Send { probe: false }),
                Some(until) if until > now => return Ok(Gate::Open(until)),
                Some(_) => {}
            },
            Some(_) => {}
        }
        let mut conn = waybill_store::conn(&self.setup.pool)
            .await
            .map_err(|e| e.to_string())?;
        let lease = self.setup.probe_lease;
        match endpoints::claim_probe(&mut conn, target.id.as_uuid(), lease)
            .await
            .map_err(|e| e.to_string())?
        {
            ProbeClaim::Claimed => {
                // Until the probe is answered, this replica holds the circuit open too.
                let until = chrono::Duration::from_std(lease).ok().map(|l| now + l);
                self.remember(target, until);
                Ok(Gate::Send { probe: true })
            }
            ProbeClaim::Open(until) => {
                self.remember(target, Some(until));
                Ok(Gate::Open(until))
            }
            ProbeClaim::Closed { failing: true } => {
                self.remember(target, None);
                Ok(Gate::Send { probe: false })
            }
            ProbeClaim::Closed { failing: false } => {
                self.forget(target.id);
                Ok(Gate::Send { probe: false })
            }
        }
    }

    /// Which hold queue a delivery held back for the `deferrals`-th time waits on: until the
    /// circuit's end at least, and longer each time (the cooldown doubled per deferral, up to
    /// six times the longest cooldown), so that a long outage's backlog waits in the broker
    /// instead of coming back every cooldown.
    pub fn defer_for(&self, until: DateTime<Utc>, deferrals: u32) -> Duration {
        let policy = &self.setup.policy;
        let to_end = (until - Utc::now()).to_std().unwrap_or_default();
        let escalated = policy
            .cooldown
            .saturating_mul(1u32 << deferrals.min(20))
            .min(policy.max_cooldown.saturating_mul(6));
        Topology::hold_at_least(to_end.max(escalated))
    }

    /// Learns every failing receiver from Postgres, so that this replica respects circuits
    /// other replicas opened without sending a request first, and its successes end streaks
    /// other replicas started (or that outlived a restart).
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut conn = waybill_store::conn(&self.setup.pool)
            .await
            .map_err(|e| e.to_string())?;
        let rows = endpoints::failing(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let n = rows.len();
        let ids: HashSet<WebhookId> = rows.iter().map(|(id, _)| WebhookId::from(*id)).collect();
        if let Ok(mut m) = self.failing.lock() {
            m.retain(|id, _| ids.contains(id));
            for (id, h) in rows {
                m.entry(WebhookId::from(id))
                    .and_modify(|seen| seen.open_until = h.open_until)
                    // The revision is unknown: the first request asks Postgres (see `gate`).
                    .or_insert(Seen {
                        revision: i64::MIN,
                        open_until: h.open_until,
                    });
            }
        }
        Ok(n)
    }

    /// Runs [`Breaker::refresh`] every `every` until `stop` turns true (the first read is the
    /// caller's, before the consumers start).
    pub async fn keep_fresh(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "could not read the failing receivers; keeping what this replica knows");
            }
        }
    }

    /// A request to `target` succeeded: its failing streak ends and its circuit closes.
    pub async fn succeeded(&self, target: &Target) {
        let id = target.id;
        if self.seen(id).is_none() {
            return;
        }
        let closed = match waybill_store::conn(&self.setup.pool).await {
            Ok(mut conn) => endpoints::record_success(&mut conn, id.as_uuid())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match closed {
            Ok(()) => self.forget(id),
            // The next success tries again; until then the streak may look longer than it is.
            Err(e) => tracing::warn!(webhook_id = %id, error = %e, "could not close a circuit"),
        }
    }

    /// A request to `target`, sent at `sent_at`, failed. Returns the receiver's state after it,
    /// or `None` when Postgres could not count it (the breaker then learns at the next failure).
    pub async fn failed(
        &self,
        target: &Target,
        sent_at: DateTime<Utc>,
        probe: bool,
    ) -> Option<Health> {
        let id = target.id;
        let counted = match waybill_store::conn(&self.setup.pool).await {
            Ok(mut conn) => endpoints::record_failure(
                &mut conn,
                id.as_uuid(),
                sent_at,
                probe,
                &self.setup.policy,
            )
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match counted {
            Ok(h) => {
                if h.open_until.is_some()
                    && h.failures == i32::try_from(self.setup.policy.threshold).unwrap_or(i32::MAX)
                {
                    tracing::warn!(webhook_id = %id, failures = h.failures, "receiver keeps failing; its circuit is open");
                }
                self.remember(target, h.open_until);
                Some(h)
            }
            Err(e) => {
                tracing::warn!(webhook_id = %id, error = %e, "could not count a failed request");
                // Unknown: the next request to it asks Postgres first (see `gate`).
                if let Ok(mut m) = self.failing.lock() {
                    m.insert(
                        id,
                        Seen {
                            revision: i64::MIN,
                            open_until: None,
                        },
                    );
                }
                None
            }
        }
    }

    /// Whether a receiver in this state has failed long enough to be disabled.
    pub fn due_for_disable(&self, health: &Health, now: DateTime<Utc>) -> bool {
        chrono::Duration::from_std(self.setup.disable_after)
            .is_ok_and(|window| now - health.failing_since >= window)
    }

    /// Disables `target` for failing since `health.failing_since` and tells its tenant with a
    /// `webhook.disabled` event. The event is published (and confirmed) inside the transaction
    /// that disables the subscription, with an id fixed by the new revision: if the publish
    /// fails nothing changes and the next failure tries again; if the commit fails after it,
    /// the retry publishes the same id, which is fanned out once.
    pub async fn disable(
        &self,
        target: &Target,
        health: &Health,
        last_status_code: Option<u16>,
        last_error: Option<&str>,
    ) -> Result<bool, String> {
        let now = Utc::now();
        let reason = format!(
            "Deliveries failed continuously since {} ({} failed requests in a row, no success for {}).",
            health
                .failing_since
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            health.failures,
            humanize(self.setup.disable_after),
        );
        let mut data = Map::new();
        data.insert("webhook_id".into(), json!(target.id));
        data.insert("url".into(), json!(target.endpoint.url));
        data.insert("disabled_reason".into(), json!(reason));
        data.insert(
            "failing_since".into(),
            json!(
                health
                    .failing_since
                    .to_rfc3339_opts(SecondsFormat::Micros, true)
            ),
        );
        data.insert(
            "disabled_at".into(),
            json!(now.to_rfc3339_opts(SecondsFormat::Micros, true)),
        );
        data.insert("consecutive_failures".into(), json!(health.failures.max(1)));
        if let Some(code) = last_status_code.filter(|c| *c >= 100) {
            data.insert("last_status_code".into(), json!(code));
        }
        if let Some(e) = last_error {
            data.insert("last_error".into(), Value::String(e.to_owned()));
        }
        let publisher = &self.setup.publisher;
        let notify = async move |row: webhooks::WebhookRow| -> Result<(), String> {
            let event = EventEnvelope {
                id: format!("{DISABLED_EVENT}:{}:{}", row.id, row.revision),
                tenant: TenantId::parse(&row.tenant)?,
                kind: EventTypeName::parse(DISABLED_EVENT)?,
                client_id: None,
                occurred_at: now,
                received_at: now,
                data,
            };
            publisher
                .publish(std::slice::from_ref(&event), None)
                .await
                .map_err(|e| format!("publishing {DISABLED_EVENT}: {e}"))
        };
        let mut conn = waybill_store::conn(&self.setup.pool)
            .await
            .map_err(|e| e.to_string())?;
        let disabled = webhooks::disable(&mut conn, target.id, &reason, notify)
            .await
            .map_err(|e| e.to_string())?;
        self.forget(target.id);
        if disabled.is_some() {
            tracing::warn!(webhook_id = %target.id, tenant = %target.tenant, reason = %reason, "subscription disabled");
            // This replica stops at once; the others hear it on the change feed.
            if let Err(e) = crate::sync::refresh_one(
                &self.setup.index,
                &self.setup.pool,
                &self.setup.cipher,
                target.id,
            )
            .await
            {
                tracing::warn!(webhook_id = %target.id, error = %e, "disabled, but the index was not refreshed");
            }
        }
        Ok(disabled.is_some())
    }
}

/// `5d`, `36h`, `90s`: the window as the operator configured it.
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        _ if s.is_multiple_of(86_400) => format!("{} days", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{} hours", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{} minutes", s / 60),
        _ => format!("{s} seconds"),
    }
}

/// The per-subscription rate limit, shared by every replica through one Postgres row per
/// limited subscription.
#[derive(Clone)]
pub struct Throttle {
    pool: PgPool,
}

impl Throttle {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Takes the next free slot of a receiver that accepts `rate` requests per second.
    pub async fn reserve(&self, id: WebhookId, rate: u32) -> Result<DateTime<Utc>, String> {
        let spacing = spacing(rate);
        let mut conn = waybill_store::conn(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        endpoints::reserve_slot(&mut conn, id.as_uuid(), spacing)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The gap between two requests at `rate` per second.
pub fn spacing(rate: u32) -> Duration {
    Duration::from_secs(1) / rate.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_divides_a_second() {
        assert_eq!(spacing(1), Duration::from_secs(1));
        assert_eq!(spacing(4), Duration::from_millis(250));
        assert_eq!(spacing(10_000), Duration::from_micros(100));
        assert_eq!(spacing(0), Duration::from_secs(1), "never divides by zero");
    }

    #[test]
    fn windows_read_as_configured() {
        assert_eq!(humanize(Duration::from_secs(5 * 86_400)), "5 days");
        assert_eq!(humanize(Duration::from_secs(7_200)), "2 hours");
        assert_eq!(humanize(Duration::from_secs(90)), "90 seconds");
        assert_eq!(humanize(Duration::from_millis(800)), "800ms");
    }
}
