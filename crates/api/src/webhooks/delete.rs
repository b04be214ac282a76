//! `DELETE /v1/webhooks/{id}`.

use actix_web::HttpResponse;
use waybill_domain::WebhookId;
use waybill_runtime::Reply;
use waybill_store::webhooks;

use crate::{
    access::{Scoped, WriteWebhooks},
    openapi::{NotFound, WebhookPath},
    path_id::ResourceId,
    state::{State, StoreResultExt},
};

/// Deletes a subscription; dispatchers stop delivering to it once the change reaches them.
#[utoipa::path(
    operation_id = "delete_webhook",
    delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(WebhookPath),
    responses((status = 204, description = "Deleted."), NotFound),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn delete(
    Scoped { auth, id, .. }: Scoped<WriteWebhooks, WebhookId>,
    state: State,
) -> Reply {
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
