//! `POST /v1/events`.

use actix_web::{HttpResponse, web};
use waybill_domain::ValidationErrors;
use waybill_runtime::{
    ApiError, Reply,
    access::{Caller, PublishEvents},
    body::Body,
};

use super::{
    Accepted, IngestState, check_event, check_size, not_queued, record_event, traceparent,
};

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AcceptedResponse {
    pub data: Accepted,
}

/// Publishes one event; 202 only once the broker confirmed it.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body = crate::openapi::PublishEvent,
    responses(
        (status = 202, description = "Queued: the broker confirmed it.", body = AcceptedResponse),
    ),
    security(("bearer" = ["events:publish"]))
)]
pub async fn publish(
    auth: Caller<PublishEvents>,
    state: web::Data<IngestState>,
    body: Body,
) -> Reply {
    let map = body.json_object(false)?;
    check_size(&map, "The event")?;
    let mut errors = ValidationErrors::new();
    let now = chrono::Utc::now();
    let envelope = check_event(map, &auth, &state.catalog, now, "", true, &mut errors)?;
    let (Some(envelope), true) = (envelope, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    record_event(&envelope);
    state
        .publisher
        .publish(std::slice::from_ref(&envelope), traceparent().as_deref())
        .await
        .map_err(not_queued)?;
    Ok(HttpResponse::Accepted().json(AcceptedResponse {
        data: Accepted::from(&envelope),
    }))
}
