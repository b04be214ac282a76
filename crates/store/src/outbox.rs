//! The change-feed outbox: rows written with each subscription change, drained by a relay.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use waybill_domain::change::SubscriptionChange;

use crate::{
    StoreError,
    schema::subscription_changes::{self, dsl},
};

/// One change waiting to be published.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscription_changes)]
pub struct PendingChange {
    pub seq: i64,
    pub payload: serde_json::Value,
}

/// Records a change; call inside the transaction that made it.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    change: &SubscriptionChange,
) -> Result<(), StoreError> {
    let payload = serde_json::to_value(change).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    diesel::insert_into(subscription_changes::table)
        .values((
            dsl::webhook_id.eq(change.webhook_id.as_uuid()),
            dsl::tenant.eq(&change.tenant),
            dsl::revision.eq(change.revision),
            dsl::kind.eq(change.kind.as_str()),
            dsl::payload.eq(payload),
            dsl::created_at.eq(change.changed_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The oldest unpublished changes, locked so that concurrent relays take different ones.
/// Call inside a transaction and mark them published before it commits.
pub async fn claim(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<PendingChange>> {
    subscription_changes::table
        .filter(dsl::published_at.is_null())
        .order(dsl::seq.asc())
        .limit(limit)
        .for_update()
        .skip_locked()
        .select(PendingChange::as_select())
        .load(conn)
        .await
}

pub async fn mark_published(
    conn: &mut AsyncPgConnection,
    seqs: &[i64],
    at: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::update(subscription_changes::table.filter(dsl::seq.eq_any(seqs)))
        .set(dsl::published_at.eq(at))
        .execute(conn)
        .await
}

/// How many changes wait to be published.
pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    subscription_changes::table
        .filter(dsl::published_at.is_null())
        .count()
        .get_result(conn)
        .await
}

/// Deletes published changes older than `before`, at most `batch` rows per call.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM subscription_changes WHERE seq IN \
         (SELECT seq FROM subscription_changes WHERE published_at < $1 ORDER BY seq LIMIT $2)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(before)
    .bind::<diesel::sql_types::BigInt, _>(batch)
    .execute(conn)
    .await
}
