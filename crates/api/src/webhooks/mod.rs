//! `/v1/webhooks`: subscriptions, one file per action.

pub mod create;
pub mod delete;
pub mod get;
pub mod input;
pub mod list;
pub mod secret;
pub mod test;
pub mod update;
pub mod view;

use uuid::Uuid;
use waybill_runtime::{ApiError, Auth};
use waybill_store::{PooledConn, webhooks::WebhookRow};

use crate::state::StoreResultExt;

/// A path id that is not a UUID names no subscription: 404, like a missing one.
pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found("There is no webhook with that id."))
}

pub fn not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(format!("There is no webhook {id}."))
}

pub fn duplicate() -> ApiError {
    ApiError::conflict("You already have a webhook with this url, method and set of events.")
}

/// The caller's webhook `id`, or a 404: another tenant's is exactly as missing as none.
pub async fn find_own(
    conn: &mut PooledConn,
    auth: &Auth,
    id: Uuid,
) -> Result<WebhookRow, ApiError> {
    waybill_store::webhooks::find(conn, auth.tenant.as_str(), id)
        .await
        .api()?
        .ok_or_else(|| not_found(id))
}
