//! What every handler shares.

use std::sync::Arc;

use tokio::sync::Notify;
use waybill_domain::{CatalogIndex, UrlPolicy};
use waybill_runtime::ApiError;
use waybill_store::{Cipher, PgPool, PooledConn, StoreError, event_types};

/// Application state kept in actix app data.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cipher: Cipher,
    pub urls: UrlPolicy,
    /// Wakes the change-feed relay after a change committed.
    pub relay_wakeup: Arc<Notify>,
}

impl AppState {
    pub async fn conn(&self) -> Result<PooledConn, ApiError> {
        waybill_store::conn(&self.pool).await.map_err(store_error)
    }
}

/// The catalog as the subscription rules need it, read fresh so a type deactivated a moment ago
/// on another replica is already refused.
pub async fn catalog_index(conn: &mut PooledConn) -> Result<CatalogIndex, ApiError> {
    let flags = event_types::flags(conn)
        .await
        .map_err(|e| store_error(e.into()))?;
    Ok(CatalogIndex::new(
        flags.iter().map(|(n, a)| (n.as_str(), *a)),
    ))
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
