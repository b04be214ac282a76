//! `GET /v1/webhooks/{id}`.

use actix_web::HttpResponse;
use waybill_domain::WebhookId;
use waybill_runtime::Reply;

use super::{find_own, view::WebhookView};
use crate::{
    access::{ReadWebhooks, Scoped},
    envelope::One,
    openapi::{NotFound, WebhookPath, WebhookResponse},
    state::State,
};

/// One subscription of the caller's tenant.
#[utoipa::path(
    operation_id = "get_webhook",
    get, path = "/v1/webhooks/{id}", tag = "webhooks", params(WebhookPath),
    responses((status = 200, body = WebhookResponse), NotFound),
    security(("bearer" = ["webhooks:read"]))
)]
pub async fn get(Scoped { auth, id, .. }: Scoped<ReadWebhooks, WebhookId>, state: State) -> Reply {
    let mut conn = state.conn().await?;
    let row = find_own(&mut conn, &auth, id).await?;
    Ok(HttpResponse::Ok().json(One {
        data: WebhookView::from(&row),
    }))
}
