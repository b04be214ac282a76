//! The OpenAPI document of `waybill-api`, generated from the handlers and served at
//! `/openapi.json`. A copy is committed at `docs/openapi/waybill-api.json`; a test fails when the
//! two drift apart.

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{events, webhooks};

/// Receiver authentication as sent in a request.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
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

/// Body of `POST /v1/webhooks`. Unknown fields are refused (422).
#[derive(Serialize, ToSchema)]
pub struct WebhookCreate {
    /// Absolute `https` URL (plain `http` only where the operator allows it), ≤ 2048 characters.
    #[schema(example = "https://wms.example.com/hooks/waybill")]
    pub url: String,
    /// 1–100 distinct entries: an active event type, `<group>.*` or `*`.
    #[schema(example = json!(["order.shipped", "stock.*"]))]
    pub events: Vec<String>,
    /// ≤ 255 characters, default "".
    pub name: Option<String>,
    /// ≤ 1000 characters, default "".
    pub description: Option<String>,
    /// `POST` (default) or `PUT`.
    pub method: Option<String>,
    /// ≤ 1000 client ids of 1–128 characters; empty (default) means every client.
    pub client_ids: Option<Vec<String>>,
    /// ≤ 20 custom headers; reserved names are refused.
    pub headers: Option<BTreeMap<String, String>>,
    pub auth: Option<AuthRequest>,
    /// 8–128 printable ASCII characters; `whsec_` + base64 of 24–64 bytes is decoded. Generated when absent.
    pub secret: Option<String>,
    /// Default `true`.
    pub active: Option<bool>,
}

/// Body of `PATCH /v1/webhooks/{id}`: any create field but `secret`; `headers` and `auth`
/// replace the whole value; `null` is refused.
#[derive(Serialize, ToSchema)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub method: Option<String>,
    pub client_ids: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub auth: Option<AuthRequest>,
    /// Setting `true` also clears `disabled_reason`.
    pub active: Option<bool>,
}

/// Body of `POST /v1/webhooks/{id}/secret/rotate`.
#[derive(Serialize, ToSchema)]
pub struct RotateSecret {
    /// The new secret (same rules as on create); generated when absent.
    pub secret: Option<String>,
    /// 0–604800, default 86400: how long the old secret keeps signing.
    pub grace_period_seconds: Option<i64>,
}

/// Body of `PATCH /v1/events/{name}`.
#[derive(Serialize, ToSchema)]
pub struct EventTypeUpdate {
    pub active: Option<bool>,
    /// ≤ 1000 characters; survives restarts.
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

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `validation_failed`, `rate_limited`,
    /// `unavailable` or `internal`.
    #[schema(example = "validation_failed")]
    pub code: String,
    #[schema(example = "The given data was invalid.")]
    pub message: String,
    /// With 422 only: messages by field.
    #[schema(example = json!({"url": ["must use https"]}))]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waybill control plane API",
        description = "Event catalog and webhook subscriptions of Waybill. Bearer JWT (HS256) with claims `tenant`, `scopes`, `exp`.",
        license(name = "Apache-2.0")
    ),
    paths(
        events::list::list, events::get::get, events::update::update,
        webhooks::create::create, webhooks::list::list, webhooks::get::get, webhooks::update::update,
        webhooks::delete::delete, webhooks::secret::get_secret, webhooks::secret::rotate,
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "events", description = "The event catalog"), (name = "webhooks", description = "Webhook subscriptions"))
)]
struct ApiDoc;

/// The document as pretty JSON, with a trailing newline.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /openapi.json`.
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}
