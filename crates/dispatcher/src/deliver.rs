//! The delivery stage, consuming `<prefix>.deliveries`: one attempt per message. A success is
//! recorded; a failure with attempts left goes to the delay tier of its wait with the next
//! attempt number, a failure without goes to the dead queue as `failed`. The message is acked
//! only once that is confirmed by the broker and committed to Postgres.
//!
//! Tenants share the replica fairly (see [`crate::fairness`]): a delivery of a tenant holding
//! more than its share waits on a hold queue without an attempt, longer each time it is held,
//! so one tenant's backlog or slow receivers do not keep the others' deliveries waiting.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use lapin::{message::Delivery, types::AMQPValue};
use tracing::{Instrument, Span, field::Empty};
use waybill_bus::{Broker, BusError, Handler, Outcome, Outgoing, TRACEPARENT_HEADER, Topology};
use waybill_catalog::Catalog;
use waybill_domain::{
    DeliveryId, WebhookId,
    delivery::{
        ATTEMPT_HEADER, Cancellation, DeliveryMessage, DeliveryStatus, LastError, MANUAL_HEADER,
        receiver_body,
    },
    event::EventEnvelope,
    retry::RetrySchedule,
};
use waybill_outbound::{Attempt, AttemptResult, Outbound};
use waybill_store::{
    Cipher, PgPool, StoreError,
    deliveries::{self, AttemptRecord, DeliveryRecord},
};

use crate::{
    fairness::TenantSlots,
    fanout::REFANOUT_HEADER,
    health::{Breaker, Gate, HealthError, Throttle},
    index::{Index, Target},
    metrics::DispatchMetrics,
    recorder::{Recorder, RecorderStopped},
    sync::{RefreshError, refresh_one},
};

/// Header naming why a delivery message was parked on the dead queue.
pub const DEAD_REASON_HEADER: &str = "waybill-dead-reason";

/// Header of a delivery message waiting on a hold queue: the rate-limit slot it holds (RFC 3339).
pub const NOT_BEFORE_HEADER: &str = "waybill-not-before";

/// Header of a delivery message held back by an open circuit: how many times so far. Each time
/// it waits longer, so a long outage's backlog does not cycle through the broker every cooldown.
pub const DEFERRALS_HEADER: &str = "waybill-deferrals";

/// Header of a delivery message that went through a hold queue: a copy of it may have been sent
/// meanwhile (a redelivered original, or a tenant's retry), so Postgres is checked first.
pub const HELD_HEADER: &str = "waybill-held";

/// Header of a delivery message held back for fairness between tenants: how many times so far.
pub const FAIR_HOLDS_HEADER: &str = "waybill-fair-holds";

/// The consumer span of one delivery message (an attempt, or a hold without one), when traces
/// are exported; its fields are the names operators filter on.
pub fn attempt_span(broker: &Broker) -> Span {
    waybill_trace::span!(
        "waybill.deliver",
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = broker.topology().deliveries_queue(),
        waybill.tenant = Empty,
        waybill.event_type = Empty,
        waybill.event_id = Empty,
        waybill.subscription_id = Empty,
        waybill.delivery_id = Empty,
        waybill.attempt = Empty,
        waybill.outcome = Empty,
        http.response.status_code = Empty,
    )
}

/// Records what operators filter on in the span of an attempt of `job`, when traces are
/// exported.
pub fn describe(span: &Span, job: &Job<'_>, number: u32) {
    if !waybill_trace::on() {
        return;
    }
    span.record("waybill.tenant", job.event.tenant.as_str());
    span.record("waybill.event_type", job.event.kind.as_str());
    span.record("waybill.event_id", job.event.id.as_str());
    span.record(
        "waybill.subscription_id",
        tracing::field::display(job.webhook_id),
    );
    span.record(
        "waybill.delivery_id",
        tracing::field::display(job.delivery_id),
    );
    span.record("waybill.attempt", i64::from(number));
}

/// Delivers.
pub struct Deliver {
    pub index: Index,
    pub catalog: Catalog,
    pub pool: PgPool,
    pub cipher: Arc<Cipher>,
    pub broker: Broker,
    pub outbound: Outbound,
    pub schedule: RetrySchedule,
    pub recorder: Recorder,
    pub metrics: DispatchMetrics,
    pub breaker: Arc<Breaker>,
    pub throttle: Throttle,
    /// Each tenant's attempts in progress on this replica.
    pub slots: TenantSlots,
    /// First and longest wait of a delivery held back for fairness.
    pub fair_hold: (Duration, Duration),
}

/// What a delivery message says about itself besides its body.
pub struct Incoming {
    /// The attempt it is for.
    pub number: u32,
    /// The attempt may have been made already: look at Postgres first.
    pub recheck: bool,
    /// A tenant's retry: made whatever the status, and not held back by an open circuit.
    pub manual: bool,
    /// Sent again by a repeated fan-out.
    pub refanout: bool,
    /// The rate-limit slot it holds, when it comes back from a hold queue.
    pub not_before: Option<DateTime<Utc>>,
    /// Times an open circuit held it back.
    pub deferrals: u32,
    /// Times it was held back for fairness between tenants.
    pub fair_holds: u32,
    /// The trace context it came with, which the attempt continues.
    pub traceparent: Option<String>,
}

impl Incoming {
    /// The headers a message keeps when it waits on a delay queue without an attempt.
    fn carried(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (ATTEMPT_HEADER, self.number.to_string()),
            (HELD_HEADER, "true".to_owned()),
        ];
        if self.manual {
            h.push((MANUAL_HEADER, "true".to_owned()));
        }
        if self.refanout {
            h.push((REFANOUT_HEADER, "true".to_owned()));
        }
        h
    }
}

/// One delivery to attempt, borrowed from wherever it came from: a delivery message, or an
/// event the fan-out stage delivers itself.
pub struct Job<'a> {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event: &'a EventEnvelope,
    /// The delivery message as it goes onto a delay, hold or dead queue.
    pub message: Encoded<'a>,
    /// The body every attempt sends (made once per event on the fast path).
    pub body: Bytes,
}

/// A delivery message's encoding.
pub enum Encoded<'a> {
    /// As it came from a queue.
    Message(&'a [u8]),
    /// To be built around its event, encoded once for all of the event's deliveries.
    Event(&'a [u8]),
}

impl Job<'_> {
    /// The delivery message, encoded.
    fn message(&self) -> Result<std::borrow::Cow<'_, [u8]>, serde_json::Error> {
        Ok(match self.message {
            Encoded::Message(raw) => std::borrow::Cow::Borrowed(raw),
            Encoded::Event(event_json) => std::borrow::Cow::Owned(delivery_body(
                self.delivery_id,
                self.webhook_id,
                event_json,
            )?),
        })
    }
}

fn header(delivery: &Delivery, name: &str) -> Option<AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
}

/// The rate-limit slot a held message carries (`None` when absent or unreadable).
fn not_before(delivery: &Delivery) -> Option<DateTime<Utc>> {
    let raw = match header(delivery, NOT_BEFORE_HEADER)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok()?,
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        _ => return None,
    };
    DateTime::parse_from_rfc3339(&raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A whole number a header carries (`None` when absent or unreadable).
fn number_header(delivery: &Delivery, name: &str) -> Option<u32> {
    match header(delivery, name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok()),
        AMQPValue::ShortString(s) => s.as_str().parse::<u32>().ok(),
        AMQPValue::LongInt(i) => u32::try_from(i).ok(),
        AMQPValue::LongLongInt(i) => u32::try_from(i).ok(),
        AMQPValue::ShortInt(i) => u32::try_from(i).ok(),
        AMQPValue::LongUInt(i) => Some(i),
        _ => None,
    }
}

/// The attempt number a message carries (1 when absent or unreadable).
fn attempt_number(delivery: &Delivery) -> u32 {
    number_header(delivery, ATTEMPT_HEADER)
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// Why a delivery message was not settled (it goes back to the queue).
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("cannot read the delivery's progress")]
    Progress(#[source] StoreError),
    #[error("cannot look the subscription up")]
    Lookup(#[source] StoreError),
    /// The circuit breaker or the rate limit could not be consulted.
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error("cannot encode the delivery message")]
    Encode(#[source] serde_json::Error),
    #[error("the broker did not confirm the delivery message")]
    Forward(#[source] BusError),
    #[error(transparent)]
    Recorder(#[from] RecorderStopped),
}

impl DeliverError {
    /// Whether handing the message back may let it through later.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliverError::Progress(e) | DeliverError::Lookup(e) => e.is_retryable(),
            DeliverError::Encode(_) => false,
            DeliverError::Health(e) => e.is_retryable(),
            DeliverError::Forward(_) | DeliverError::Recorder(_) => true,
        }
    }
}

/// Why the subscription of a delivery could not be looked up.
enum Lookup {
    /// Postgres is away: try again later.
    Unavailable(StoreError),
    /// Its stored state cannot be used (it does not decrypt): trying again will not help.
    Unusable(String),
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Succeeded,
    Retrying,
    Failed,
    Cancelled,
    /// The attempt was made before (a redelivery or a duplicate message).
    AlreadyDone,
    /// The receiver's circuit is open: the message waits without a request.
    Deferred,
    /// Over the subscription's rate limit: the message waits for its slot.
    Throttled,
    /// Its tenant holds more than its share of the replica: the message waits its turn.
    Held,
}

impl Deliver {
    /// Parks an unreadable message on the dead queue.
    async fn park(&self, delivery: &Delivery, reason: String) -> Outcome {
        tracing::warn!(reason = %reason, "parking an unreadable delivery message");
        let queue = self.broker.topology().dead_queue();
        let parked = Outgoing {
            exchange: "",
            routing_key: &queue,
            body: &delivery.data,
            message_id: None,
            headers: vec![(DEAD_REASON_HEADER, reason)],
            mandatory: true,
        };
        match self.broker.publish(&parked).await {
            Ok(()) => Outcome::Drop,
            Err(e) => {
                tracing::warn!(error = %e, "cannot park an unreadable delivery message yet");
                Outcome::Retry
            }
        }
    }

    /// The subscription as it stands now: the index, confirmed against Postgres when the index
    /// says it is missing or inactive (the change may not have reached this replica yet).
    async fn current_target(&self, job: &Job<'_>) -> Result<Option<Arc<Target>>, Lookup> {
        match self.index.get(job.webhook_id) {
            Some(t) if t.active => Ok(Some(t)),
            _ => refresh_one(&self.index, &self.pool, &self.cipher, job.webhook_id)
                .await
                .map_err(|e| match e {
                    RefreshError::Unusable(t) => Lookup::Unusable(t.to_string()),
                    RefreshError::Store(StoreError::Corrupt(why)) => Lookup::Unusable(why),
                    RefreshError::Store(other) => Lookup::Unavailable(other),
                }),
        }
    }

    /// Whether Postgres shows this attempt as already made (the message is a redelivery, a
    /// duplicate from a repeated fan-out or retry, or a second replay of the same number).
    async fn already_done(
        &self,
        job: &Job<'_>,
        number: u32,
        manual: bool,
    ) -> Result<bool, DeliverError> {
        let mut conn = waybill_store::conn(&self.pool)
            .await
            .map_err(DeliverError::Progress)?;
        let progress = deliveries::progress(&mut conn, job.delivery_id)
            .await
            .map_err(|e| DeliverError::Progress(e.into()))?;
        Ok(match progress {
            // A tenant's retry is made after a success too, but only once per number.
            Some((DeliveryStatus::Succeeded, _)) if !manual => true,
            Some((_, attempts)) => i64::from(attempts) >= i64::from(number),
            None => false,
        })
    }

    fn record(
        &self,
        job: &Job<'_>,
        status: DeliveryStatus,
        attempts: u32,
        result: Option<&AttemptResult>,
        error: Option<LastError>,
        next_wait: Option<Duration>,
    ) -> DeliveryRecord {
        delivery_record(job, status, attempts, result, error, next_wait, Utc::now())
    }

    /// Makes the attempt a delivery message stands for, once its tenant has a slot (or holds it
    /// back for fairness), and says what became of it and what to record.
    async fn process(&self, job: &Job<'_>, inc: &Incoming) -> Result<Done, DeliverError> {
        // Checked first, in memory, so a delivery held again and again costs no Postgres read.
        let Some(_slot) = self.slots.try_take(job.event.tenant.as_str()) else {
            self.hold_for_fairness(job, inc).await?;
            return Ok(Done::bare(Settled::Held));
        };
        self.attempt(job, inc).await
    }

    /// Makes attempt `inc.number` of `job` under a slot the caller holds, unless it was made
    /// before, the subscription or type is gone, the circuit holds it back or the rate limit
    /// makes it wait on a hold queue. Whatever goes to a queue is confirmed there on return;
    /// what is to be recorded is returned, for the caller to commit before it acks.
    pub async fn attempt(&self, job: &Job<'_>, inc: &Incoming) -> Result<Done, DeliverError> {
        let number = inc.number;
        if inc.recheck && self.already_done(job, number, inc.manual).await? {
            return Ok(Done::bare(Settled::AlreadyDone));
        }
        let cancel = |why: Cancellation| Done {
            settled: Settled::Cancelled,
            record: Some(self.record(
                job,
                DeliveryStatus::Failed,
                number - 1,
                None,
                Some(LastError::Cancelled(why)),
                None,
            )),
        };
        let target = match self.current_target(job).await {
            Err(Lookup::Unusable(why)) => {
                tracing::error!(webhook_id = %job.webhook_id, error = %why, "subscription unusable; delivery cancelled");
                return Ok(cancel(Cancellation::SubscriptionUnreadable { why }));
            }
            Err(Lookup::Unavailable(e)) => return Err(DeliverError::Lookup(e)),
            Ok(None) => return Ok(cancel(Cancellation::SubscriptionDeleted)),
            Ok(Some(t)) if !t.active => return Ok(cancel(Cancellation::SubscriptionInactive)),
            Ok(Some(t)) => t,
        };
        if self.catalog.active(job.event.kind.as_str()) == Some(false) {
            return Ok(cancel(Cancellation::EventTypeInactive));
        }
        // An open circuit holds everything back but a tenant's own retry, which serves as a
        // probe of its own.
        let probe = if inc.manual {
            false
        } else {
            match self
                .breaker
                .gate(&target)
                .await
                .map_err(DeliverError::Health)?
            {
                Gate::Send { probe } => probe,
                Gate::Open(until) => {
                    let hold = self.breaker.defer_for(until, inc.deferrals);
                    let mut headers = inc.carried();
                    headers.push((
                        DEFERRALS_HEADER,
                        inc.deferrals.saturating_add(1).to_string(),
                    ));
                    self.forward(job, inc, &self.broker.topology().hold_queue(hold), headers)
                        .await?;
                    return Ok(Done::bare(Settled::Deferred));
                }
            }
        };
        // The rate limit. The probe is exempt: the circuit keeps every other request away.
        if let Some(rate) = target.rate_limit.filter(|_| !probe) {
            // A slot is taken once and kept: a message back late (a busy deliveries queue) is
            // sent late rather than sent to the end of the line again, which under a steady
            // backlog would never end.
            let slot = match inc.not_before {
                Some(slot) => slot,
                None => self
                    .throttle
                    .reserve(target.id, rate)
                    .await
                    .map_err(DeliverError::Health)?,
            };
            let wait = (slot - Utc::now()).to_std().unwrap_or_default();
            if let Some(hold) = Topology::hold_for(wait) {
                let mut headers = inc.carried();
                headers.push((
                    NOT_BEFORE_HEADER,
                    slot.to_rfc3339_opts(SecondsFormat::Micros, true),
                ));
                self.forward(job, inc, &self.broker.topology().hold_queue(hold), headers)
                    .await?;
                return Ok(Done::bare(Settled::Throttled));
            }
            tokio::time::sleep(wait).await;
        }
        self.metrics.in_flight.inc();
        let result = self
            .outbound
            .send(Attempt {
                endpoint: &target.endpoint,
                event: job.event,
                body: job.body.clone(),
                delivery_id: job.delivery_id,
                number,
                traceparent: inc.traceparent.as_deref(),
            })
            .await;
        self.metrics.in_flight.dec();
        if let Some(status) = result.status.filter(|_| waybill_trace::on()) {
            Span::current().record("http.response.status_code", i64::from(status));
        }
        self.metrics
            .attempt_seconds
            .observe(result.duration.as_secs_f64());
        if result.succeeded() {
            self.breaker.succeeded(&target).await;
            self.settled("succeeded", job, inc, &result);
            return Ok(Done {
                settled: Settled::Succeeded,
                record: Some(self.record(
                    job,
                    DeliveryStatus::Succeeded,
                    number,
                    Some(&result),
                    None,
                    None,
                )),
            });
        }
        let error = result.last_error();
        if let Some(health) = self.breaker.failed(&target, result.started_at, probe).await
            && self.breaker.due_for_disable(&health, Utc::now())
            && let Err(e) = self
                .breaker
                .disable(&target, &health, result.status, error.as_deref())
                .await
        {
            // The next failure tries again.
            tracing::warn!(webhook_id = %target.id, error = %e, "could not disable a failing subscription");
        }
        match self.schedule.after(number, result.retry_after) {
            Some(wait) => {
                let topology = self.broker.topology();
                let tier = topology.tier_for(wait).unwrap_or(wait);
                let queue = topology.retry_queue(tier);
                self.forward(
                    job,
                    inc,
                    &queue,
                    vec![(ATTEMPT_HEADER, (number + 1).to_string())],
                )
                .await?;
                Ok(Done {
                    settled: Settled::Retrying,
                    record: Some(self.record(
                        job,
                        DeliveryStatus::Pending,
                        number,
                        Some(&result),
                        error.map(LastError::Attempt),
                        Some(tier),
                    )),
                })
            }
            None => {
                let queue = self.broker.topology().dead_queue();
                let reason = format!(
                    "{number} attempts failed; last: {}",
                    error.clone().unwrap_or_default()
                );
                self.forward(
                    job,
                    inc,
                    &queue,
                    vec![
                        (ATTEMPT_HEADER, number.to_string()),
                        (DEAD_REASON_HEADER, reason),
                    ],
                )
                .await?;
                self.settled("failed", job, inc, &result);
                Ok(Done {
                    settled: Settled::Failed,
                    record: Some(self.record(
                        job,
                        DeliveryStatus::Failed,
                        number,
                        Some(&result),
                        error.map(LastError::Attempt),
                        None,
                    )),
                })
            }
        }
    }

    /// Sends a delivery of a tenant over its share to a hold queue, keeping its attempt
    /// number and any rate-limit slot; each time it is held it waits twice as long, up to the
    /// longest wait, so a big backlog does not cycle through the broker.
    async fn hold_for_fairness(&self, job: &Job<'_>, inc: &Incoming) -> Result<(), DeliverError> {
        let (first, longest) = self.fair_hold;
        let wait = first
            .saturating_mul(2u32.saturating_pow(inc.fair_holds.min(16)))
            .min(longest);
        let mut headers = inc.carried();
        headers.push((
            FAIR_HOLDS_HEADER,
            inc.fair_holds.saturating_add(1).to_string(),
        ));
        if let Some(slot) = inc.not_before {
            headers.push((
                NOT_BEFORE_HEADER,
                slot.to_rfc3339_opts(SecondsFormat::Micros, true),
            ));
        }
        let queue = self
            .broker
            .topology()
            .hold_queue(Topology::hold_at_least(wait));
        self.forward(job, inc, &queue, headers).await
    }

    /// Publishes the delivery message of `job` to `queue` (a delay tier or the dead queue) and
    /// waits for the confirm. The message carries this attempt's trace context, so the next
    /// attempt, or the one after a hold, is its child in the same trace.
    async fn forward(
        &self,
        job: &Job<'_>,
        inc: &Incoming,
        queue: &str,
        mut headers: Vec<(&str, String)>,
    ) -> Result<(), DeliverError> {
        if let Some(tp) = waybill_trace::onward(&Span::current(), inc.traceparent.as_deref()) {
            headers.push((TRACEPARENT_HEADER, tp));
        }
        let id = job.delivery_id.to_string();
        let body = job.message().map_err(DeliverError::Encode)?;
        self.broker
            .publish(&Outgoing {
                exchange: "",
                routing_key: queue,
                body: &body,
                message_id: Some(&id),
                headers,
                mandatory: true,
            })
            .await
            .map_err(DeliverError::Forward)
    }

    /// Observes the end-to-end lag of a delivery that `result` settled: from the event's
    /// acceptance to the attempt's end. A tenant's retry or recover is left out: it replays an
    /// event that may be days old, on request.
    fn settled(&self, outcome: &str, job: &Job<'_>, inc: &Incoming, result: &AttemptResult) {
        if inc.manual {
            return;
        }
        let ended = chrono::Duration::from_std(result.duration)
            .ok()
            .and_then(|d| result.started_at.checked_add_signed(d))
            .unwrap_or_else(Utc::now);
        self.metrics.settled(outcome, job.event.received_at, ended);
    }

    async fn commit(&self, record: DeliveryRecord) -> Result<(), DeliverError> {
        Ok(self.recorder.record(record).await?)
    }
}

/// What became of a delivery, and the state to record for it (none when nothing changed).
pub struct Done {
    pub settled: Settled,
    pub record: Option<DeliveryRecord>,
}

impl Done {
    fn bare(settled: Settled) -> Done {
        Done {
            settled,
            record: None,
        }
    }
}

impl Settled {
    /// The outcome as the metrics and spans name it.
    pub fn name(self) -> &'static str {
        match self {
            Settled::Succeeded => "succeeded",
            Settled::Retrying => "retrying",
            Settled::Failed => "failed",
            Settled::Cancelled => "cancelled",
            Settled::AlreadyDone => "duplicate",
            Settled::Deferred => "deferred",
            Settled::Throttled => "throttled",
            Settled::Held => "held",
        }
    }
}

/// The state of `job`'s delivery after an attempt (`result`) or without one.
pub fn delivery_record(
    job: &Job<'_>,
    status: DeliveryStatus,
    attempts: u32,
    result: Option<&AttemptResult>,
    error: Option<LastError>,
    next_wait: Option<Duration>,
    now: DateTime<Utc>,
) -> DeliveryRecord {
    DeliveryRecord {
        id: job.delivery_id,
        tenant: job.event.tenant.to_string(),
        webhook_id: job.webhook_id,
        event_id: job.event.id.clone(),
        event_type: job.event.kind.to_string(),
        status,
        attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        last_status_code: result.and_then(|r| r.status).map(i32::from),
        last_error: error,
        next_attempt_at: next_wait
            .and_then(|w| chrono::Duration::from_std(w).ok())
            .map(|w| now + w),
        at: now,
        attempt: result.map(|r| AttemptRecord {
            number: i32::try_from(attempts).unwrap_or(i32::MAX),
            started_at: r.started_at,
            duration_ms: i32::try_from(r.duration.as_millis()).unwrap_or(i32::MAX),
            status_code: r.status.map(i32::from),
            error: r.error.clone(),
            response_body: r.response_body.clone(),
        }),
    }
}

/// A delivery message as [`DeliveryMessage`] encodes it, around an event encoded already.
pub fn delivery_body(
    id: DeliveryId,
    webhook_id: WebhookId,
    event_json: &[u8],
) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = Vec::with_capacity(event_json.len() + MESSAGE_OVERHEAD);
    body.extend_from_slice(br#"{"delivery_id":"#);
    serde_json::to_writer(&mut body, &id)?;
    body.extend_from_slice(br#","webhook_id":"#);
    serde_json::to_writer(&mut body, &webhook_id)?;
    body.extend_from_slice(br#","event":"#);
    body.extend_from_slice(event_json);
    body.push(b'}');
    Ok(body)
}

/// What a delivery message adds to its event: the two ids and the JSON around them.
pub const MESSAGE_OVERHEAD: usize = 128;

impl Handler for Deliver {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let traceparent = waybill_bus::traceparent(delivery);
        let span = attempt_span(&self.broker);
        waybill_trace::set_parent(&span, traceparent.as_deref());
        let msg: DeliveryMessage = match serde_json::from_slice(&delivery.data) {
            Ok(m) => m,
            Err(e) => {
                span.record("waybill.outcome", "parked");
                return self
                    .park(delivery, format!("not a delivery message: {e}"))
                    .instrument(span)
                    .await;
            }
        };
        let number = attempt_number(delivery);
        let manual = header(delivery, MANUAL_HEADER).is_some();
        let refanout = header(delivery, REFANOUT_HEADER).is_some();
        let held = header(delivery, HELD_HEADER).is_some();
        // A first attempt fresh from the fan-out needs no look at Postgres; a redelivery, a
        // retry, a tenant's retry or a message back from a hold queue might repeat an attempt
        // already made.
        let inc = Incoming {
            number,
            recheck: delivery.redelivered || manual || number > 1 || refanout || held,
            manual,
            refanout,
            not_before: not_before(delivery),
            deferrals: number_header(delivery, DEFERRALS_HEADER).unwrap_or(0),
            fair_holds: number_header(delivery, FAIR_HOLDS_HEADER).unwrap_or(0),
            traceparent,
        };
        let job = Job {
            delivery_id: msg.delivery_id,
            webhook_id: msg.webhook_id,
            event: &msg.event,
            message: Encoded::Message(&delivery.data),
            body: Bytes::from(receiver_body(&msg.event)),
        };
        describe(&span, &job, number);
        let processed = async {
            let done = self.process(&job, &inc).await?;
            if let Some(record) = done.record {
                self.commit(record).await?;
            }
            Ok::<_, DeliverError>(done.settled)
        }
        .instrument(span.clone())
        .await;
        let _entered = span.enter();
        match processed {
            Ok(settled) => {
                let outcome = settled.name();
                span.record("waybill.outcome", outcome);
                if matches!(settled, Settled::Retrying | Settled::Failed) {
                    span.record("otel.status_code", "error");
                }
                self.metrics.delivery(msg.event.tenant.as_str(), outcome);
                Outcome::Ack
            }
            Err(e) => {
                span.record("otel.status_code", "error");
                let error = &e as &dyn std::error::Error;
                if e.is_retryable() {
                    // Kept and tried again in place once the dependency answers.
                    tracing::warn!(delivery_id = %msg.delivery_id, error, "delivery not settled; trying again");
                    Outcome::Retry
                } else {
                    // Waits in limbo and comes back, so the delivery is not lost while an
                    // operator looks, and it does not spin.
                    tracing::error!(delivery_id = %msg.delivery_id, error, "delivery not settled and will fail again; it goes to limbo");
                    Outcome::DeadLetter
                }
            }
        }
    }
}
