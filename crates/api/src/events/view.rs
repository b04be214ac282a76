//! How an event type looks in responses.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use waybill_store::event_types::EventTypeRow;

/// An event type of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    #[schema(example = "order.shipped")]
    pub name: String,
    #[schema(example = "order")]
    pub group: String,
    #[schema(example = "shipped")]
    pub action: String,
    pub description: String,
    pub active: bool,
    /// JSON Schema (draft 2020-12) of the event's `data`.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EventTypeRow> for EventTypeView {
    fn from(r: EventTypeRow) -> Self {
        Self {
            name: r.name,
            group: r.group_name,
            action: r.action,
            description: r.description,
            active: r.active,
            schema: r.schema,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}
