//! `GET /v1/events/{name}`.

use actix_web::{HttpResponse, web};
use waybill_runtime::Reply;

use super::{find, view::EventTypeView};
use crate::{
    access::{Caller, ReadCatalog},
    envelope::One,
    openapi::{EventTypePath, EventTypeResponse, NotFound},
    state::State,
};

/// One event type with its schema.
#[utoipa::path(
    operation_id = "get_event_type",
    get, path = "/v1/events/{name}", tag = "events", params(EventTypePath),
    responses((status = 200, body = EventTypeResponse), NotFound),
    security(("bearer" = []))
)]
pub async fn get(_auth: Caller<ReadCatalog>, state: State, path: web::Path<String>) -> Reply {
    let (_, row) = find(&state, &path).await?;
    Ok(HttpResponse::Ok().json(One {
        data: EventTypeView::from(row),
    }))
}
