//! `GET /v1/webhooks/{id}`.

use actix_web::{HttpResponse, web};
use waybill_domain::WebhookId;
use waybill_runtime::ApiError;

use super::{find_own, view::WebhookView};
use crate::{
    access::{ReadWebhooks, Scoped},
    envelope::One,
    state::AppState,
};

/// One subscription of the caller's tenant.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(crate::openapi::WebhookPath),
    responses(
        (status = 200, body = crate::openapi::WebhookResponse),
        (status = 404, body = crate::openapi::ErrorResponse),
    ),
    security(("bearer" = ["webhooks:read"]))
)]
pub async fn get(
    Scoped { auth, id, .. }: Scoped<ReadWebhooks, WebhookId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let row = find_own(&mut conn, &auth, id).await?;
    Ok(HttpResponse::Ok().json(One {
        data: WebhookView::from(&row),
    }))
}
