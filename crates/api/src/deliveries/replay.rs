//! `POST /v1/deliveries/{id}/retry` and `POST /v1/webhooks/{id}/recover`: more attempts a tenant
//! asks for. Each delivery is put back to `pending` and its message published (confirmed) in one
//! transaction, so a delivery is never left pending without a message: if the broker does not
//! confirm, nothing changes and the answer is a 503.

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use serde::Serialize;
use utoipa::ToSchema;
use waybill_bus::{BusError, Outgoing, TRACEPARENT_HEADER, topology::DELIVERY_KEY};
use waybill_domain::{
    DeliveryId, EventTypeName, TenantId, ValidationErrors, WebhookId,
    delivery::{ATTEMPT_HEADER, DeliveryMessage, MANUAL_HEADER},
    event::EventEnvelope,
};
use waybill_runtime::{
    ApiError, Reply,
    body::{self, Body},
};
use waybill_store::{
    StoreError,
    deliveries::{self, DeliveryRow, EventRow},
};

use super::{parse_time, view::DeliveryView};
use crate::{
    access::{Scoped, WriteWebhooks},
    envelope::One,
    openapi::{DeliveryViewResponse, ErrorResponse, NotFound, QueuedResponse, WebhookPath},
    path_id::ResourceId,
    state::{AppState, State, store_error},
    webhooks::find_own,
};

/// Most deliveries one recover queues; call again for the rest (those queued are `pending` now
/// and not taken twice).
pub const RECOVER_LIMIT: i64 = 1_000;

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error(transparent)]
    Store(StoreError),
    #[error("the broker did not confirm the replay")]
    Broker(#[source] BusError),
    #[error("cannot encode a delivery message")]
    Encode(#[source] serde_json::Error),
    #[error("the event of delivery {0} is no longer recorded")]
    EventGone(DeliveryId),
}

impl From<diesel::result::Error> for ReplayError {
    fn from(e: diesel::result::Error) -> Self {
        ReplayError::Store(e.into())
    }
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Store(e) => store_error(e),
            ReplayError::Broker(why) => {
                tracing::warn!(
                    error = &why as &dyn std::error::Error,
                    "broker did not confirm a replay"
                );
                ApiError::unavailable(
                    "The broker is unavailable; nothing was queued. Retry shortly.",
                    5,
                )
            }
            ReplayError::Encode(e) => ApiError::internal(e),
            ReplayError::EventGone(id) => ApiError::conflict(format!(
                "Delivery {id} can no longer be replayed: its event is no longer recorded."
            )),
        }
    }
}

fn envelope(tenant: &TenantId, e: &EventRow) -> Result<EventEnvelope, ReplayError> {
    let kind = EventTypeName::parse(&e.event_type)
        .map_err(|why| ReplayError::Store(StoreError::Corrupt(format!("event {}: {why}", e.id))))?;
    Ok(EventEnvelope {
        id: e.id.clone(),
        tenant: tenant.clone(),
        kind,
        client_id: e.client_id.clone(),
        occurred_at: e.occurred_at,
        received_at: e.received_at,
        data: e.data.as_object().cloned().unwrap_or_default(),
    })
}

/// Which deliveries to replay.
enum Pick {
    One(DeliveryId),
    FailedIn {
        webhook_id: WebhookId,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    },
}

/// Reopens the picked deliveries and publishes one manual attempt of each, all or nothing.
async fn replay(
    state: &AppState,
    tenant: &TenantId,
    pick: Pick,
) -> Result<Vec<DeliveryRow>, ApiError> {
    let mut conn = state.conn().await?;
    let exchange = state.broker.topology().deliveries_exchange();
    let result = conn
        .transaction::<_, ReplayError, _>(async |conn| {
            let ids = match pick {
                Pick::One(id) => vec![id],
                Pick::FailedIn {
                    webhook_id,
                    since,
                    until,
                } => {
                    deliveries::failed_in_window(
                        conn,
                        tenant.as_str(),
                        webhook_id,
                        since,
                        until,
                        RECOVER_LIMIT,
                    )
                    .await?
                }
            };
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let reopened = deliveries::reopen(conn, tenant.as_str(), &ids).await?;
            let mut bodies = Vec::with_capacity(reopened.len());
            for (row, event) in &reopened {
                let event = event.as_ref().ok_or(ReplayError::EventGone(row.id))?;
                let message = DeliveryMessage {
                    delivery_id: row.id,
                    webhook_id: row.webhook_id,
                    event: envelope(tenant, event)?,
                };
                let body = serde_json::to_vec(&message).map_err(ReplayError::Encode)?;
                bodies.push((row.id.to_string(), body, (row.attempts + 1).to_string()));
            }
            // The attempts continue the trace of the request that asked for them.
            let traceparent = waybill_trace::onward(
                &tracing::Span::current(),
                waybill_runtime::http::incoming_traceparent().as_deref(),
            );
            let outgoing: Vec<Outgoing<'_>> = bodies
                .iter()
                .map(|(id, body, attempt)| {
                    let mut headers = vec![
                        (ATTEMPT_HEADER, attempt.clone()),
                        (MANUAL_HEADER, "1".to_owned()),
                    ];
                    if let Some(tp) = &traceparent {
                        headers.push((TRACEPARENT_HEADER, tp.clone()));
                    }
                    Outgoing {
                        exchange: &exchange,
                        routing_key: DELIVERY_KEY,
                        body,
                        message_id: Some(id),
                        headers,
                        mandatory: true,
                    }
                })
                .collect();
            state
                .broker
                .publish_many(&outgoing)
                .await
                .map_err(ReplayError::Broker)?;
            Ok(reopened.into_iter().map(|(r, _)| r).collect())
        })
        .await;
    result.map_err(ApiError::from)
}

/// One more attempt of a delivery now, whatever its status, to the subscription as it is now
/// (its current URL, headers, auth and keys).
#[utoipa::path(
    operation_id = "retry_delivery",
    post, path = "/v1/deliveries/{id}/retry", tag = "deliveries", params(("id" = uuid::Uuid, Path, description = "Delivery id")),
    responses((status = 202, description = "Queued; the delivery is `pending` until the attempt is made", body = DeliveryViewResponse), NotFound, (status = 409, description = "The delivery's event is no longer recorded", body = ErrorResponse)),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn retry(
    Scoped { auth, id, .. }: Scoped<WriteWebhooks, DeliveryId>,
    state: State,
) -> Reply {
    let rows = replay(&state, &auth.tenant, Pick::One(id)).await?;
    let row = rows.first().ok_or_else(|| id.not_found())?;
    Ok(HttpResponse::Accepted().json(One {
        data: DeliveryView::from(row),
    }))
}

/// What a recover queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    /// Failed deliveries queued for one more attempt (at most 1,000 a call).
    pub queued: usize,
}

/// Body of a recover: the window of failed deliveries to retry. Unknown fields are a 422, and
/// so is an `until` not later than `since`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverInput {
    /// RFC 3339; deliveries created at or after it.
    pub since: DateTime<Utc>,
    /// RFC 3339, later than `since`; deliveries created before it (default: now).
    pub until: Option<DateTime<Utc>>,
}

#[derive(serde::Deserialize)]
struct RecoverBody {
    since: Option<String>,
    until: Option<String>,
}

/// Retries every failed delivery of a subscription created in a window. Calling it twice queues
/// nothing more: the deliveries it queued are `pending` until their attempt.
#[utoipa::path(
    operation_id = "recover_deliveries",
    post, path = "/v1/webhooks/{id}/recover", tag = "deliveries", params(WebhookPath),
    request_body = RecoverInput,
    responses((status = 202, body = QueuedResponse), NotFound, (status = 409, description = "A delivery's event is no longer recorded", body = ErrorResponse)),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn recover(
    Scoped {
        auth,
        id: webhook_id,
        ..
    }: Scoped<WriteWebhooks, WebhookId>,
    state: State,
    body: Body,
) -> Reply {
    {
        // A missing webhook is a 404 whatever the body holds.
        let mut conn = state.conn().await?;
        find_own(&mut conn, &auth, webhook_id).await?;
    }
    let mut map = body.json_object(false)?;
    let mut errors = ValidationErrors::new();
    body::unknown_fields(&map, &["since", "until"], "", &mut errors);
    map.retain(|_, v| !v.is_null());
    let input: RecoverBody = body::typed(map)?;
    let since = match &input.since {
        None => {
            errors.add("since", "is required");
            None
        }
        Some(raw) => parse_time("since", raw, &mut errors),
    };
    let until = input
        .until
        .as_deref()
        .and_then(|raw| parse_time("until", raw, &mut errors));
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        errors.add("until", "must be later than `since`");
    }
    let Some(since) = since.filter(|_| errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let pick = Pick::FailedIn {
        webhook_id,
        since,
        until,
    };
    let rows = replay(&state, &auth.tenant, pick).await?;
    Ok(HttpResponse::Accepted().json(One {
        data: Queued { queued: rows.len() },
    }))
}
