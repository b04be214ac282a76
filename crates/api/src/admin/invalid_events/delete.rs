//! `DELETE /v1/admin/invalid-events/{id}`.

use actix_web::HttpResponse;
use waybill_runtime::Reply;
use waybill_store::invalid_events;

use super::{InvalidEventId, InvalidEventPath};
use crate::{
    access::{AdminOnly, Scoped},
    openapi::NotFound,
    path_id::ResourceId,
    state::{State, StoreResultExt},
};

/// Deletes the record of a refused event; the event itself is gone for good.
#[utoipa::path(
    operation_id = "delete_invalid_event",
    delete, path = "/v1/admin/invalid-events/{id}", tag = "admin", params(InvalidEventPath),
    responses((status = 204, description = "Deleted."), NotFound),
    security(("bearer" = ["admin"]))
)]
pub async fn delete(
    Scoped { auth, id, .. }: Scoped<AdminOnly, InvalidEventId>,
    state: State,
) -> Reply {
    let mut conn = state.conn().await?;
    if !invalid_events::delete(&mut conn, id.0).await.api()? {
        return Err(id.not_found());
    }
    tracing::info!(invalid_event_id = %id, by_tenant = %auth.tenant, "invalid event deleted");
    Ok(HttpResponse::NoContent().finish())
}
