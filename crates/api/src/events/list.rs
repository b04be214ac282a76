//! `GET /v1/events`.

use actix_web::{HttpRequest, HttpResponse};
use waybill_domain::ValidationErrors;
use waybill_runtime::{
    ApiError, Reply,
    body::{parse_bool, query_pairs},
};
use waybill_store::event_types::{self, EventTypeFilter};

use super::view::EventTypeView;
use crate::{
    access::{Caller, ReadCatalog},
    envelope::Paging,
    openapi::{EventTypeList, EventTypeListQuery, Invalid},
    state::{State, StoreResultExt},
};

/// The catalog, optionally one group or only (in)active types, sorted by name.
#[utoipa::path(
    operation_id = "list_event_types",
    get, path = "/v1/events", tag = "events", params(EventTypeListQuery),
    responses((status = 200, body = EventTypeList), Invalid),
    security(("bearer" = []))
)]
pub async fn list(_auth: Caller<ReadCatalog>, state: State, req: HttpRequest) -> Reply {
    let pairs = query_pairs(&req, &["group", "active", "limit", "page"])?;
    let mut errors = ValidationErrors::new();
    let paging = Paging::parse(&pairs, 100, 200, &mut errors);
    let mut filter = EventTypeFilter::default();
    for (k, v) in &pairs {
        match k.as_str() {
            "group" => filter.group = Some(v.clone()),
            "active" => filter.active = parse_bool("active", v, &mut errors),
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut conn = state.conn().await?;
    let (rows, count) = event_types::list(&mut conn, &filter, paging.limit, paging.offset())
        .await
        .api()?;
    let data = rows.into_iter().map(EventTypeView::from).collect();
    Ok(HttpResponse::Ok().json(paging.page("/v1/events", &pairs, data, count)))
}
