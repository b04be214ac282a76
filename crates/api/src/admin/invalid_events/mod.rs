//! `/v1/admin/invalid-events`: the events the dispatcher refused (not an envelope, a broken
//! envelope rule, an unknown type, data failing its type's schema), as records in Postgres.
//! Re-driving one publishes it again, unchanged, to the events exchange and removes the record;
//! refused again, it is recorded again (under the same id, which is derived from the message).

pub mod delete;
pub mod list;
pub mod redrive;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use waybill_domain::invalid_event::{EXCERPT_BYTES, excerpt};
use waybill_runtime::ApiError;
use waybill_store::invalid_events::InvalidEventRow;

use crate::path_id::ResourceId;

/// The id of a refused event's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEventId(pub Uuid);

impl FromStr for InvalidEventId {
    type Err = uuid::Error;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(raw).map(Self)
    }
}

impl std::fmt::Display for InvalidEventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResourceId for InvalidEventId {
    fn malformed() -> ApiError {
        ApiError::not_found("There is no invalid event with that id.")
    }

    fn not_found(self) -> ApiError {
        ApiError::not_found(format!("There is no invalid event {self}."))
    }
}

/// A message the dispatcher refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidEventView {
    /// Derived from the message (routing key, message id, body): the same message refused
    /// twice is one record.
    pub id: Uuid,
    /// The envelope's `tenant`, when the body is JSON with a valid one.
    pub tenant: Option<String>,
    /// The routing key it was published with (the event type, for a well-formed event).
    #[schema(example = "order.teleported")]
    pub routing_key: String,
    /// The AMQP `message_id` it was published with (the event id, for a well-formed event).
    pub message_id: Option<String>,
    /// Why the dispatcher refused it; the latest reason when it was refused more than once.
    #[schema(example = "there is no event type `order.teleported`")]
    pub reason: String,
    /// When the dispatcher (last) refused it.
    pub received_at: DateTime<Utc>,
    /// The message body as text (bytes that are not UTF-8 shown as U+FFFD), at most its first
    /// 16 KiB.
    pub body: String,
    /// Whether `body` shows less than the whole message.
    pub body_truncated: bool,
    /// Size of the whole message body in bytes.
    pub body_bytes: i32,
    /// Whether the whole body is kept, so the event can be re-driven. A body larger than any
    /// event ingest publishes (256 KiB plus the envelope) keeps only its first 16 KiB.
    pub redrivable: bool,
}

impl From<&InvalidEventRow> for InvalidEventView {
    fn from(r: &InvalidEventRow) -> Self {
        let (body, cut) = excerpt(&r.body, EXCERPT_BYTES);
        Self {
            id: r.id,
            tenant: r.tenant.clone(),
            routing_key: r.routing_key.clone(),
            message_id: r.message_id.clone(),
            reason: r.reason.clone(),
            received_at: r.received_at,
            body,
            body_truncated: cut || r.body_truncated,
            body_bytes: r.body_bytes,
            redrivable: !r.body_truncated,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InvalidEventResponse {
    pub data: InvalidEventView,
}

#[derive(Serialize, ToSchema)]
pub struct InvalidEventList {
    pub data: Vec<InvalidEventView>,
    /// Total matching, over all pages.
    pub count: i64,
    /// Relative URL of the next page, or null.
    pub next: Option<String>,
    /// Relative URL of the previous page, or null.
    pub previous: Option<String>,
}

/// Path of `/v1/admin/invalid-events/{id}` and the operations under it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the document only; the handlers take the id from `access::Scoped`.
pub struct InvalidEventPath {
    /// Invalid event id
    id: Uuid,
}
