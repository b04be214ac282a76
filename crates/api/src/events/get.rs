//! `GET /v1/events/{name}`.

use actix_web::{HttpResponse, web};
use waybill_domain::EventTypeName;
use waybill_runtime::Reply;
use waybill_store::event_types;

use super::{not_found, view::EventTypeView};
use crate::{
    access::{Caller, ReadCatalog},
    envelope::One,
    openapi::{EventTypePath, EventTypeResponse, NotFound},
    state::{State, StoreResultExt},
};

/// One event type with its schema.
#[utoipa::path(
    get, path = "/v1/events/{name}", tag = "events", params(EventTypePath),
    responses((status = 200, body = EventTypeResponse), NotFound),
    security(("bearer" = []))
)]
pub async fn get(_auth: Caller<ReadCatalog>, state: State, path: web::Path<String>) -> Reply {
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
