//! `GET /v1/deliveries/{id}`.

use actix_web::HttpResponse;
use waybill_domain::DeliveryId;
use waybill_runtime::Reply;
use waybill_store::deliveries;

use super::view::{AttemptView, DeliveryDetail, DeliveryView, EventView};
use crate::{
    access::{ReadWebhooks, Scoped},
    envelope::One,
    openapi::{DeliveryResponse, NotFound},
    path_id::ResourceId,
    state::{State, StoreResultExt},
};

/// One delivery of the caller's tenant, with its event and every attempt.
#[utoipa::path(
    operation_id = "get_delivery",
    get, path = "/v1/deliveries/{id}", tag = "deliveries", params(("id" = uuid::Uuid, Path, description = "Delivery id (the `waybill-delivery-id` header the receiver got)")),
    responses((status = 200, body = DeliveryResponse), NotFound),
    security(("bearer" = ["webhooks:read"]))
)]
pub async fn get(Scoped { auth, id, .. }: Scoped<ReadWebhooks, DeliveryId>, state: State) -> Reply {
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
