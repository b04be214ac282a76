//! `PATCH /v1/events/{name}` (admin).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use waybill_domain::ValidationErrors;
use waybill_runtime::{
    ApiError, Reply,
    body::{self, Body},
};
use waybill_store::event_types;

use super::{find, not_found, view::EventTypeView};
use crate::{
    access::{AdminOnly, Caller},
    envelope::One,
    openapi::{EventTypePath, EventTypeResponse, EventTypeUpdate, Invalid, NotFound},
    state::{State, StoreResultExt},
};

#[derive(Deserialize)]
struct Patch {
    active: Option<bool>,
    description: Option<String>,
}

/// Activates or deactivates an event type, or changes its description. An inactive type cannot
/// be newly subscribed to or published, and is not delivered.
#[utoipa::path(
    operation_id = "update_event_type",
    patch, path = "/v1/events/{name}", tag = "events", params(EventTypePath),
    request_body = EventTypeUpdate,
    responses((status = 200, body = EventTypeResponse), NotFound, Invalid),
    security(("bearer" = ["admin"]))
)]
pub async fn update(
    auth: Caller<AdminOnly>,
    state: State,
    path: web::Path<String>,
    body: Body,
) -> Reply {
    let (mut conn, current) = find(&state, &path).await?;
    let mut errors = ValidationErrors::new();
    let mut map = body.json_object(false)?;
    body::unknown_fields(&map, &["active", "description"], "", &mut errors);
    for (k, _) in map.iter().filter(|(_, v)| v.is_null()) {
        errors.add(k.clone(), "must not be null");
    }
    map.retain(|_, v| !v.is_null());
    let patch: Patch = body::typed(map)?;
    if patch
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1000)
    {
        errors.add("description", "must be at most 1000 characters");
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    if patch.active.is_none() && patch.description.is_none() {
        return Ok(HttpResponse::Ok().json(One {
            data: EventTypeView::from(current),
        }));
    }
    let row = event_types::update(&mut conn, &path, patch.active, patch.description.as_deref())
        .await
        .api()?
        .ok_or_else(|| not_found(&path))?;
    state.catalog.invalidate();
    tracing::info!(event_type = %row.name, active = row.active, by_tenant = %auth.tenant, "event type updated");
    Ok(HttpResponse::Ok().json(One {
        data: EventTypeView::from(row),
    }))
}
