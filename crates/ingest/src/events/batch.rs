//! `POST /v1/events/batch`: all or nothing.

use actix_web::{HttpResponse, web};
use serde_json::Value;
use waybill_domain::ValidationErrors;
use waybill_runtime::{
    ApiError, Reply,
    access::{Caller, PublishEvents},
    body::{self, Body},
};

use super::{Accepted, IngestState, MAX_BATCH, check_event, check_size, not_queued, traceparent};

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AcceptedListResponse {
    pub data: Vec<Accepted>,
}

/// Publishes up to 500 events. Every event is checked first; if any is invalid nothing is
/// published. 202 only once the broker confirmed all of them.
#[utoipa::path(
    post, path = "/v1/events/batch", tag = "events",
    request_body = crate::openapi::PublishBatch,
    responses(
        (status = 202, description = "All queued: the broker confirmed every one.", body = AcceptedListResponse),
    ),
    security(("bearer" = ["events:publish"]))
)]
pub async fn batch(
    auth: Caller<PublishEvents>,
    state: web::Data<IngestState>,
    body: Body,
) -> Reply {
    let mut map = body.json_object(false)?;
    let mut errors = ValidationErrors::new();
    body::unknown_fields(&map, &["events"], "", &mut errors);
    let items = match map.remove("events") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid value for `events`: expected an array.",
            ));
        }
        None => {
            errors.add("events", "is required");
            return Err(ApiError::validation(errors));
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        errors.add("events", format!("must hold 1 to {MAX_BATCH} events"));
        return Err(ApiError::validation(errors));
    }
    let now = chrono::Utc::now();
    let mut envelopes = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("events[{i}].");
        let Value::Object(obj) = item else {
            errors.add(format!("events[{i}]"), "must be an object");
            continue;
        };
        check_size(&obj, &format!("events[{i}]"))?;
        if let Some(e) = check_event(obj, &auth, &state.catalog, now, &prefix, false, &mut errors)?
        {
            envelopes.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    if waybill_trace::on() {
        tracing::Span::current().record("waybill.tenant", auth.tenant.as_str());
    }
    state
        .publisher
        .publish(&envelopes, traceparent().as_deref())
        .await
        .map_err(not_queued)?;
    Ok(HttpResponse::Accepted().json(AcceptedListResponse {
        data: envelopes.iter().map(Accepted::from).collect(),
    }))
}
