//! `GET /v1/admin/invalid-events`.

use actix_web::{HttpRequest, HttpResponse};
use utoipa::IntoParams;
use waybill_domain::ValidationErrors;
use waybill_runtime::{ApiError, Reply, body::query_pairs};
use waybill_store::invalid_events;

use super::{InvalidEventList, InvalidEventView};
use crate::{
    access::{AdminOnly, Caller},
    envelope::Paging,
    openapi::Invalid,
    state::{State, StoreResultExt},
};

pub(crate) const PARAMS: &[&str] = &["limit", "page", "reason"];

/// Longest `reason` filter.
const MAX_REASON_FILTER: usize = 200;

/// Query of `GET /v1/admin/invalid-events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the document only; the handler reads the query itself.
pub struct InvalidEventListQuery {
    /// Default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Default 1.
    #[param(minimum = 1, maximum = 9007199254740991_i64)]
    page: Option<i64>,
    /// Only records whose reason contains this text, ignoring case (`no event type`,
    /// `occurred_at`, `data: /sku`).
    #[param(min_length = 1, max_length = 200)]
    reason: Option<String>,
}

/// The events the dispatcher refused, newest first, each body cut at 16 KiB.
#[utoipa::path(
    operation_id = "list_invalid_events",
    get, path = "/v1/admin/invalid-events", tag = "admin", params(InvalidEventListQuery),
    responses((status = 200, body = InvalidEventList), Invalid),
    security(("bearer" = ["admin"]))
)]
pub async fn list(_auth: Caller<AdminOnly>, state: State, req: HttpRequest) -> Reply {
    let pairs = query_pairs(&req, PARAMS)?;
    let mut errors = ValidationErrors::new();
    let paging = Paging::parse(&pairs, 50, 200, &mut errors);
    let mut reason = None;
    for (k, v) in &pairs {
        if k == "reason" {
            if (1..=MAX_REASON_FILTER).contains(&v.chars().count()) {
                reason = Some(v.as_str());
            } else {
                errors.add(
                    "reason",
                    format!("must be 1 to {MAX_REASON_FILTER} characters"),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut conn = state.conn().await?;
    let (rows, count) = invalid_events::list(&mut conn, reason, paging.limit, paging.offset())
        .await
        .api()?;
    let data = rows.iter().map(InvalidEventView::from).collect();
    Ok(HttpResponse::Ok().json(paging.page("/v1/admin/invalid-events", &pairs, data, count)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_documented_query_is_the_one_the_handler_reads() {
        let documented: BTreeSet<String> = InvalidEventListQuery::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        let read: BTreeSet<String> = PARAMS.iter().map(|p| (*p).to_owned()).collect();
        assert_eq!(documented, read);
    }
}
