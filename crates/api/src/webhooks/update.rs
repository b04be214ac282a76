//! `PATCH /v1/webhooks/{id}`.

use actix_web::HttpResponse;
use waybill_domain::{WebhookId, WebhookSettings, subscription::RuleContext};
use waybill_runtime::{ApiError, Reply, body::Body};
use waybill_store::{StoreError, webhooks};

use super::{
    duplicate, find_own,
    input::{self, Mode},
    view::WebhookView,
};
use crate::{
    access::{Scoped, WriteWebhooks},
    envelope::One,
    openapi::{Conflict, Invalid, NotFound, WebhookPath, WebhookResponse, WebhookUpdate},
    state::{State, StoreResultExt},
};

/// How often an update is re-applied when another writer changed the row in between.
const ATTEMPTS: usize = 3;

/// Changes the fields given; `headers`, `auth` and `filter` replace the whole value.
#[utoipa::path(
    operation_id = "update_webhook",
    patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(WebhookPath),
    request_body = WebhookUpdate,
    responses((status = 200, body = WebhookResponse), NotFound, Conflict, Invalid),
    security(("bearer" = ["webhooks:write"]))
)]
pub async fn update(
    Scoped { auth, id, .. }: Scoped<WriteWebhooks, WebhookId>,
    state: State,
    body: Body,
) -> Reply {
    let mut conn = state.conn().await?;
    // A missing webhook is a 404 whatever the body holds.
    let mut current = find_own(&mut conn, &auth, id).await?;
    let parsed = input::parse(body.json_object(false)?, Mode::Update)?;
    let catalog = state.catalog_index(&mut conn).await?;
    for _ in 0..ATTEMPTS {
        let before = current.settings(&state.cipher).api()?;
        let ctx = RuleContext {
            catalog: &catalog,
            urls: &state.urls,
        };
        // Every problem at once: the body's (unknown fields, nulls) and the rules'.
        let mut errors = parsed.errors.clone();
        let after = WebhookSettings::build(parsed.input.clone(), Some(&before), ctx)
            .map_err(|e| errors.merge(e))
            .ok();
        let (Some(after), true) = (after, errors.is_empty()) else {
            return Err(ApiError::validation(errors));
        };
        if after == before {
            return Ok(HttpResponse::Ok().json(One {
                data: WebhookView::from(&current),
            }));
        }
        match webhooks::update(&mut conn, &state.cipher, &current, &after).await {
            Err(StoreError::Conflict) => return Err(duplicate()),
            Ok(Some(row)) => {
                state.relay_wakeup.notify_one();
                tracing::info!(tenant = %auth.tenant, webhook_id = %id, revision = row.revision, "webhook updated");
                return Ok(HttpResponse::Ok().json(One {
                    data: WebhookView::from(&row),
                }));
            }
            // Another writer got there first: apply the same input to what it wrote.
            Ok(None) => current = find_own(&mut conn, &auth, id).await?,
            Err(e) => return Err(e).api(),
        }
    }
    Err(ApiError::conflict(
        "The webhook changed concurrently several times; retry the update.",
    ))
}
