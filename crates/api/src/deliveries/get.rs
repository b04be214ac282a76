//! `GET /v1/deliveries/{id}`.

use actix_web::{HttpResponse, web};
use uuid::Uuid;
use waybill_domain::Scope;
use waybill_runtime::{ApiError, Auth};
use waybill_store::deliveries;

use super::view::{AttemptView, DeliveryDetail, DeliveryView, EventView};
use crate::{
    envelope::One,
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
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth.require_any(&[Scope::WebhooksRead, Scope::WebhooksWrite])?;
    let missing = || ApiError::not_found("There is no delivery with that id.");
    let id = Uuid::parse_str(&path).map_err(|_| missing())?;
    let mut conn = state.conn().await?;
    let (row, event, attempts) = deliveries::find(&mut conn, auth.tenant.as_str(), id)
        .await
        .api()?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(One {
        data: DeliveryDetail {
            delivery: DeliveryView::from(&row),
            event: event.as_ref().map(EventView::from),
            attempts: attempts.iter().map(AttemptView::from).collect(),
        },
    }))
}
