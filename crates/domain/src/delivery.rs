//! The delivery message: one per (event, matching subscription), on `<prefix>.deliveries` and
//! its retry queues. The attempt number travels in the `waybill-attempt` header, not here, so
//! the body of a message never changes between attempts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    event::EventEnvelope,
    ids::{DeliveryId, WebhookId},
};

/// Header with the 1-based number of the attempt the message is for.
pub const ATTEMPT_HEADER: &str = "waybill-attempt";

/// Header of a delivery message a tenant asked for (a retry or a recover): the attempt is made
/// whatever the delivery's status.
pub const MANUAL_HEADER: &str = "waybill-manual";

/// A delivery owed to one subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryMessage {
    /// Stable for the (event, subscription) pair, so a repeated fan-out does not double it.
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event: EventEnvelope,
}

/// The delivery id of `event_id` of `tenant` for `webhook_id`: a name-based UUID (v5), the same
/// every time the pair is fanned out.
pub fn delivery_id(tenant: &str, event_id: &str, webhook_id: WebhookId) -> DeliveryId {
    DeliveryId::from_uuid(Uuid::new_v5(
        &webhook_id.as_uuid(),
        format!("{tenant}\u{1f}{event_id}").as_bytes(),
    ))
}

/// Where a delivery stands: `pending` until it succeeds or is given up (`failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

/// A status name that is not one of [`DeliveryStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery status {0:?}")]
pub struct UnknownStatus(pub String);

impl DeliveryStatus {
    /// Every status, in the order the API lists them.
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
    ];

    /// The name on the wire and in Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = UnknownStatus;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

/// Why a delivery was given up without an attempt: nothing it could be sent to is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    SubscriptionDeleted,
    SubscriptionInactive,
    /// The subscription's stored state cannot be used (it does not decrypt).
    SubscriptionUnreadable {
        why: String,
    },
    EventTypeInactive,
}

impl std::fmt::Display for Cancellation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cancellation::SubscriptionDeleted => f.write_str("the subscription was deleted"),
            Cancellation::SubscriptionInactive => f.write_str("the subscription is inactive"),
            Cancellation::SubscriptionUnreadable { why } => {
                write!(f, "the subscription cannot be read ({why})")
            }
            Cancellation::EventTypeInactive => f.write_str("the event type is inactive"),
        }
    }
}

/// The last thing that went wrong with a delivery, as the delivery log's `last_error` shows it:
/// an attempt's error as is, a cancellation as `cancelled: <why>` (the contract's wording).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastError {
    Attempt(String),
    Cancelled(Cancellation),
}

impl std::fmt::Display for LastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastError::Attempt(e) => f.write_str(e),
            LastError::Cancelled(why) => write!(f, "cancelled: {why}"),
        }
    }
}

/// The JSON body a receiver gets for an event.
#[derive(Debug, Serialize)]
struct ReceiverBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: DateTime<Utc>,
    client_id: Option<&'a str>,
    data: &'a Map<String, Value>,
}

/// The body of every request delivering `event`: `{id, type, timestamp, client_id, data}`.
pub fn receiver_body(event: &EventEnvelope) -> Vec<u8> {
    let body = ReceiverBody {
        id: &event.id,
        kind: event.kind.as_str(),
        timestamp: event.occurred_at,
        client_id: event.client_id.as_deref(),
        data: &event.data,
    };
    // Serialising strings, a timestamp and a JSON map cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_body_has_the_contract_fields() {
        let event: EventEnvelope = serde_json::from_value(serde_json::json!({
            "id": "e1", "tenant": "acme", "type": "order.shipped", "client_id": null,
            "occurred_at": "2026-01-10T10:30:00Z", "received_at": "2026-01-10T10:30:01Z",
            "data": {"order_id": "o1"}
        }))
        .unwrap();
        let body: Value = serde_json::from_slice(&receiver_body(&event)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "e1", "type": "order.shipped",
                "timestamp": "2026-01-10T10:30:00Z", "client_id": null, "data": {"order_id": "o1"}})
        );
    }

    #[test]
    fn statuses_and_errors_keep_their_wire_names() {
        for s in DeliveryStatus::ALL {
            assert_eq!(s.as_str().parse::<DeliveryStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert!("cancelled".parse::<DeliveryStatus>().is_err());
        assert_eq!(
            LastError::Cancelled(Cancellation::SubscriptionDeleted).to_string(),
            "cancelled: the subscription was deleted"
        );
        assert_eq!(
            LastError::Attempt("HTTP 500".into()).to_string(),
            "HTTP 500"
        );
    }

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let w = WebhookId::from_uuid(Uuid::from_u128(7));
        assert_eq!(delivery_id("acme", "e1", w), delivery_id("acme", "e1", w));
        assert_ne!(delivery_id("acme", "e1", w), delivery_id("acme", "e2", w));
        assert_ne!(delivery_id("acme", "e1", w), delivery_id("globex", "e1", w));
        assert_ne!(
            delivery_id("acme", "e1", w),
            delivery_id("acme", "e1", WebhookId::from_uuid(Uuid::from_u128(8)))
        );
    }
}
