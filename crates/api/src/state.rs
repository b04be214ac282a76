//! What every handler shares.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use waybill_catalog::Catalog;
use waybill_domain::{CatalogIndex, UrlPolicy};
use waybill_runtime::ApiError;
use waybill_store::{Cipher, PgPool, PooledConn, StoreError};

/// Application state kept in actix app data.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Publishes delivery messages a tenant asks for (retry, recover).
    pub broker: waybill_bus::Broker,
    /// Sends test events, with the dispatcher's request and address rules.
    pub outbound: waybill_outbound::Outbound,
    pub cipher: Cipher,
    pub urls: UrlPolicy,
    /// Wakes the change-feed relay after a change committed.
    pub relay_wakeup: Arc<Notify>,
    pub catalog: Catalog,
    /// Subscriptions one tenant may have (0: no limit).
    pub max_webhooks_per_tenant: u32,
}

/// The state as a handler takes it.
pub type State = actix_web::web::Data<AppState>;

/// How long another replica's change to an event type's `active` flag may take to be seen here.
const CATALOG_TTL: Duration = Duration::from_secs(1);

impl AppState {
    /// The catalog as the subscription rules need it, re-read at most every [`CATALOG_TTL`] and
    /// at once after this replica changed it.
    pub async fn catalog_index(
        &self,
        conn: &mut PooledConn,
    ) -> Result<Arc<CatalogIndex>, ApiError> {
        self.catalog
            .refresh_if_older(conn, CATALOG_TTL)
            .await
            .api()?;
        Ok(self.catalog.index())
    }

    pub async fn conn(&self) -> Result<PooledConn, ApiError> {
        waybill_store::conn(&self.pool).await.map_err(store_error)
    }
}

/// Maps store failures to answers: an unreachable database is a 503, anything unexpected a 500.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(why) => {
            tracing::warn!(error = %why, "database unavailable");
            ApiError::unavailable("The database is unavailable; retry shortly.", 5)
        }
        StoreError::Conflict => {
            ApiError::conflict("The change conflicts with an existing resource.")
        }
        // `internal` logs the whole cause chain.
        other => ApiError::internal(other),
    }
}

/// `?`-friendly conversion of diesel results.
pub trait StoreResultExt<T> {
    fn api(self) -> Result<T, ApiError>;
}

impl<T> StoreResultExt<T> for Result<T, StoreError> {
    fn api(self) -> Result<T, ApiError> {
        self.map_err(store_error)
    }
}

impl<T> StoreResultExt<T> for Result<T, diesel::result::Error> {
    fn api(self) -> Result<T, ApiError> {
        self.map_err(|e| store_error(e.into()))
    }
}
