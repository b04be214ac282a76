//! `POST /v1/admin/invalid-events/{id}/redrive`: publishes a refused event again, byte for
//! byte, to the events exchange with its routing key and message id, once an operator fixed
//! what made the dispatcher refuse it (re-activated or added its type, say). The record is
//! locked while the broker confirms and removed in the same transaction: a broker that does not
//! confirm leaves it as it was (503), and a concurrent re-drive of it waits and then finds
//! nothing (404). Should the removal fail after the broker confirmed, the record stays and a
//! second re-drive publishes a duplicate, which the dispatcher drops by event id.

use actix_web::HttpResponse;
use diesel_async::AsyncConnection;
use waybill_bus::{BusError, Outgoing, TRACEPARENT_HEADER};
use waybill_runtime::{ApiError, Reply};
use waybill_store::{
    StoreError,
    invalid_events::{self, InvalidEventRow},
};

use super::{InvalidEventId, InvalidEventPath, InvalidEventResponse, InvalidEventView};
use crate::{
    access::{AdminOnly, Scoped},
    envelope::One,
    openapi::{Conflict, NotFound},
    path_id::ResourceId,
    state::{State, store_error},
};

/// Header of the envelope's tenant, as ingest sets it.
const TENANT_HEADER: &str = "waybill-tenant";

/// Why a re-drive did not happen.
#[derive(Debug, thiserror::Error)]
enum RedriveError {
    #[error(transparent)]
    Store(StoreError),
    #[error("no such record")]
    NotFound,
    #[error("only an excerpt of the body is kept")]
    Truncated,
    #[error("the broker did not confirm the re-drive")]
    Broker(#[source] BusError),
}

impl From<diesel::result::Error> for RedriveError {
    fn from(e: diesel::result::Error) -> Self {
        RedriveError::Store(e.into())
    }
}

/// Publishes a refused event again; 202 once the broker confirmed it and its record is removed.
#[utoipa::path(
    operation_id = "redrive_invalid_event",
    post, path = "/v1/admin/invalid-events/{id}/redrive", tag = "admin", params(InvalidEventPath),
    responses(
        (status = 202, description = "Published again (the broker confirmed it) and the record removed; the record as it was.", body = InvalidEventResponse),
        NotFound,
        Conflict,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn redrive(
    Scoped { auth, id, .. }: Scoped<AdminOnly, InvalidEventId>,
    state: State,
) -> Reply {
    let mut conn = state.conn().await?;
    let exchange = state.broker.topology().events_exchange();
    let redriven = conn
        .transaction::<InvalidEventRow, RedriveError, _>(async |conn| {
            let row = invalid_events::find_for_update(conn, id.0)
                .await?
                .ok_or(RedriveError::NotFound)?;
            if row.body_truncated {
                return Err(RedriveError::Truncated);
            }
            // Sent again, the event starts its trace from the request that redrove it.
            let headers = row
                .tenant
                .iter()
                .map(|t| (TENANT_HEADER, t.clone()))
                .chain(
                    waybill_trace::onward(
                        &tracing::Span::current(),
                        waybill_runtime::http::incoming_traceparent().as_deref(),
                    )
                    .map(|tp| (TRACEPARENT_HEADER, tp)),
                )
                .collect();
            state
                .broker
                .publish(&Outgoing {
                    exchange: &exchange,
                    routing_key: &row.routing_key,
                    body: &row.body,
                    message_id: row.message_id.as_deref(),
                    headers,
                    mandatory: true,
                })
                .await
                .map_err(RedriveError::Broker)?;
            invalid_events::delete(conn, id.0).await?;
            Ok(row)
        })
        .await;
    let row = match redriven {
        Ok(row) => row,
        Err(RedriveError::Store(e)) => return Err(store_error(e)),
        Err(RedriveError::NotFound) => return Err(id.not_found()),
        Err(RedriveError::Truncated) => {
            return Err(ApiError::conflict(format!(
                "The invalid event {id} was larger than any event Waybill publishes; only an \
                 excerpt of its body is kept, so it cannot be re-driven."
            )));
        }
        Err(RedriveError::Broker(why)) => {
            tracing::warn!(
                error = &why as &dyn std::error::Error,
                "broker did not confirm a re-drive"
            );
            return Err(ApiError::unavailable(
                "The broker is unavailable; nothing was published. Retry shortly.",
                5,
            ));
        }
    };
    tracing::info!(invalid_event_id = %id, routing_key = %row.routing_key, by_tenant = %auth.tenant, "invalid event re-driven");
    Ok(HttpResponse::Accepted().json(One {
        data: InvalidEventView::from(&row),
    }))
}
