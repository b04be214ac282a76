//! `DELETE /v1/webhooks/{id}`.

use actix_web::{HttpResponse, web};
use waybill_domain::{Scope, WebhookId};
use waybill_runtime::{ApiError, Auth};
use waybill_store::webhooks;

use crate::{
    path_id::{PathId, ResourceId},
    state::{AppState, StoreResultExt},
};

/// Deletes a subscription; dispatchers stop delivering to it once the change reaches them.
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, body = crate::openapi::ErrorResponse),
    ),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn delete(
    auth: Auth,
    state: web::Data<AppState>,
    id: PathId<WebhookId>,
) -> Result<HttpResponse, ApiError> {
    auth.require_any(&[Scope::WebhooksWrite])?;
    let id = id.get()?;
    let mut conn = state.conn().await?;
    if !webhooks::delete(&mut conn, auth.tenant.as_str(), id)
        .await
        .api()?
    {
        return Err(id.not_found());
    }
    state.relay_wakeup.notify_one();
    tracing::info!(tenant = %auth.tenant, webhook_id = %id, "webhook deleted");
    Ok(HttpResponse::NoContent().finish())
}
