//! Deleting what is past retention, a small batch per statement so no statement holds locks
//! (or a long transaction) while the hot path writes.

use chrono::{DateTime, Utc};
use diesel::{
    sql_query,
    sql_types::{BigInt, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Rows deleted by one pass, by table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub attempts: usize,
    pub deliveries: usize,
    pub events: usize,
}

/// Deletes one batch of each table older than `cutoff`: attempts by start, settled deliveries
/// by creation (a `pending` one is still owed and stays), events by reception once fanned out.
/// The conditions are repeated on the outer statement, so a row changed meanwhile (a delivery
/// reopened by a retry) is checked again when its lock is granted.
pub async fn purge_batch(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> diesel::QueryResult<Purged> {
    let attempts = sql_query(
        "DELETE FROM delivery_attempts WHERE ctid = ANY(ARRAY(\
           SELECT ctid FROM delivery_attempts WHERE started_at < $1 LIMIT $2)) AND started_at < $1",
    )
    .bind::<Timestamptz, _>(cutoff)
    .bind::<BigInt, _>(batch)
    .execute(conn)
    .await?;
    let deliveries = sql_query(
        "DELETE FROM deliveries WHERE ctid = ANY(ARRAY(\
           SELECT ctid FROM deliveries WHERE created_at < $1 AND status <> 'pending' LIMIT $2)) \
         AND created_at < $1 AND status <> 'pending'",
    )
    .bind::<Timestamptz, _>(cutoff)
    .bind::<BigInt, _>(batch)
    .execute(conn)
    .await?;
    let events = sql_query(
        "DELETE FROM events WHERE ctid = ANY(ARRAY(\
           SELECT ctid FROM events WHERE created_at < $1 AND fanned_out_at IS NOT NULL LIMIT $2)) \
         AND created_at < $1 AND fanned_out_at IS NOT NULL",
    )
    .bind::<Timestamptz, _>(cutoff)
    .bind::<BigInt, _>(batch)
    .execute(conn)
    .await?;
    Ok(Purged {
        attempts,
        deliveries,
        events,
    })
}
