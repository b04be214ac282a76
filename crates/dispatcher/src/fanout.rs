//! The fan-out stage, consuming `<prefix>.dispatch`: checks the event, records it once and
//! claims it, publishes one confirmed delivery message per matching subscription (type, client
//! and payload filter; see [`Index::matching_event`]), records those
//! deliveries, and only then acks the event. A crash between any two steps loses nothing: the
//! event comes back, is seen as unfinished once the crashed replica's claim has expired, and is
//! fanned out again under the same delivery ids.
//!
//! The claim makes a fan-out happen once across replicas: a copy of an event another replica
//! is fanning out waits until that one is done (the copy is a duplicate) or its claim expires
//! (it takes over). The owner renews the claim while it works.
//!
//! Memory stays bounded whatever the number of subscriptions: the delivery messages are built
//! and published a chunk at a time, each chunk confirmed before the next is built, and all the
//! chunks a replica holds at once share one byte budget.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::Utc;
use lapin::message::Delivery;
use tokio::sync::Semaphore;
use tracing::{Instrument, field::Empty};
use waybill_bus::{
    Broker, BusError, Handler, Outcome, Outgoing, TRACEPARENT_HEADER, topology::DELIVERY_KEY,
};
use waybill_catalog::Catalog;
use waybill_domain::{
    DeliveryId, ValidationErrors, WebhookId,
    delivery::{ATTEMPT_HEADER, DeliveryStatus, delivery_id, receiver_body},
    event::EventEnvelope,
    invalid_event::InvalidEvent,
};
use waybill_store::{
    PgPool, StoreError,
    deliveries::{self, Claim, ClaimState, DeliveryRecord, EventState},
    invalid_events,
};

use crate::{
    batch::{BatchError, Batcher},
    deliver::{
        Deliver, DeliverError, Done, Encoded, Incoming, Job, MESSAGE_OVERHEAD, Settled,
        attempt_span, delivery_body, describe,
    },
    health::DISABLED_EVENT,
    index::{Index, Target},
    metrics::DispatchMetrics,
};

/// Shortest time between two catalog re-reads caused by an unknown or inactive type.
const CATALOG_RECHECK: Duration = Duration::from_secs(1);

/// Header on delivery messages of a repeated fan-out: the delivery stage checks Postgres before
/// a first attempt carrying it, since the first fan-out may have delivered already.
pub const REFANOUT_HEADER: &str = "waybill-refanout";

/// Fans events out.
pub struct FanOut {
    pub index: Index,
    pub catalog: Catalog,
    pub pool: PgPool,
    pub broker: Broker,
    pub metrics: DispatchMetrics,
    /// Records events, many at a time.
    pub take: Writer<EventEnvelope, EventState>,
    /// Records fanned-out events' deliveries, many events at a time.
    pub finish: Writer<Finished, ()>,
    /// The (tenant, id) of the events this replica is fanning out now.
    pub in_flight: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// This replica's claim on the events it fans out.
    pub claim: Claim,
    /// KiB of delivery messages this replica's fan-outs may hold at once.
    pub budget: Arc<Semaphore>,
    /// The delivery stage, whose slots, checks and records first attempts made here share.
    pub deliver: Arc<Deliver>,
}

/// Bytes of delivery messages one fan-out builds before publishing them and waiting for their
/// confirms.
const CHUNK_BYTES: usize = 2 << 20;

/// Most delivery messages in one chunk, however small.
const CHUNK_MESSAGES: usize = 1_000;

/// Bytes of delivery messages all fan-outs of a replica hold at once (each also copied once
/// into the connection's buffers until the broker has it).
pub const BUDGET_BYTES: usize = 16 << 20;

/// Shortest and longest wait between two looks at a claim another replica holds.
const CLAIM_POLL: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(500));

/// A batch writer of the fan-out; an item's error is shared by every item it failed.
pub type Writer<T, R> = Batcher<T, R, Arc<StoreError>>;

/// Why an event was not fanned out (tried again in place, or sent to limbo).
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    #[error("cannot record the event")]
    Take(#[source] BatchError<Arc<StoreError>>),
    #[error("cannot encode a delivery message")]
    Encode(#[source] serde_json::Error),
    #[error("the broker did not confirm the delivery messages")]
    Publish(#[source] BusError),
    #[error("cannot record the event's deliveries")]
    Finish(#[source] BatchError<Arc<StoreError>>),
    #[error("another replica is still fanning the event out")]
    Claimed,
    #[error("another replica took the event over")]
    ClaimLost,
}

impl FanOutError {
    /// Whether handing the event back may let it through later.
    pub fn is_retryable(&self) -> bool {
        match self {
            FanOutError::Take(e) | FanOutError::Finish(e) => e.is_retryable(),
            FanOutError::Encode(_) => false,
            FanOutError::Publish(_) | FanOutError::Claimed | FanOutError::ClaimLost => true,
        }
    }
}

/// Takes an event out of [`FanOut::in_flight`] when its handling ends, however it ends.
struct InFlight<'a>(
    &'a std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    (String, String),
);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(&self.1);
        }
    }
}

/// One event's fan-out as it is recorded: tenant, event id, and the state of each of its
/// deliveries (settled by a first attempt made here, waiting on a queue, or not yet attempted).
pub type Finished = (String, String, Vec<DeliveryRecord>);

/// Most events per batched statement.
const FANOUT_BATCH: usize = 256;

/// Runs `many` over a batch; if Postgres refuses the batch for its content (not for being
/// away), runs `one` item by item so a single bad item cannot fail the others.
async fn batched<T, R, M, O>(
    pool: &PgPool,
    items: Vec<T>,
    many: M,
    one: O,
) -> Vec<Result<R, Arc<StoreError>>>
where
    M: AsyncFn(&mut diesel_async::AsyncPgConnection, &[T]) -> Result<Vec<R>, StoreError>,
    O: AsyncFn(&mut diesel_async::AsyncPgConnection, &T) -> Result<R, StoreError>,
{
    let every = |e: StoreError| {
        let e = Arc::new(e);
        items.iter().map(|_| Err(e.clone())).collect()
    };
    let mut conn = match waybill_store::conn(pool).await {
        Ok(c) => c,
        Err(e) => return every(e),
    };
    match many(&mut conn, &items).await {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) if e.is_retryable() || items.len() == 1 => every(e),
        Err(_) => {
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                out.push(one(&mut conn, item).await.map_err(Arc::new));
            }
            out
        }
    }
}

impl FanOut {
    /// The two batch writers of the fan-out; events are taken under `claim`.
    pub fn writers(
        pool: &PgPool,
        claim: &Claim,
    ) -> (Writer<EventEnvelope, EventState>, Writer<Finished, ()>) {
        let p = pool.clone();
        let claim = Arc::new(claim.clone());
        let take = Batcher::start(FANOUT_BATCH, move |events: Vec<EventEnvelope>| {
            let (p, many, one) = (p.clone(), claim.clone(), claim.clone());
            async move {
                batched(
                    &p,
                    events,
                    async move |conn, batch: &[EventEnvelope]| {
                        deliveries::take_events(conn, batch, &many)
                            .await
                            .map_err(StoreError::from)
                    },
                    async move |conn, e: &EventEnvelope| {
                        deliveries::take_event(conn, e, &one)
                            .await
                            .map_err(StoreError::from)
                    },
                )
                .await
            }
        });
        let p = pool.clone();
        let finish = Batcher::start(FANOUT_BATCH, move |done: Vec<Finished>| {
            let p = p.clone();
            async move {
                batched(
                    &p,
                    done,
                    async |conn, batch: &[Finished]| {
                        deliveries::finish_fan_outs(conn, batch)
                            .await
                            .map(|()| vec![(); batch.len()])
                            .map_err(StoreError::from)
                    },
                    async |conn, f: &Finished| {
                        deliveries::finish_fan_out(conn, &f.0, &f.1, &f.2)
                            .await
                            .map_err(StoreError::from)
                    },
                )
                .await
            }
        });
        (take, finish)
    }
}

/// Why an event cannot be fanned out at all.
struct Invalid(String);

impl FanOut {
    /// Parses and checks an event message as an upstream service may have published it: the
    /// envelope rules ingest applies too ([`EventEnvelope::from_wire`]), then the catalog.
    async fn parse(&self, delivery: &Delivery) -> Result<Option<EventEnvelope>, Invalid> {
        let event = EventEnvelope::from_wire(&delivery.data).map_err(|e| Invalid(e.to_string()))?;
        match self.type_status(event.kind.as_str()).await {
            None => return Err(Invalid(format!("there is no event type `{}`", event.kind))),
            Some(false) => return Ok(None),
            Some(true) => {}
        }
        let mut errors = ValidationErrors::new();
        if !self
            .catalog
            .check(event.kind.as_str(), &event.data, "", &mut errors)
        {
            let detail: Vec<String> = errors
                .fields()
                .iter()
                .flat_map(|(f, msgs)| msgs.iter().map(move |m| format!("{f}: {m}")))
                .collect();
            return Err(Invalid(detail.join("; ")));
        }
        Ok(Some(event))
    }

    /// Whether `kind` exists and is active. A type missing or inactive in the cached catalog is
    /// looked up again first (at most once a second), so a type created or re-activated a
    /// moment ago is not refused on a stale copy.
    async fn type_status(&self, kind: &str) -> Option<bool> {
        let cached = self.catalog.active(kind);
        if cached == Some(true) {
            return cached;
        }
        if let Err(e) = self.catalog.recheck(&self.pool, CATALOG_RECHECK).await {
            tracing::warn!(error = %e, "catalog refresh failed; deciding on the cached one");
        }
        self.catalog.active(kind)
    }

    /// Records a refused message in Postgres (`invalid_events`, where an operator lists,
    /// re-drives or deletes it); `Ack` once it is stored, so it does not pile up on a queue.
    /// Postgres away: the message is kept and tried again in place until it is recorded; a
    /// redelivered message is the same record, its id being derived from the message.
    async fn park(&self, delivery: &Delivery, reason: String) -> Outcome {
        tracing::warn!(reason = %reason, routing_key = %delivery.routing_key, "recording an invalid event");
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let record = InvalidEvent::new(
            delivery.routing_key.as_str(),
            message_id.as_deref(),
            &delivery.data,
            &reason,
            Utc::now(),
        );
        let stored = match waybill_store::conn(&self.pool).await {
            Ok(mut conn) => invalid_events::record(&mut conn, &record)
                .await
                .map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => {
                self.metrics.events.with_label_values(&["invalid"]).inc();
                Outcome::Ack
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "cannot record an invalid event yet");
                Outcome::Retry
            }
            Err(e) => {
                let error = &e as &dyn std::error::Error;
                tracing::error!(
                    error,
                    "Postgres refuses the record of an invalid event; it goes to limbo"
                );
                Outcome::DeadLetter
            }
        }
    }

    /// Fans `event` out; its delivery messages carry `traceparent` on (see [`waybill_trace`]).
    async fn fan_out(
        &self,
        event: &EventEnvelope,
        traceparent: Option<&str>,
    ) -> Result<usize, FanOutError> {
        // A copy of an event this replica is fanning out right now waits for that to finish,
        // then counts as the duplicate it is, rather than looking like an unfinished fan-out.
        let key = (event.tenant.to_string(), event.id.clone());
        let _guard = loop {
            // A poisoned set is no reason to stop fanning out: go ahead unguarded.
            let mine = self
                .in_flight
                .lock()
                .map(|mut set| set.insert(key.clone()))
                .unwrap_or(true);
            if mine {
                break InFlight(&self.in_flight, key);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let state = self.take(event).await?;
        if state == EventState::Done {
            self.metrics.events.with_label_values(&["duplicate"]).inc();
            return Ok(0);
        }
        // Subscriptions whose filter keeps the event out get no delivery at all, not a failed
        // one; an event every filter keeps out is fanned out to nobody.
        let matched = self.index.matching_event(event);
        let mut targets = matched.targets;
        // The notice of a disabled subscription goes to the tenant's other subscriptions.
        if event.kind.as_str() == DISABLED_EVENT
            && let Some(subject) = event.data.get("webhook_id").and_then(|v| v.as_str())
        {
            targets.retain(|t| t.id.to_string() != subject);
        }
        let refanout = state == EventState::Unfinished;
        // The claim is renewed for as long as the work runs; should another replica have taken
        // the event over meanwhile, this one stops and leaves the rest to it.
        let done = tokio::select! {
            biased;
            done = self.deliver_and_finish(event, &targets, refanout, traceparent) => done,
            lost = self.keep_claim(event) => Err(lost),
        };
        match &done {
            // Counted once the fan-out is recorded, so an event handed back and fanned out
            // again is not counted twice (only a crash after the record can do that).
            Ok(_) => self
                .metrics
                .filtered_out
                .inc_by(u64::try_from(matched.filtered_out).unwrap_or(u64::MAX)),
            Err(FanOutError::ClaimLost) => {}
            Err(_) => self.release(event).await,
        }
        done
    }

    /// Gives up this replica's claim on an event it could not fan out, so the copy that comes
    /// back is taken over at once wherever it lands; if Postgres is away, the lease runs out.
    async fn release(&self, event: &EventEnvelope) {
        let released = match waybill_store::conn(&self.pool).await {
            Ok(mut conn) => {
                deliveries::release_claim(&mut conn, event.tenant.as_str(), &event.id, &self.claim)
                    .await
                    .map_err(StoreError::from)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot release an event's claim; it expires with its lease");
        }
    }

    /// Takes the event under this replica's claim; a claim another replica holds is waited out
    /// (bounded by twice the lease) until its fan-out is done or the claim expires.
    async fn take(&self, event: &EventEnvelope) -> Result<EventState, FanOutError> {
        let mut state = self
            .take
            .call(event.clone())
            .await
            .map_err(FanOutError::Take)?;
        let started = Instant::now();
        let mut wait = CLAIM_POLL.0;
        while state == EventState::Claimed {
            if started.elapsed() > self.claim.lease * 2 {
                return Err(FanOutError::Claimed);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(CLAIM_POLL.1);
            let looked = match waybill_store::conn(&self.pool).await {
                Ok(mut conn) => {
                    deliveries::claim_state(&mut conn, event.tenant.as_str(), &event.id)
                        .await
                        .map_err(StoreError::from)
                }
                Err(e) => Err(e),
            };
            match looked {
                Ok(ClaimState::Done) => state = EventState::Done,
                Ok(ClaimState::Free) => {
                    state = self
                        .take
                        .call(event.clone())
                        .await
                        .map_err(FanOutError::Take)?;
                }
                Ok(ClaimState::Held) => {}
                // Looked at again at the next turn, within the same bound.
                Err(e) => tracing::warn!(error = %e, "cannot read an event's claim"),
            }
        }
        Ok(state)
    }

    /// Renews this replica's claim on `event` a few times per lease; returns only when the
    /// claim is someone else's.
    async fn keep_claim(&self, event: &EventEnvelope) -> FanOutError {
        let every = (self.claim.lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            let renewed = match waybill_store::conn(&self.pool).await {
                Ok(mut conn) => deliveries::renew_claim(
                    &mut conn,
                    event.tenant.as_str(),
                    &event.id,
                    &self.claim,
                )
                .await
                .map_err(StoreError::from),
                Err(e) => Err(e),
            };
            match renewed {
                Ok(true) => {}
                Ok(false) => return FanOutError::ClaimLost,
                // The claim may expire meanwhile: at worst another replica fans out again.
                Err(e) => tracing::warn!(error = %e, "cannot renew an event's claim"),
            }
        }
    }

    /// Delivers `event` to `targets` and records it: the first attempt of each delivery is made
    /// here when its tenant may take one of the replica's delivery slots now, the others go to
    /// the deliveries queue as messages (a chunk at a time, each confirmed), where the delivery
    /// stage's fairness between tenants applies. Once every delivery is settled or confirmed on
    /// a queue, all of them are recorded and the event marked fanned out in one group commit:
    /// a delivery that succeeded at once is one row written, never a pending row updated.
    async fn deliver_and_finish(
        &self,
        event: &EventEnvelope,
        targets: &[Arc<Target>],
        refanout: bool,
        traceparent: Option<&str>,
    ) -> Result<usize, FanOutError> {
        // The event is the bulk of every message: encoded once, copied into each; the body the
        // receivers get is made once and shared by every attempt.
        let event_json = serde_json::to_vec(event).map_err(FanOutError::Encode)?;
        let body = Bytes::from(receiver_body(event));
        // Each delivery continues the fan-out's span (the event's own trace when not exported).
        let onward = waybill_trace::onward(&tracing::Span::current(), traceparent);
        let tenant = event.tenant.as_str();
        let mut inline = Vec::new();
        let mut queued: Vec<Arc<Target>> = Vec::new();
        for t in targets {
            match self.deliver.slots.try_take_free(tenant) {
                Some(slot) => inline.push((t, slot)),
                None => queued.push(t.clone()),
            }
        }
        let attempts = futures_util::future::join_all(inline.into_iter().map(|(t, slot)| {
            let job = Job {
                delivery_id: delivery_id(tenant, &event.id, t.id),
                webhook_id: t.id,
                event,
                message: Encoded::Event(&event_json),
                body: body.clone(),
            };
            let onward = onward.clone();
            async move {
                let done = self.first_attempt(&job, refanout, onward).await;
                drop(slot);
                (job.delivery_id, t, done)
            }
        }));
        let (attempts, published) = tokio::join!(
            attempts,
            self.publish(event, &event_json, &queued, refanout, onward.as_deref())
        );
        let now = Utc::now();
        let mut records = Vec::with_capacity(targets.len());
        let mut outcomes = Vec::with_capacity(attempts.len());
        let mut unsettled = Vec::new();
        for (id, t, done) in attempts {
            match done {
                Ok(done) => {
                    outcomes.push(done.settled);
                    match done.record {
                        Some(r) => records.push(r),
                        // Waiting on a hold queue before its first attempt: pending.
                        None if matches!(done.settled, Settled::Deferred | Settled::Throttled) => {
                            records.push(self.pending(event, id, t.id, now));
                        }
                        // Made before: recorded then.
                        None => {}
                    }
                }
                Err(e) => {
                    // Whatever kept it from being settled here (Postgres or the broker away a
                    // moment) is the delivery stage's to wait out: it goes there as a message.
                    let error = &e as &dyn std::error::Error;
                    tracing::warn!(delivery_id = %id, error, "first attempt not settled in place; queueing it");
                    unsettled.push(t.clone());
                }
            }
        }
        let mut published = published;
        if published.is_ok() && !unsettled.is_empty() {
            published = self
                .publish(event, &event_json, &unsettled, refanout, onward.as_deref())
                .await;
        }
        if let Err(e) = published {
            // The event comes back and is fanned out again: what was settled here is recorded
            // first, so that the repeat finds it and does not send it again.
            let recorder = &self.deliver.recorder;
            futures_util::future::join_all(records.into_iter().map(|r| recorder.record(r))).await;
            return Err(e);
        }
        let queued_n = queued.len() + unsettled.len();
        for t in queued.iter().chain(&unsettled) {
            records.push(self.pending(event, delivery_id(tenant, &event.id, t.id), t.id, now));
        }
        // The deliveries are settled or queued: from here on, failing to record would fan out
        // again, so keep trying for a while before handing the event back.
        let mut wait = Duration::from_millis(100);
        let mut last = None;
        let finished = (tenant.to_owned(), event.id.clone(), records);
        for _ in 0..8 {
            match self.finish.call(finished.clone()).await {
                Ok(()) => {
                    self.metrics.events.with_label_values(&["fanned_out"]).inc();
                    for settled in outcomes {
                        self.metrics.delivery(tenant, settled.name());
                    }
                    let inline_n = targets.len() - queued_n;
                    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                    self.metrics
                        .first_attempts
                        .with_label_values(&["inline"])
                        .inc_by(count(inline_n));
                    self.metrics
                        .first_attempts
                        .with_label_values(&["queued"])
                        .inc_by(count(queued_n));
                    return Ok(targets.len());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        Err(FanOutError::Finish(last.unwrap_or(BatchError::Stopped)))
    }

    /// The first attempt of one delivery, in a span of its own as the delivery stage's.
    async fn first_attempt(
        &self,
        job: &Job<'_>,
        refanout: bool,
        traceparent: Option<String>,
    ) -> Result<Done, DeliverError> {
        let span = attempt_span(&self.broker);
        waybill_trace::set_parent(&span, traceparent.as_deref());
        describe(&span, job, 1);
        let inc = Incoming {
            number: 1,
            // A repeated fan-out may have delivered before.
            recheck: refanout,
            manual: false,
            refanout,
            not_before: None,
            deferrals: 0,
            fair_holds: 0,
            traceparent,
        };
        let done = self
            .deliver
            .attempt(job, &inc)
            .instrument(span.clone())
            .await;
        match &done {
            Ok(d) => {
                span.record("waybill.outcome", d.settled.name());
                if matches!(d.settled, Settled::Retrying | Settled::Failed) {
                    span.record("otel.status_code", "error");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "error");
            }
        }
        done
    }

    /// A delivery recorded as waiting, without an attempt.
    fn pending(
        &self,
        event: &EventEnvelope,
        id: DeliveryId,
        webhook_id: WebhookId,
        now: chrono::DateTime<Utc>,
    ) -> DeliveryRecord {
        DeliveryRecord {
            id,
            tenant: event.tenant.to_string(),
            webhook_id,
            event_id: event.id.clone(),
            event_type: event.kind.to_string(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_status_code: None,
            last_error: None,
            next_attempt_at: None,
            at: now,
            attempt: None,
        }
    }

    /// Publishes a first-attempt delivery message of `event` for each of `targets` to the
    /// deliveries queue, a chunk at a time, each chunk confirmed before the next is built.
    async fn publish(
        &self,
        event: &EventEnvelope,
        event_json: &[u8],
        targets: &[Arc<Target>],
        refanout: bool,
        traceparent: Option<&str>,
    ) -> Result<(), FanOutError> {
        if targets.is_empty() {
            return Ok(());
        }
        let per_message = event_json.len() + MESSAGE_OVERHEAD;
        let per_chunk = (CHUNK_BYTES / per_message).clamp(1, CHUNK_MESSAGES);
        let budget_kib = BUDGET_BYTES / 1024;
        let exchange = self.broker.topology().deliveries_exchange();
        let mut headers = vec![(ATTEMPT_HEADER, "1".to_owned())];
        if refanout {
            headers.push((REFANOUT_HEADER, "1".to_owned()));
        }
        if let Some(tp) = traceparent {
            headers.push((TRACEPARENT_HEADER, tp.to_owned()));
        }
        for chunk in targets.chunks(per_chunk) {
            // A chunk bigger than the whole budget (one huge message) takes all of it.
            let kib = (chunk.len() * per_message).div_ceil(1024).min(budget_kib);
            // The semaphore is never closed; were it, the chunk would go ahead unbudgeted.
            let _permit = self
                .budget
                .acquire_many(u32::try_from(kib).unwrap_or(u32::MAX))
                .await
                .ok();
            let mut bodies = Vec::with_capacity(chunk.len());
            for t in chunk {
                let id = delivery_id(event.tenant.as_str(), &event.id, t.id);
                let body = delivery_body(id, t.id, event_json).map_err(FanOutError::Encode)?;
                bodies.push((id.to_string(), body));
            }
            let outgoing: Vec<Outgoing<'_>> = bodies
                .iter()
                .map(|(id, body)| Outgoing {
                    exchange: &exchange,
                    routing_key: DELIVERY_KEY,
                    body,
                    message_id: Some(id),
                    headers: headers.clone(),
                    mandatory: true,
                })
                .collect();
            self.broker
                .publish_many(&outgoing)
                .await
                .map_err(FanOutError::Publish)?;
        }
        Ok(())
    }
}

impl Handler for FanOut {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let traceparent = waybill_bus::traceparent(delivery);
        // The consumer span of the event's fan-out, a child of whoever published it.
        let span = waybill_trace::span!(
            "waybill.fanout",
            otel.kind = "consumer",
            otel.status_code = Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.destination.name = self.broker.topology().dispatch_queue(),
            waybill.tenant = Empty,
            waybill.event_type = Empty,
            waybill.event_id = Empty,
            waybill.deliveries = Empty,
            waybill.outcome = Empty,
        );
        waybill_trace::set_parent(&span, traceparent.as_deref());
        let event = match self.parse(delivery).instrument(span.clone()).await {
            Err(Invalid(reason)) => {
                span.record("waybill.outcome", "invalid");
                return self.park(delivery, reason).instrument(span).await;
            }
            Ok(None) => {
                span.record("waybill.outcome", "inactive_type");
                self.metrics
                    .events
                    .with_label_values(&["inactive_type"])
                    .inc();
                return Outcome::Ack;
            }
            Ok(Some(e)) => e,
        };
        if waybill_trace::on() {
            span.record("waybill.tenant", event.tenant.as_str());
            span.record("waybill.event_type", event.kind.as_str());
            span.record("waybill.event_id", event.id.as_str());
        }
        let done = self
            .fan_out(&event, traceparent.as_deref())
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match &done {
            Ok(n) => {
                span.record("waybill.deliveries", i64::try_from(*n).unwrap_or(i64::MAX));
                span.record("waybill.outcome", "fanned_out");
            }
            Err(_) => {
                span.record("otel.status_code", "error");
            }
        }
        match done {
            Ok(n) => {
                tracing::debug!(event_id = %event.id, tenant = %event.tenant, deliveries = n, "fanned out");
                Outcome::Ack
            }
            Err(e @ (FanOutError::Claimed | FanOutError::ClaimLost)) => {
                // Another replica is on it: nothing is down, so the consumer must not pause.
                // The copy waits in limbo and comes back to find the event fanned out (a
                // duplicate) or its claim expired (taken over).
                let error = &e as &dyn std::error::Error;
                tracing::info!(event_id = %event.id, tenant = %event.tenant, error, "event held by another replica; the copy waits in limbo");
                Outcome::DeadLetter
            }
            Err(e) => {
                let error = &e as &dyn std::error::Error;
                if e.is_retryable() {
                    // Kept and tried again in place once the dependency answers.
                    tracing::warn!(event_id = %event.id, tenant = %event.tenant, error, "fan-out failed; trying again");
                    Outcome::Retry
                } else {
                    // What a retry cannot fix waits in limbo and comes back, so it is not lost
                    // while an operator looks, and it does not spin.
                    tracing::error!(event_id = %event.id, tenant = %event.tenant, error, "fan-out failed and will fail again; the event goes to limbo");
                    Outcome::DeadLetter
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use waybill_domain::{EventTypeName, TenantId, delivery::DeliveryMessage};

    use super::*;

    #[test]
    fn a_spliced_delivery_body_reads_as_the_message_it_stands_for() {
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let mut data = serde_json::Map::new();
        data.insert("sku".into(), serde_json::json!("TSH \"quoted\" \u{e9}"));
        let event = EventEnvelope {
            id: "ev-1".into(),
            tenant: TenantId::parse("acme").unwrap(),
            kind: EventTypeName::parse("stock.updated").unwrap(),
            client_id: Some("c1".into()),
            occurred_at: now,
            received_at: now,
            data,
        };
        let webhook_id = WebhookId::from_uuid(uuid::Uuid::now_v7());
        let id = delivery_id("acme", "ev-1", webhook_id);
        let body = delivery_body(id, webhook_id, &serde_json::to_vec(&event).unwrap()).unwrap();
        let read: DeliveryMessage = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            read,
            DeliveryMessage {
                delivery_id: id,
                webhook_id,
                event,
            }
        );
    }
}
