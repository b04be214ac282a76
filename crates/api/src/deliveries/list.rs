//! `GET /v1/webhooks/{id}/deliveries`.

use actix_web::{HttpRequest, HttpResponse};
use waybill_domain::{ValidationErrors, WebhookId, catalog::TypeStatus};
use waybill_runtime::{ApiError, Reply, body::query_pairs};
use waybill_store::deliveries::{self, DeliveryFilter};

use super::{parse_time, view::DeliveryView};
use crate::{
    access::{ReadWebhooks, Scoped},
    envelope::Paging,
    openapi::{DeliveryList, DeliveryListQuery, Invalid, NotFound, WebhookPath},
    state::{State, StoreResultExt},
    webhooks::find_own,
};

pub(crate) const PARAMS: &[&str] = &["status", "event_type", "since", "until", "limit", "page"];

/// A subscription's deliveries, newest first.
#[utoipa::path(
    operation_id = "list_deliveries",
    get, path = "/v1/webhooks/{id}/deliveries", tag = "deliveries", params( WebhookPath, DeliveryListQuery, ),
    responses((status = 200, body = DeliveryList), NotFound, Invalid),
    security(("bearer" = ["webhooks:read"]))
)]
pub async fn list(
    Scoped { auth, id, .. }: Scoped<ReadWebhooks, WebhookId>,
    state: State,
    req: HttpRequest,
) -> Reply {
    let mut conn = state.conn().await?;
    find_own(&mut conn, &auth, id).await?;
    let pairs = query_pairs(&req, PARAMS)?;
    let mut errors = ValidationErrors::new();
    let paging = Paging::parse(&pairs, 50, 200, &mut errors);
    let mut filter = DeliveryFilter::default();
    for (k, v) in &pairs {
        match k.as_str() {
            "status" => match v.parse() {
                Ok(status) => filter.status = Some(status),
                Err(_) => errors.add("status", "must be `pending`, `succeeded` or `failed`"),
            },
            "event_type" => filter.event_type = Some(v.clone()),
            "since" => filter.since = parse_time("since", v, &mut errors),
            "until" => filter.until = parse_time("until", v, &mut errors),
            _ => {}
        }
    }
    if let Some(kind) = &filter.event_type
        && state.catalog_index(&mut conn).await?.status(kind) == TypeStatus::Unknown
    {
        errors.add("event_type", format!("there is no event type `{kind}`"));
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        errors.add("until", "must be later than `since`");
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // `find_own` above made sure the subscription is the caller's.
    let (rows, count) = deliveries::list(&mut conn, id, &filter, paging.limit, paging.offset())
        .await
        .api()?;
    let data = rows.iter().map(DeliveryView::from).collect();
    let path = format!("/v1/webhooks/{id}/deliveries");
    Ok(HttpResponse::Ok().json(paging.page(&path, &pairs, data, count)))
}
