//! The OpenAPI document of `waybill-ingest`, served at `/openapi.json` and committed at
//! `docs/openapi/waybill-ingest.json` (a test fails when they drift apart).

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use waybill_runtime::openapi::{BearerAuth, ErrorBody, ErrorResponse};

use crate::routes;

/// One event. Unknown fields are refused (422).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// An active event type of the catalog.
    #[serde(rename = "type")]
    #[schema(example = "order.shipped")]
    pub kind: String,
    /// Must be valid against the type's schema (`GET /v1/events/{name}` on the api); every
    /// violation is listed under `errors.data`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    #[schema(max_length = 128)]
    pub client_id: Option<String>,
    /// Idempotency id, 1–128 of `[A-Za-z0-9._:-]`; generated when absent. The same id
    /// published twice by one tenant is delivered once.
    #[schema(max_length = 128, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub id: Option<String>,
    /// RFC 3339; default: when ingest received it.
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Up to 500 events, all or nothing.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    #[schema(min_items = 1, max_items = 500)]
    pub events: Vec<PublishEvent>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waybill ingest API",
        description = "Publishing events to Waybill. Bearer JWT with the `events:publish` scope. A 202 means the broker confirmed the event; a 503 means it was not accepted and should be retried with the same `id`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "events", description = "Publishing events"))
)]
struct ApiDoc;

/// The document as pretty JSON, with a trailing newline: [`ApiDoc`] with every operation
/// [`routes::configure`] registers.
pub fn document() -> String {
    waybill_runtime::openapi::render(waybill_runtime::openapi::collect(
        ApiDoc::openapi(),
        routes::configure,
    ))
}
