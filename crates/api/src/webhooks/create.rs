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
    openapi::{Conflict, Invalid, WebhookCreate, WebhookResponse},
    state::{State, StoreResultExt},
};

/// Creates a subscription.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body = WebhookCreate,
    responses((status = 201, description = "Created; `Location` names it.", body = WebhookResponse), Conflict, Invalid),
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
    )
    .await
    {
        Err(StoreError::Conflict) => return Err(duplicate()),
        other => other.api()?,
    };
    state.relay_wakeup.notify_one();
    tracing::info!(tenant = %auth.tenant, webhook_id = %row.id, "webhook created");
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/webhooks/{}", row.id)))
        .json(One {
            data: WebhookView::from(&row),
        }))
}

/// A fresh `whsec_` secret from 32 bytes of the OS's randomness.
pub fn generate_secret() -> Result<SigningSecret, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    Ok(SigningSecret::from_random(bytes))
}
