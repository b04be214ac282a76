//! `GET /v1/webhooks/{id}/secret` and `POST /v1/webhooks/{id}/secret/rotate`.

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use waybill_domain::{SigningSecret, ValidationErrors, WebhookId};
use waybill_runtime::{
    ApiError, Reply,
    body::{self, Body},
};
use waybill_store::webhooks;

use super::{create::generate_secret, find_own};
use crate::{
    access::{Scoped, WriteWebhooks},
    envelope::One,
    openapi::{Invalid, NotFound, RotateSecret, SecretResponse, WebhookPath},
    path_id::ResourceId,
    state::{State, StoreResultExt},
};

/// Longest grace period of a rotation: 7 days.
pub const MAX_GRACE_SECONDS: i64 = 604_800;
/// Default grace period of a rotation: 1 day.
pub const DEFAULT_GRACE_SECONDS: i64 = 86_400;

/// A signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
    /// After a rotation: until when the previous secret still signs (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// The current signing secret, in clear.
#[utoipa::path(
    operation_id = "get_webhook_secret",
    get, path = "/v1/webhooks/{id}/secret", tag = "webhooks", params(WebhookPath),
    responses((status = 200, body = SecretResponse), NotFound),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn get_secret(
    Scoped { auth, id, .. }: Scoped<WriteWebhooks, WebhookId>,
    state: State,
) -> Reply {
    let mut conn = state.conn().await?;
    let secret = webhooks::current_secret(&mut conn, &state.cipher, auth.tenant.as_str(), id)
        .await
        .api()?
        .ok_or_else(|| id.not_found())?;
    Ok(HttpResponse::Ok().json(One {
        data: SecretView {
            secret,
            previous_secret_expires_at: None,
        },
    }))
}

#[derive(Deserialize)]
struct RotateBody {
    secret: Option<String>,
    grace_period_seconds: Option<i64>,
}

/// Replaces the signing secret; the old one keeps signing during the grace period.
#[utoipa::path(
    operation_id = "rotate_webhook_secret",
    post, path = "/v1/webhooks/{id}/secret/rotate", tag = "webhooks", params(WebhookPath),
    request_body(content = Option<RotateSecret>, description = "Optional; an empty body generates a secret with the default grace period."),
    responses((status = 200, body = SecretResponse), NotFound, Invalid),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn rotate(
    Scoped { auth, id, .. }: Scoped<WriteWebhooks, WebhookId>,
    state: State,
    body: Body,
) -> Reply {
    let mut conn = state.conn().await?;
    // A missing webhook is a 404 whatever the body holds.
    find_own(&mut conn, &auth, id).await?;
    let mut errors = ValidationErrors::new();
    let mut map = body.json_object(true)?;
    body::unknown_fields(&map, &["secret", "grace_period_seconds"], "", &mut errors);
    map.retain(|_, v| !v.is_null());
    let input: RotateBody = body::typed(map)?;
    let grace = input.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        errors.add(
            "grace_period_seconds",
            format!("must be from 0 to {MAX_GRACE_SECONDS}"),
        );
    }
    let secret = match input.secret {
        Some(raw) => SigningSecret::parse(&raw)
            .map_err(|e| errors.add("secret", e))
            .ok(),
        None => Some(generate_secret()?),
    };
    let (Some(secret), true) = (secret, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let expires = webhooks::rotate_secret(
        &mut conn,
        &state.cipher,
        auth.tenant.as_str(),
        id,
        &secret,
        chrono::Duration::seconds(grace),
    )
    .await
    .api()?
    .ok_or_else(|| id.not_found())?;
    state.relay_wakeup.notify_one();
    tracing::info!(tenant = %auth.tenant, webhook_id = %id, grace, "webhook secret rotated");
    Ok(HttpResponse::Ok().json(One {
        data: SecretView {
            secret: secret.expose().to_owned(),
            previous_secret_expires_at: (grace > 0).then_some(expires),
        },
    }))
}
