//! Waybill's Postgres layer: schema, models and queries over diesel-async.

pub mod crypto;
pub mod deliveries;
pub mod endpoints;
pub mod event_types;
pub mod invalid_events;
pub mod outbox;
pub mod retention;
pub mod schema;
pub mod webhooks;

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{
    AsyncPgConnection,
    async_connection_wrapper::AsyncConnectionWrapper,
    pooled_connection::{AsyncDieselConnectionManager, deadpool},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use crypto::{Cipher, CryptoError};

/// Every migration of `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// A pool of async Postgres connections.
pub type PgPool = deadpool::Pool<AsyncPgConnection>;
/// A connection checked out of the pool.
pub type PooledConn = deadpool::Object<AsyncPgConnection>;

/// How long a caller waits for a connection before the store counts as unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong below the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres cannot be reached or gave up the connection.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint refused the write.
    #[error("a conflicting row exists")]
    Conflict,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("database error: {0}")]
    Query(DieselError),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                StoreError::Conflict
            }
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => StoreError::Unavailable(info.message().to_owned()),
            // diesel-async reports a connection lost mid-query, or a server shutting down
            // (SQLSTATE 57P01..57P03), as `Unknown`; only the message tells.
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
                if connection_lost(info.message()) =>
            {
                StoreError::Unavailable(info.message().to_owned())
            }
            DieselError::BrokenTransactionManager => StoreError::Unavailable(e.to_string()),
            other => StoreError::Query(other),
        }
    }
}

impl StoreError {
    /// Whether the same call may succeed later: only when Postgres was away, never when it
    /// refused what was sent or what it holds cannot be read.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

fn connection_lost(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection closed",
        "terminating connection",
        "connection reset",
        "broken pipe",
        "the database system is",
        "server closed the connection",
        "unexpected eof",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// Builds a pool; connections are opened lazily.
pub fn pool(url: &str, max_size: usize) -> Result<PgPool, StoreError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    deadpool::Pool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Checks out a connection, giving up after a few seconds.
pub async fn conn(pool: &PgPool) -> Result<PooledConn, StoreError> {
    match tokio::time::timeout(CHECKOUT_TIMEOUT, pool.get()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
        Err(_) => Err(StoreError::Unavailable(
            "timed out waiting for a connection".into(),
        )),
    }
}

/// Advisory lock key held while migrating.
const MIGRATION_LOCK: i64 = 0x0057_4159_4249_4c4c; // "WAYBILL" in ASCII

/// Applies pending migrations through the async connection, off the async threads.
pub async fn migrate(url: &str) -> Result<usize, StoreError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::Connection;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        use diesel::connection::SimpleConnection;
        // Replicas starting together take turns; the second finds nothing left to apply.
        conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")));
        conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
        result
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("migration task failed: {e}")))?
}

/// What every service does before it serves: apply migrations, open the pool, and load the
/// event catalog embedded in the binary (idempotent; an operator's choices survive).
pub async fn bootstrap(url: &str, pool_size: usize) -> Result<PgPool, StoreError> {
    let applied = migrate(url).await?;
    tracing::info!(applied, "migrations up to date");
    let pool = pool(url, pool_size)?;
    let defs =
        waybill_domain::catalog::definitions().map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut c = conn(&pool).await?;
    event_types::sync_catalog(&mut c, &defs).await?;
    tracing::info!(types = defs.len(), "event catalog loaded");
    drop(c);
    Ok(pool)
}

/// Whether Postgres answers a trivial query.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    use diesel_async::RunQueryDsl;
    let mut c = conn(pool).await?;
    diesel::sql_query("SELECT 1").execute(&mut c).await?;
    Ok(())
}
