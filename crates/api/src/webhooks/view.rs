//! How a subscription looks in responses: credentials always masked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use waybill_domain::WebhookId;
use waybill_store::webhooks::WebhookRow;

/// What stands in for every secret, password and token.
pub const MASK: &str = "••••••••";

/// A webhook subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    #[schema(value_type = uuid::Uuid)]
    pub id: WebhookId,
    pub name: String,
    pub description: String,
    /// Receiver URL, normalised (e.g. a bare host gains a trailing `/`).
    pub url: String,
    #[schema(example = "POST")]
    pub method: String,
    #[schema(example = json!(["order.shipped", "stock.*"]))]
    pub events: Vec<String>,
    pub client_ids: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub auth: AuthView,
    #[schema(example = "••••••••")]
    pub secret: &'static str,
    pub active: bool,
    /// Why the platform turned the subscription off (its receiver kept failing); cleared when it
    /// is turned back on.
    pub disabled_reason: Option<String>,
    /// Most deliveries per second sent to the receiver, over every dispatcher; `null`: no limit.
    #[schema(example = 50, minimum = 1, maximum = 10000)]
    pub rate_limit: Option<u32>,
    /// The payload filter as stored; `null`: every event that `events` and `client_ids` select
    /// is delivered.
    #[schema(value_type = Option<crate::openapi::FilterDoc>)]
    pub filter: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Receiver authentication, credentials masked.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AuthView {
    None,
    Basic {
        username: String,
        password: &'static str,
    },
    Token {
        header: String,
        token: &'static str,
    },
}

impl From<&WebhookRow> for WebhookView {
    fn from(r: &WebhookRow) -> Self {
        let auth = match r.auth_type.as_str() {
            "basic" => AuthView::Basic {
                username: r.auth_username.clone().unwrap_or_default(),
                password: MASK,
            },
            "token" => AuthView::Token {
                header: r.auth_header.clone().unwrap_or_default(),
                token: MASK,
            },
            _ => AuthView::None,
        };
        WebhookView {
            id: r.id,
            name: r.name.clone(),
            description: r.description.clone(),
            url: r.url.clone(),
            method: r.method.clone(),
            events: r.events.clone(),
            client_ids: r.client_ids.clone(),
            headers: r.header_map(),
            auth,
            secret: MASK,
            active: r.active,
            disabled_reason: r.disabled_reason.clone(),
            rate_limit: r.rate_limit.and_then(|n| u32::try_from(n).ok()),
            filter: r.filter.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}
