//! `GET /v1/deliveries/{id}`.

use actix_web::{HttpResponse, web};
use waybill_domain::DeliveryId;
use waybill_runtime::ApiError;
use waybill_store::deliveries;

use super::view::{AttemptView, DeliveryDetail, DeliveryView, EventView};
use crate::{
    access::{ReadWebhooks, Scoped},
    envelope::One,
    path_id::ResourceId,
    state::{AppState, StoreResultExt},
};

/// One delivery of the caller's tenant, with its event and every attempt.
#[utoipa::path(
    get, path = "/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = uuid::Uuid, Path, description = "Delivery id (the `waybill-delivery-id` header the receiver got)")),
    responses(
        (status = 200, body = crate::openapi::DeliveryResponse),
        (status = 404, body = crate::openapi::ErrorResponse),
    ),
    security(("bearer" = ["webhooks:read"]))
)]
pub async fn get(
    Scoped { auth, id, .. }: Scoped<ReadWebhooks, DeliveryId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let (row, event, attempts) = deliveries::find(&mut conn, auth.tenant.as_str(), id)
        .await
        .api()?
        .ok_or_else(|| id.not_found())?;
    Ok(HttpResponse::Ok().json(One {
        data: DeliveryDetail {
            delivery: DeliveryView::from(&row),
            event: event.as_ref().map(EventView::from),
            attempts: attempts.iter().map(AttemptView::from).collect(),
        },
    }))
}
