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

use waybill_domain::WebhookId;
use waybill_runtime::{ApiError, Auth};
use waybill_store::{PooledConn, webhooks::WebhookRow};

use crate::{path_id::ResourceId, state::StoreResultExt};

pub fn duplicate() -> ApiError {
    ApiError::conflict("You already have a webhook with this url, method and set of events.")
}

/// The caller's webhook `id`, or a 404: another tenant's is exactly as missing as none.
pub async fn find_own(
    conn: &mut PooledConn,
    auth: &Auth,
    id: WebhookId,
) -> Result<WebhookRow, ApiError> {
    waybill_store::webhooks::find(conn, auth.tenant.as_str(), id)
        .await
        .api()?
        .ok_or_else(|| id.not_found())
}
