//! `GET /v1/events/{name}`.

use actix_web::{HttpResponse, web};
use waybill_domain::EventTypeName;
use waybill_runtime::ApiError;
use waybill_store::event_types;

use super::{not_found, view::EventTypeView};
use crate::{
    access::{Caller, ReadCatalog},
    envelope::One,
    state::{AppState, StoreResultExt},
};

/// One event type with its schema.
#[utoipa::path(
    get, path = "/v1/events/{name}", tag = "events",
    params(crate::openapi::EventTypePath),
    responses(
        (status = 200, body = crate::openapi::EventTypeResponse),
        (status = 404, body = crate::openapi::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    _auth: Caller<ReadCatalog>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if EventTypeName::parse(&path).is_err() {
        return Err(not_found(&path));
    }
    let mut conn = state.conn().await?;
    let row = event_types::find(&mut conn, &path)
        .await
        .api()?
        .ok_or_else(|| not_found(&path))?;
    Ok(HttpResponse::Ok().json(One {
        data: EventTypeView::from(row),
    }))
}
