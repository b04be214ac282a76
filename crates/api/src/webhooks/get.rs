//! `GET /v1/webhooks/{id}`.

use actix_web::{HttpResponse, web};
use waybill_domain::{Scope, WebhookId};
use waybill_runtime::{ApiError, Auth};

use super::{find_own, view::WebhookView};
use crate::{envelope::One, path_id::PathId, state::AppState};

/// One subscription of the caller's tenant.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Webhook id")),
    responses(
        (status = 200, body = crate::openapi::WebhookResponse),
        (status = 404, body = crate::openapi::ErrorResponse),
    ),
    security(("bearer" = ["webhooks:read"]))
)]
pub async fn get(
    auth: Auth,
    state: web::Data<AppState>,
    id: PathId<WebhookId>,
) -> Result<HttpResponse, ApiError> {
    auth.require_any(&[Scope::WebhooksRead, Scope::WebhooksWrite])?;
    let id = id.get()?;
    let mut conn = state.conn().await?;
    let row = find_own(&mut conn, &auth, id).await?;
    Ok(HttpResponse::Ok().json(One {
        data: WebhookView::from(&row),
    }))
}
