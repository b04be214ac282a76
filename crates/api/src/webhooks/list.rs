//! `GET /v1/webhooks`.

use actix_web::{HttpRequest, HttpResponse};
use waybill_domain::{ValidationErrors, catalog::TypeStatus};
use waybill_runtime::{
    ApiError, Reply,
    body::{parse_bool, query_pairs},
};
use waybill_store::webhooks::{self, ListQuery, SortKey};

use super::view::WebhookView;
use crate::{
    access::{Caller, ReadWebhooks},
    envelope::Paging,
    openapi::{Invalid, WebhookList, WebhookListQuery},
    state::{State, StoreResultExt},
};

pub(crate) const PARAMS: &[&str] = &[
    "limit",
    "page",
    "sort",
    "direction",
    "event",
    "active",
    "has_filter",
];

/// The caller's subscriptions, a page at a time.
#[utoipa::path(
    operation_id = "list_webhooks",
    get, path = "/v1/webhooks", tag = "webhooks", params(WebhookListQuery),
    responses((status = 200, body = WebhookList), Invalid),
    security(("bearer" = ["webhooks:read"]))
)]
pub async fn list(auth: Caller<ReadWebhooks>, state: State, req: HttpRequest) -> Reply {
    let pairs = query_pairs(&req, PARAMS)?;
    let mut errors = ValidationErrors::new();
    let paging = Paging::parse(&pairs, 50, 200, &mut errors);
    let mut q = ListQuery {
        sort: SortKey::CreatedAt,
        descending: true,
        event: None,
        active: None,
        has_filter: None,
        limit: paging.limit,
        offset: paging.offset(),
    };
    for (k, v) in &pairs {
        match k.as_str() {
            "sort" => match v.as_str() {
                "created_at" => q.sort = SortKey::CreatedAt,
                "updated_at" => q.sort = SortKey::UpdatedAt,
                "name" => q.sort = SortKey::Name,
                "url" => q.sort = SortKey::Url,
                _ => errors.add(
                    "sort",
                    "must be `created_at`, `updated_at`, `name` or `url`",
                ),
            },
            "direction" => match v.as_str() {
                "asc" => q.descending = false,
                "desc" => q.descending = true,
                _ => errors.add("direction", "must be `asc` or `desc`"),
            },
            "active" => q.active = parse_bool("active", v, &mut errors),
            "has_filter" => q.has_filter = parse_bool("has_filter", v, &mut errors),
            "event" => q.event = Some(v.clone()),
            _ => {}
        }
    }
    let mut conn = state.conn().await?;
    if let Some(event) = &q.event
        && state.catalog_index(&mut conn).await?.status(event) == TypeStatus::Unknown
    {
        errors.add("event", format!("there is no event type `{event}`"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let (rows, count) = webhooks::list(&mut conn, auth.tenant.as_str(), &q)
        .await
        .api()?;
    let data = rows.iter().map(WebhookView::from).collect();
    Ok(HttpResponse::Ok().json(paging.page("/v1/webhooks", &pairs, data, count)))
}
