//! What every handler shares.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{Notify, RwLock};
use waybill_domain::{CatalogIndex, UrlPolicy};
use waybill_runtime::ApiError;
use waybill_store::{Cipher, PgPool, PooledConn, StoreError, event_types};

/// Application state kept in actix app data.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Publishes delivery messages a tenant asks for (retry, recover).
    pub broker: waybill_bus::Broker,
    /// Sends test events, with the dispatcher's request and address rules.
    pub outbound: waybill_dispatcher::outbound::Outbound,
    pub cipher: Cipher,
    pub urls: UrlPolicy,
    /// Wakes the change-feed relay after a change committed.
    pub relay_wakeup: Arc<Notify>,
    pub catalog: CatalogCache,
}

/// How long another replica's change to an event type's `active` flag may take to be seen here.
const CATALOG_TTL: Duration = Duration::from_secs(1);

/// The catalog as the subscription rules need it, re-read at most every [`CATALOG_TTL`] and at
/// once after this replica changed it.
#[derive(Clone, Default)]
pub struct CatalogCache {
    inner: Arc<RwLock<Option<Cached>>>,
}

/// When the index was read, and the index.
type Cached = (Instant, Arc<CatalogIndex>);

impl CatalogCache {
    pub async fn get(&self, conn: &mut PooledConn) -> Result<Arc<CatalogIndex>, ApiError> {
        if let Some((at, index)) = self.inner.read().await.as_ref()
            && at.elapsed() < CATALOG_TTL
        {
            return Ok(index.clone());
        }
        let flags = event_types::flags(conn)
            .await
            .map_err(|e| store_error(e.into()))?;
        let index = Arc::new(CatalogIndex::new(
            flags.iter().map(|(n, a)| (n.as_str(), *a)),
        ));
        *self.inner.write().await = Some((Instant::now(), index.clone()));
        Ok(index)
    }

    /// Forgets the cached index (after an event type changed).
    pub async fn invalidate(&self) {
        *self.inner.write().await = None;
    }
}

impl AppState {
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
