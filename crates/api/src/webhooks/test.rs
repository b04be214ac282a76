//! `POST /v1/webhooks/{id}/test`: sends a `webhook.test` event to the subscription now, with the
//! same request, signature and address rules as every delivery, and answers with what came of
//! that one attempt. The attempt is recorded in the delivery log like any other.

use actix_web::HttpResponse;
use chrono::{SubsecRound, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;
use waybill_domain::{
    DeliveryId, EventTypeName, WebhookId,
    delivery::{DeliveryStatus, LastError, delivery_id, receiver_body},
    event::EventEnvelope,
};
use waybill_outbound::{Attempt, AttemptResult, Endpoint};
use waybill_runtime::{ApiError, Reply};
use waybill_store::{
    StoreError,
    deliveries::{self, AttemptRecord, DeliveryRecord},
    webhooks,
};

use crate::{
    access::{Scoped, WriteWebhooks},
    envelope::One,
    openapi::{NotFound, TestOutcomeResponse, WebhookPath},
    path_id::ResourceId,
    state::{State, StoreResultExt, store_error},
};

/// The outcome of a test send.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestOutcome {
    /// Whether the receiver answered 2xx within the timeout.
    pub succeeded: bool,
    #[schema(value_type = uuid::Uuid)]
    pub delivery_id: DeliveryId,
    /// The test event's id (the `webhook-id` header the receiver got).
    pub event_id: String,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
}

/// Sends a `webhook.test` event now and answers with the outcome of that attempt (200 whatever
/// the receiver answered; `succeeded` tells). An inactive subscription can be tested too.
#[utoipa::path(
    operation_id = "test_webhook",
    post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(WebhookPath),
    responses((status = 200, body = TestOutcomeResponse), NotFound),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn test(
    Scoped { auth, id, .. }: Scoped<WriteWebhooks, WebhookId>,
    state: State,
) -> Reply {
    let mut conn = state.conn().await?;
    // One read gives both the tenant check and what the request needs; another tenant's
    // subscription is as missing as none.
    let snapshot = webhooks::snapshot(&mut conn, id)
        .await
        .api()?
        .filter(|s| s.tenant == auth.tenant.as_str())
        .ok_or_else(|| id.not_found())?;
    let endpoint = Endpoint::from_snapshot(&snapshot, &state.cipher)
        .map_err(|e| store_error(StoreError::Corrupt(e.to_string())))?;
    let now = Utc::now().trunc_subsecs(6);
    let tenant = auth.tenant.as_str();
    let mut data = serde_json::Map::new();
    data.insert("webhook_id".into(), json!(id));
    data.insert(
        "message".into(),
        json!("This is a test event from Waybill."),
    );
    data.insert("sent_at".into(), json!(now));
    let event = EventEnvelope {
        id: format!("test_{}", Uuid::now_v7().simple()),
        tenant: auth.tenant.clone(),
        kind: EventTypeName::parse("webhook.test").map_err(ApiError::internal)?,
        client_id: None,
        occurred_at: now,
        received_at: now,
        data,
    };
    let delivery = delivery_id(tenant, &event.id, id);
    let body = receiver_body(&event);
    // No connection is held while the receiver takes its time.
    drop(conn);
    let incoming = waybill_runtime::http::incoming_traceparent();
    let result = state
        .outbound
        .send(Attempt {
            endpoint: &endpoint,
            event: &event,
            body: bytes::Bytes::from(body),
            delivery_id: delivery,
            number: 1,
            traceparent: incoming.as_deref(),
        })
        .await;
    let mut conn = state.conn().await?;
    // Claimed by nobody for long: it is finished in the next statement.
    let claim = deliveries::Claim {
        owner: "api".to_owned(),
        lease: std::time::Duration::ZERO,
    };
    deliveries::take_event(&mut conn, &event, &claim)
        .await
        .api()?;
    // Its one delivery settled and the event marked done (so retention treats it like any
    // other event), in one transaction.
    deliveries::finish_fan_out(
        &mut conn,
        tenant,
        &event.id,
        &[record(&event, id, delivery, &result)],
    )
    .await
    .api()?;
    tracing::info!(tenant = %tenant, webhook_id = %id, status = ?result.status, "test event sent");
    Ok(HttpResponse::Ok().json(One {
        data: TestOutcome {
            succeeded: result.succeeded(),
            delivery_id: delivery,
            event_id: event.id,
            status_code: result.status,
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            error: result.last_error(),
            response_body: result.response_body,
        },
    }))
}

fn record(
    event: &EventEnvelope,
    webhook_id: WebhookId,
    id: DeliveryId,
    r: &AttemptResult,
) -> DeliveryRecord {
    DeliveryRecord {
        id,
        tenant: event.tenant.to_string(),
        webhook_id,
        event_id: event.id.clone(),
        event_type: event.kind.to_string(),
        status: if r.succeeded() {
            DeliveryStatus::Succeeded
        } else {
            DeliveryStatus::Failed
        },
        attempts: 1,
        last_status_code: r.status.map(i32::from),
        last_error: r.last_error().map(LastError::Attempt),
        next_attempt_at: None,
        at: Utc::now(),
        attempt: Some(AttemptRecord {
            number: 1,
            started_at: r.started_at,
            duration_ms: i32::try_from(r.duration.as_millis()).unwrap_or(i32::MAX),
            status_code: r.status.map(i32::from),
            error: r.error.clone(),
            response_body: r.response_body.clone(),
        }),
    }
}
