//! The OpenAPI document of `waybill-api`, generated from the handlers and served at
//! `/openapi.json`. A copy is committed at `docs/openapi/waybill-api.json`; a test fails when the
//! two drift apart.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
pub use waybill_runtime::openapi::{BearerAuth, ErrorBody, ErrorResponse};

use crate::{deliveries, events, routes, webhooks};

/// Receiver authentication as sent in a request; each type takes only its own fields.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthRequest {
    None,
    Basic {
        /// 1–255 characters, no `:`.
        username: String,
        /// 1–255 characters.
        password: String,
    },
    Token {
        /// Header to send the token in; default `Authorization`.
        header: Option<String>,
        /// 1–4096 characters, sent verbatim as the header's value.
        token: String,
    },
}

/// HTTP method of deliveries.
#[derive(Serialize, ToSchema)]
pub enum Method {
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

/// Body of `POST /v1/webhooks`. Unknown fields are refused (422).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreate {
    /// Absolute `https` URL (plain `http` only where the operator allows it), ≤ 2048 characters.
    #[schema(example = "https://wms.example.com/hooks/waybill", max_length = 2048)]
    pub url: String,
    /// 1–100 distinct entries: an active event type, `<group>.*` or `*`.
    #[schema(example = json!(["order.shipped", "stock.*"]), min_items = 1, max_items = 100)]
    pub events: Vec<String>,
    /// Default "".
    #[schema(max_length = 255)]
    pub name: Option<String>,
    /// Default "".
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Default `POST`.
    pub method: Option<Method>,
    /// Client ids of 1–128 characters; empty (default) means every client.
    #[schema(max_items = 1000)]
    pub client_ids: Option<Vec<String>>,
    /// At most 20 custom headers: RFC 9110 token names, values of visible ASCII and spaces
    /// (≤ 1024); reserved names are refused.
    pub headers: Option<BTreeMap<String, String>>,
    pub auth: Option<AuthRequest>,
    /// Printable ASCII; `whsec_` + base64 of 24–64 bytes is decoded. Generated when absent.
    #[schema(min_length = 8, max_length = 128)]
    pub secret: Option<String>,
    /// Default `true`.
    pub active: Option<bool>,
    /// Most deliveries per second sent to the receiver, enforced over every dispatcher replica;
    /// deliveries over it wait their turn. Default `null`: no limit.
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit: Option<u32>,
}

/// Body of `PATCH /v1/webhooks/{id}`: any create field but `secret`; `headers` and `auth`
/// replace the whole value; `null` is refused except for `rate_limit`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdate {
    #[schema(nullable = false, max_length = 2048)]
    pub url: Option<String>,
    #[schema(nullable = false, min_items = 1, max_items = 100)]
    pub events: Option<Vec<String>>,
    #[schema(nullable = false, max_length = 255)]
    pub name: Option<String>,
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    #[schema(nullable = false)]
    pub method: Option<Method>,
    #[schema(nullable = false, max_items = 1000)]
    pub client_ids: Option<Vec<String>>,
    /// At most 20; replaces all custom headers.
    #[schema(nullable = false)]
    pub headers: Option<BTreeMap<String, String>>,
    #[schema(nullable = false)]
    pub auth: Option<AuthRequest>,
    /// Setting `true` also clears `disabled_reason` and closes the circuit breaker.
    #[schema(nullable = false)]
    pub active: Option<bool>,
    /// 1–10000 deliveries per second; `null` removes the limit.
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit: Option<u32>,
}

/// Body of `POST /v1/webhooks/{id}/secret/rotate`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret (same rules as on create); generated when absent.
    #[schema(min_length = 8, max_length = 128)]
    pub secret: Option<String>,
    /// Default 86400: how long the old secrets keep signing; 0 revokes them all at once.
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_period_seconds: Option<i64>,
}

/// Body of `PATCH /v1/events/{name}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeUpdate {
    #[schema(nullable = false)]
    pub active: Option<bool>,
    /// Survives restarts.
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookResponse {
    pub data: webhooks::view::WebhookView,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<webhooks::view::WebhookView>,
    /// Total matching, over all pages.
    pub count: i64,
    /// Relative URL of the next page, or null.
    pub next: Option<String>,
    /// Relative URL of the previous page, or null.
    pub previous: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SecretResponse {
    pub data: webhooks::secret::SecretView,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeResponse {
    pub data: events::view::EventTypeView,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    pub data: Vec<events::view::EventTypeView>,
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryResponse {
    pub data: deliveries::view::DeliveryDetail,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<deliveries::view::DeliveryView>,
    /// Total matching, over all pages.
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryViewResponse {
    pub data: deliveries::view::DeliveryView,
}

#[derive(Serialize, ToSchema)]
pub struct QueuedResponse {
    pub data: deliveries::replay::Queued,
}

#[derive(Serialize, ToSchema)]
pub struct TestOutcomeResponse {
    pub data: webhooks::test::TestOutcome,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waybill control plane API",
        description = "Event catalog, webhook subscriptions and delivery log of Waybill. Bearer JWT (HS256) with claims `tenant`, `scopes`, `exp`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "events", description = "The event catalog"), (name = "webhooks", description = "Webhook subscriptions"), (name = "deliveries", description = "The delivery log"))
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
