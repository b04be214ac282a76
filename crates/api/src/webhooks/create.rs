//! `POST /v1/webhooks`.

use actix_web::{HttpResponse, http::header};
use waybill_domain::{SigningSecret, WebhookSettings, subscription::RuleContext};
use waybill_runtime::{ApiError, Reply, body::Body};
use waybill_store::{StoreError, webhooks};

use super::{
    duplicate,
    input::{self, Mode},
    view::WebhookView,
};
use crate::{
    access::{Caller, WriteWebhooks},
    envelope::One,
    openapi::{ErrorResponse, Invalid, WebhookCreate, WebhookResponse},
    state::{State, store_error},
};

/// Creates a subscription.
#[utoipa::path(
    operation_id = "create_webhook",
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body = WebhookCreate,
    responses(
        (status = 201, description = "Created; `Location` names it.", body = WebhookResponse),
        (status = 409, description = "The tenant already has a subscription with this `url`, `method` and set of `events`, or already has as many subscriptions as it may (`limits.max_webhooks_per_tenant`, 1,000 by default; the message names the number).", body = ErrorResponse),
        Invalid,
    ),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn create(auth: Caller<WriteWebhooks>, state: State, body: Body) -> Reply {
    let parsed = input::parse(body.json_object(false)?, Mode::Create)?;
    let mut errors = parsed.errors;
    let mut conn = state.conn().await?;
    let catalog = state.catalog_index(&mut conn).await?;
    let settings = WebhookSettings::build(
        parsed.input,
        None,
        RuleContext {
            catalog: &catalog,
            urls: &state.urls,
        },
    )
    .map_err(|e| errors.merge(e))
    .ok();
    let secret = match parsed.secret {
        Some(raw) => SigningSecret::parse(&raw)
            .map_err(|e| errors.add("secret", e))
            .ok(),
        None => Some(generate_secret()?),
    };
    let (Some(settings), Some(secret), true) = (settings, secret, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let row = match webhooks::create(
        &mut conn,
        &state.cipher,
        auth.tenant.as_str(),
        &settings,
        &secret,
        state.max_webhooks_per_tenant,
    )
    .await
    {
        Err(StoreError::Conflict) => return Err(duplicate()),
        Ok(None) => return Err(at_limit(state.max_webhooks_per_tenant)),
        Ok(Some(row)) => row,
        Err(e) => return Err(store_error(e)),
    };
    state.relay_wakeup.notify_one();
    tracing::info!(tenant = %auth.tenant, webhook_id = %row.id, "webhook created");
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/webhooks/{}", row.id)))
        .json(One {
            data: WebhookView::from(&row),
        }))
}

/// The answer when the tenant already has as many subscriptions as it may.
fn at_limit(max: u32) -> ApiError {
    ApiError::conflict(format!(
        "This tenant already has {max} subscriptions, the most it may have; delete one to create another."
    ))
}

/// A fresh `whsec_` secret from 32 bytes of the OS's randomness.
pub fn generate_secret() -> Result<SigningSecret, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    Ok(SigningSecret::from_random(bytes))
}
