//! How deliveries, their attempts and their event look in responses.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use waybill_domain::{DeliveryId, WebhookId, delivery::DeliveryStatus};
use waybill_store::deliveries::{AttemptRow, DeliveryRow, EventRow};

/// One delivery of one event to one subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    #[schema(value_type = uuid::Uuid)]
    pub id: DeliveryId,
    #[schema(value_type = uuid::Uuid)]
    pub webhook_id: WebhookId,
    pub event_id: String,
    #[schema(example = "order.shipped")]
    pub event_type: String,
    /// `pending`, `succeeded` or `failed` (a delivery cancelled because its subscription or
    /// event type was deleted or deactivated is `failed` with `last_error` starting `cancelled:`).
    #[schema(value_type = String, example = "succeeded")]
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// When the next attempt is due, while `pending` after a failure.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&DeliveryRow> for DeliveryView {
    fn from(r: &DeliveryRow) -> Self {
        Self {
            id: r.id,
            webhook_id: r.webhook_id,
            event_id: r.event_id.clone(),
            event_type: r.event_type.clone(),
            status: r.status,
            attempts: r.attempts,
            last_status_code: r.last_status_code,
            last_error: r.last_error.clone(),
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The event as the receiver got it, with when Waybill took it in.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "order.shipped")]
    pub kind: String,
    /// The event's `occurred_at`.
    pub timestamp: DateTime<Utc>,
    pub client_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

impl From<&EventRow> for EventView {
    fn from(e: &EventRow) -> Self {
        Self {
            id: e.id.clone(),
            kind: e.event_type.clone(),
            timestamp: e.occurred_at,
            client_id: e.client_id.clone(),
            data: e.data.clone(),
            received_at: e.received_at,
        }
    }
}

/// One HTTP attempt (or a refusal to connect, with no status code).
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// 1-based, as in the `waybill-attempt` header the receiver got.
    pub number: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
}

impl From<&AttemptRow> for AttemptView {
    fn from(a: &AttemptRow) -> Self {
        Self {
            number: a.number,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            error: a.error.clone(),
            response_body: a.response_body.clone(),
        }
    }
}

/// A delivery with its event and every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// Null if the event's record is gone.
    pub event: Option<EventView>,
    pub attempts: Vec<AttemptView>,
}
