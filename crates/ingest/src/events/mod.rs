//! `POST /v1/events` and `POST /v1/events/batch`.

pub mod batch;
pub mod publish;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use waybill_domain::{
    ValidationErrors,
    event::{EVENT_FIELDS, EventEnvelope, EventInput},
};
use waybill_runtime::{ApiError, Auth, body};

use waybill_catalog::Catalog;
use waybill_publisher::EventPublisher;

/// Largest single event (its JSON, as the envelope rules count it), and largest batch body.
pub use waybill_domain::event::MAX_EVENT_BYTES;
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Most events in one batch.
pub const MAX_BATCH: usize = 500;

/// What ingest shares between requests.
#[derive(Clone)]
pub struct IngestState {
    pub catalog: Catalog,
    pub publisher: EventPublisher,
}

/// An accepted event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "order.shipped")]
    pub kind: String,
    pub client_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

impl From<&EventEnvelope> for Accepted {
    fn from(e: &EventEnvelope) -> Self {
        Accepted {
            id: e.id.clone(),
            kind: e.kind.to_string(),
            client_id: e.client_id.clone(),
            occurred_at: e.occurred_at,
            received_at: e.received_at,
        }
    }
}

/// Refuses an event whose JSON, written compactly as it goes into the envelope, is over
/// [`MAX_EVENT_BYTES`] (a body within the limit can still grow: `1e15` is written out in full),
/// so that every envelope ingest publishes fits [`waybill_domain::event::MAX_ENVELOPE_BYTES`].
/// `name` is how the answer calls the event.
pub fn check_size(event: &Map<String, Value>, name: &str) -> Result<(), ApiError> {
    let size = serde_json::to_vec(event)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if size > MAX_EVENT_BYTES {
        return Err(
            ApiError::payload_too_large(MAX_EVENT_BYTES).with_message(format!(
                "{name} is larger than the limit of {MAX_EVENT_BYTES} bytes."
            )),
        );
    }
    Ok(())
}

/// Checks one event object, recording every problem under `<prefix><field>`. `strict_types`
/// makes a wrong type a 400 (a single event) instead of a 422 on the field (inside a batch).
pub fn check_event(
    mut map: Map<String, Value>,
    auth: &Auth,
    catalog: &Catalog,
    now: DateTime<Utc>,
    prefix: &str,
    strict_types: bool,
    errors: &mut ValidationErrors,
) -> Result<Option<EventEnvelope>, ApiError> {
    body::unknown_fields(&map, EVENT_FIELDS, prefix, errors);
    map.retain(|k, v| EVENT_FIELDS.contains(&k.as_str()) && !v.is_null());
    let mut complete = true;
    for field in ["type", "data"] {
        if !map.contains_key(field) {
            errors.add(format!("{prefix}{field}"), "is required");
            complete = false;
        }
    }
    if !complete {
        return Ok(None);
    }
    let input: EventInput = match body::typed_field(map) {
        Ok(input) => input,
        Err((path, expected)) if strict_types => {
            return Err(ApiError::bad_request(format!(
                "Invalid value for `{path}`: expected {expected}."
            )));
        }
        Err((path, expected)) => {
            errors.add(format!("{prefix}{path}"), format!("must be {expected}"));
            return Ok(None);
        }
    };
    let fits = catalog.check(&input.kind, &input.data, prefix, errors);
    let envelope = input.into_envelope(
        &auth.tenant,
        now,
        || uuid::Uuid::now_v7().to_string(),
        prefix,
        errors,
    );
    Ok(envelope.filter(|_| fits))
}

/// The W3C trace context the events go to the broker with: the request span's own when traces
/// are exported (a child of the caller's), else the caller's `traceparent` unchanged when well
/// formed.
pub fn traceparent() -> Option<String> {
    waybill_trace::onward(
        &tracing::Span::current(),
        waybill_runtime::http::incoming_traceparent().as_deref(),
    )
}

/// Names the event on the request span, when traces are exported.
pub fn record_event(envelope: &EventEnvelope) {
    if waybill_trace::on() {
        let span = tracing::Span::current();
        span.record("waybill.tenant", envelope.tenant.as_str());
        span.record("waybill.event_type", envelope.kind.as_str());
        span.record("waybill.event_id", envelope.id.as_str());
    }
}

/// Maps a publish failure to the answer: the event is not safely queued, so retry.
pub fn not_queued(e: waybill_publisher::PublishError) -> ApiError {
    tracing::warn!(error = %e, "events not confirmed by the broker");
    ApiError::unavailable(
        "The broker did not confirm the event; it was not accepted. Retry.",
        5,
    )
}
