//! What keeps a failing or slow receiver from being hammered: the circuit breaker, the
//! per-subscription rate limit and auto-disable. Their rules are the domain's
//! (`waybill_domain::breaker`, `waybill_domain::throttle`); their state lives in Postgres so
//! every replica obeys the same circuit and the same limit; each replica remembers only the
//! receivers it saw failing, so a healthy receiver costs no query.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use waybill_bus::Topology;
use waybill_domain::{
    EventTypeName, TenantId, WebhookId,
    breaker::{BreakerPolicy, Health, ProbeClaim},
    event::EventEnvelope,
    throttle,
};
use waybill_publisher::EventPublisher;
use waybill_store::{Cipher, PgPool, StoreError, endpoints, webhooks};

use crate::{
    index::{Index, Target},
    metrics::DispatchMetrics,
};

/// The event type that tells a tenant one of its subscriptions was disabled.
pub const DISABLED_EVENT: &str = "webhook.disabled";

/// Why the breaker, auto-disable or the rate limit could not do its part. The message includes
/// the cause's, for log lines that print only the top error; the cause stays the `source`.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Postgres could not be reached, or refused a query.
    #[error("could not {doing}: {source}")]
    Store {
        /// What was being done.
        doing: &'static str,
        /// Why it failed.
        source: StoreError,
    },
}

impl HealthError {
    fn store<E>(doing: &'static str) -> impl FnOnce(E) -> Self
    where
        StoreError: From<E>,
    {
        move |e| HealthError::Store {
            doing,
            source: StoreError::from(e),
        }
    }

    /// Whether trying the same thing again later may succeed (Postgres back).
    pub fn is_retryable(&self) -> bool {
        match self {
            HealthError::Store { source, .. } => source.is_retryable(),
        }
    }
}

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
    /// Where every replica's view of the receivers is stored.
    pub pool: PgPool,
    /// When circuits open and for how long.
    pub policy: BreakerPolicy,
    /// How long a claimed probe keeps the circuit open to the other replicas (longer than a
    /// request may take).
    pub probe_lease: Duration,
    /// Failing this long without a success disables a subscription.
    pub disable_after: Duration,
    /// Publishes the `webhook.disabled` events.
    pub publisher: EventPublisher,
    /// This replica's subscriptions, refreshed at once when one is disabled.
    pub index: Index,
    /// Decrypts the secrets of the subscription reloaded into the index.
    pub cipher: Arc<Cipher>,
    /// Where the number of open circuits and failing receivers is shown.
    pub metrics: DispatchMetrics,
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
    /// A breaker that has seen no receiver failing yet.
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
    pub async fn gate(&self, target: &Target) -> Result<Gate, HealthError> {
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
        let lease = self.setup.probe_lease;
        let policy = self.setup.policy;
        let claim = transition(
            &self.setup.pool,
            target.id,
            "claim a probe",
            claim_probe(policy, lease),
        )
        .await?;
        match claim {
            ProbeClaim::Claimed(_) => {
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
        Topology::hold_at_least(self.setup.policy.deferral(until, deferrals, Utc::now()))
    }

    /// Learns every failing receiver from Postgres, so that this replica respects circuits
    /// other replicas opened without sending a request first, and its successes end streaks
    /// other replicas started (or that outlived a restart).
    pub async fn refresh(&self) -> Result<usize, HealthError> {
        const DOING: &str = "read the failing receivers";
        let mut conn = waybill_store::conn(&self.setup.pool)
            .await
            .map_err(HealthError::store(DOING))?;
        let rows = endpoints::failing(&mut conn)
            .await
            .map_err(HealthError::store(DOING))?;
        let n = rows.len();
        // Every replica reads the same rows, so each shows the same numbers: gauges of the whole
        // installation at no cost beyond the read it needs anyway. A circuit with an end is
        // open, or half-open once that end passed; it stays so until a success deletes the row.
        let tripped = rows.iter().filter(|(_, h)| h.open_until.is_some()).count();
        self.setup
            .metrics
            .circuits_open
            .set(i64::try_from(tripped).unwrap_or(i64::MAX));
        self.setup
            .metrics
            .receivers_failing
            .set(i64::try_from(n).unwrap_or(i64::MAX));
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
                tracing::warn!(error = %e, retryable = e.is_retryable(), "keeping what this replica knows");
            }
        }
    }

    /// A request to `target` succeeded: its failing streak ends and its circuit closes.
    pub async fn succeeded(&self, target: &Target) {
        let id = target.id;
        if self.seen(id).is_none() {
            return;
        }
        const DOING: &str = "close a circuit";
        let closed = match waybill_store::conn(&self.setup.pool).await {
            Ok(mut conn) => endpoints::record_success(&mut conn, id.as_uuid())
                .await
                .map_err(HealthError::store(DOING)),
            Err(e) => Err(HealthError::store(DOING)(e)),
        };
        match closed {
            Ok(()) => self.forget(id),
            // The next success tries again; until then the streak may look longer than it is.
            Err(e) => {
                tracing::warn!(webhook_id = %id, error = %e, retryable = e.is_retryable(), "a success was not recorded");
            }
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
        let policy = self.setup.policy;
        let counted = transition(
            &self.setup.pool,
            id,
            "count a failed request",
            count_failure(policy, sent_at, probe),
        )
        .await;
        match counted {
            Ok(h) => {
                if h.open_until.is_some() && h.failures == policy.threshold {
                    tracing::warn!(webhook_id = %id, failures = h.failures, "receiver keeps failing; its circuit is open");
                }
                self.remember(target, h.open_until);
                Some(h)
            }
            Err(e) => {
                tracing::warn!(webhook_id = %id, error = %e, retryable = e.is_retryable(), "a failure was not counted");
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
        health.due_for_disable(now, self.setup.disable_after)
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
    ) -> Result<bool, HealthError> {
        const DOING: &str = "disable a failing subscription";
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
                .publish(
                    std::slice::from_ref(&event),
                    // The notice continues the trace of the attempt that disabled the subscription.
                    waybill_trace::onward(&tracing::Span::current(), None).as_deref(),
                )
                .await
                .map_err(|e| format!("publishing {DISABLED_EVENT}: {e}"))
        };
        let mut conn = waybill_store::conn(&self.setup.pool)
            .await
            .map_err(HealthError::store(DOING))?;
        let disabled = webhooks::disable(&mut conn, target.id, &reason, notify)
            .await
            .map_err(HealthError::store(DOING))?;
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

/// Moves `id`'s state one step in one Postgres transaction: under the receiver's lock, `decide`
/// computes the next state from the stored one and Postgres's clock (see
/// [`endpoints::transition_health`]). Writers of one receiver, here and on other replicas, wait
/// for each other on that lock, so each decides from what the one before it stored. `decide`
/// returning the state it was given writes nothing.
async fn transition<T: Send>(
    pool: &PgPool,
    id: WebhookId,
    doing: &'static str,
    decide: impl FnOnce(Option<&Health>, DateTime<Utc>) -> (Option<Health>, T) + Send,
) -> Result<T, HealthError> {
    let mut conn = waybill_store::conn(pool)
        .await
        .map_err(HealthError::store(doing))?;
    endpoints::transition_health(&mut conn, id.as_uuid(), decide)
        .await
        .map_err(HealthError::store(doing))
}

/// The [`transition`] of a claim of the half-open probe: a claim is stored, anything else
/// leaves the state as it is.
fn claim_probe(
    policy: BreakerPolicy,
    lease: Duration,
) -> impl FnOnce(Option<&Health>, DateTime<Utc>) -> (Option<Health>, ProbeClaim) + Send {
    move |state, now| {
        let claim = policy.claim_probe(state, lease, now);
        let next = match &claim {
            ProbeClaim::Claimed(claimed) => Some(claimed.clone()),
            ProbeClaim::Open(_) | ProbeClaim::Closed { .. } => state.cloned(),
        };
        (next, claim)
    }
}

/// The [`transition`] of a failed request sent at `sent_at`.
fn count_failure(
    policy: BreakerPolicy,
    sent_at: DateTime<Utc>,
    probe: bool,
) -> impl FnOnce(Option<&Health>, DateTime<Utc>) -> (Option<Health>, Health) + Send {
    move |state, now| {
        let next = policy.after_failure(state, sent_at, probe, now);
        (Some(next.clone()), next)
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
    /// A limiter over the rows of `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Takes the next free slot of a receiver that accepts `rate` requests per second.
    pub async fn reserve(&self, id: WebhookId, rate: u32) -> Result<DateTime<Utc>, HealthError> {
        const DOING: &str = "take a rate-limit slot";
        let mut conn = waybill_store::conn(&self.pool)
            .await
            .map_err(HealthError::store(DOING))?;
        endpoints::reserve_slot(&mut conn, id.as_uuid(), throttle::spacing(rate))
            .await
            .map_err(HealthError::store(DOING))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_errors_keep_their_cause_and_say_whether_to_retry() {
        use std::error::Error as _;

        let down = HealthError::store("count a failed request")(StoreError::Unavailable(
            "connection refused".into(),
        ));
        assert!(down.is_retryable());
        assert_eq!(
            down.to_string(),
            "could not count a failed request: the database is unavailable: connection refused"
        );
        let cause = down.source().expect("the store error is kept");
        assert!(cause.to_string().contains("connection refused"));

        let corrupt =
            HealthError::store("read the failing receivers")(StoreError::Corrupt("bad row".into()));
        assert!(!corrupt.is_retryable());
    }

    /// Against a database of its own: writers racing on one receiver lose no failure and
    /// claim its probe once, each deciding once: 100 writers from five replicas, more than
    /// their pools hold connections, all at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_replicas_count_every_failure_and_claim_one_probe() {
        use futures_util::future::join_all;
        use waybill_bus::topology::QueueType;
        use waybill_testkit::db::{DbGuard, create_database, db_url};

        let db = create_database().await;
        let _guard = DbGuard::new(
            db.clone(),
            Topology::new(
                format!("t{}", uuid::Uuid::new_v4().simple()),
                QueueType::Classic,
                &[],
            ),
        );
        // Replicas of their own pools: 70 writers in Postgres at once, leaving Postgres's default
        // 100 connections room for other tests.
        let replicas: Vec<PgPool> = (0..5)
            .map(|_| waybill_store::pool(&db_url(&db), 14).unwrap())
            .collect();
        // Every connection opened before the race, so the writers start together rather than
        // as fast as connections can be opened.
        for replica in &replicas {
            let held = join_all((0..14).map(|_| waybill_store::conn(replica))).await;
            assert!(held.iter().all(Result::is_ok));
        }
        let pool = &replicas[0];
        let replica = |i: usize| &replicas[i % replicas.len()];
        let policy = BreakerPolicy {
            threshold: 3,
            cooldown: Duration::from_millis(100),
            max_cooldown: Duration::from_millis(400),
            streak_gap: Duration::from_secs(3_600),
        };
        let id = WebhookId::from(uuid::Uuid::new_v4());
        let failures = 100;
        // How often the domain was asked to decide: once per failure when writers wait for each
        // other; an optimistic loop, where every lost race reads and decides again, asked it
        // about 1,800 times here.
        let decided = std::sync::atomic::AtomicUsize::new(0);
        let counted = join_all((0..failures).map(|i| {
            let count = count_failure(policy, Utc::now(), false);
            let decided = &decided;
            transition(
                replica(i),
                id,
                "count a failed request",
                move |state, now| {
                    decided.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    count(state, now)
                },
            )
        }))
        .await;
        let mut seen: Vec<u32> = counted.into_iter().map(|h| h.unwrap().failures).collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=failures as u32).collect::<Vec<_>>(),
            "each failure counted once"
        );
        assert_eq!(
            decided.into_inner(),
            failures,
            "each failure decided once, none retried"
        );

        let mut conn = waybill_store::conn(pool).await.unwrap();
        let open = endpoints::read_health(&mut conn, id.as_uuid())
            .await
            .unwrap();
        let until = open.health.unwrap().open_until.expect("past the threshold");
        tokio::time::sleep((until - open.now).to_std().unwrap_or_default()).await;
        let lease = Duration::from_secs(5);
        let claims = join_all(
            (0..100)
                .map(|i| transition(replica(i), id, "claim a probe", claim_probe(policy, lease))),
        )
        .await;
        let claimed = claims
            .iter()
            .filter(|c| matches!(c, Ok(ProbeClaim::Claimed(_))))
            .count();
        assert_eq!(claimed, 1, "{claims:?}");
        assert!(
            claims
                .iter()
                .all(|c| matches!(c, Ok(ProbeClaim::Claimed(_) | ProbeClaim::Open(_)))),
            "{claims:?}"
        );
    }

    #[test]
    fn windows_read_as_configured() {
        assert_eq!(humanize(Duration::from_secs(5 * 86_400)), "5 days");
        assert_eq!(humanize(Duration::from_secs(7_200)), "2 hours");
        assert_eq!(humanize(Duration::from_secs(90)), "90 seconds");
        assert_eq!(humanize(Duration::from_millis(800)), "800ms");
    }
}
