//! Per-receiver state shared by every dispatcher replica: the rate limiter's next free slot and
//! the circuit breaker's stored [`Health`]. The rules are the domain's
//! (`waybill_domain::breaker`, `waybill_domain::throttle`); this module stores what they
//! compute and makes the writes of competing replicas safe. Times come from Postgres's clock,
//! so replicas agree on them.
//!
//! The breaker is read with the database's `now` ([`read_health`]), the domain computes the
//! next state, and [`swap_health`] writes it only if the row is still the one that was read
//! (compare-and-set). A replica that loses the race gets the current state back from the same
//! statement and decides again, so two failures counted at once are both counted and one
//! half-open probe is claimed by exactly one replica, without a row lock held between the read
//! and the write. The decision cannot be one SQL statement without the rules living in SQL;
//! the compare-and-set keeps them in the domain at the cost of a retried round under a race.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_query,
    sql_types::{Bool, Int4, Int8, Nullable, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;
use waybill_domain::breaker::Health;

use crate::schema::{endpoint_health, endpoint_throttle};

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[derive(QueryableByName)]
struct Slot {
    #[diesel(sql_type = Timestamptz)]
    slot: DateTime<Utc>,
}

/// Takes the next free slot of a receiver limited to one request per `spacing` (from
/// `waybill_domain::throttle::spacing`): the returned time is when this delivery may be sent
/// (now, or later when others hold the slots before it). Every replica takes its slots from the
/// same row, so the limit holds over all of them.
pub async fn reserve_slot(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    spacing: Duration,
) -> QueryResult<DateTime<Utc>> {
    // This is `waybill_domain::throttle::reserve` (slot = max(next_slot, now), next_slot = slot
    // + spacing), applied under the row lock of one upsert rather than read, computed and
    // compared-and-set like the breaker: every delivery to a limited receiver takes a slot, so
    // a busy one would have its replicas losing the compare on almost every reservation, just
    // when the limit matters.
    let row: Slot = sql_query(
        "INSERT INTO endpoint_throttle AS t (webhook_id, next_slot) \
         VALUES ($1, clock_timestamp() + $2 * interval '1 microsecond') \
         ON CONFLICT (webhook_id) DO UPDATE \
           SET next_slot = GREATEST(t.next_slot, clock_timestamp()) + $2 * interval '1 microsecond' \
         RETURNING next_slot - $2 * interval '1 microsecond' AS slot",
    )
    .bind::<SqlUuid, _>(webhook_id)
    .bind::<Int8, _>(micros(spacing))
    .get_result(conn)
    .await?;
    Ok(row.slot)
}

/// One `endpoint_health` row.
#[derive(Queryable, Selectable)]
#[diesel(table_name = endpoint_health)]
struct HealthRow {
    failures: i32,
    failing_since: DateTime<Utc>,
    open_until: Option<DateTime<Utc>>,
    cooldown_ms: i32,
    updated_at: DateTime<Utc>,
}

impl From<HealthRow> for Health {
    fn from(row: HealthRow) -> Self {
        Health {
            failures: u32::try_from(row.failures).unwrap_or(0),
            failing_since: row.failing_since,
            open_until: row.open_until,
            cooldown: Duration::from_millis(u64::try_from(row.cooldown_ms).unwrap_or(0)),
            updated_at: row.updated_at,
        }
    }
}

impl From<&Health> for HealthRow {
    fn from(h: &Health) -> Self {
        HealthRow {
            failures: i32::try_from(h.failures).unwrap_or(i32::MAX),
            failing_since: h.failing_since,
            open_until: h.open_until,
            cooldown_ms: millis(h.cooldown),
            updated_at: h.updated_at,
        }
    }
}

/// A receiver's stored health and the database's clock, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The stored state; `None`: healthy.
    pub health: Option<Health>,
    /// Postgres's `clock_timestamp()` at the read.
    pub now: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct ReadingRow {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Int4>)]
    failures: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    failing_since: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    open_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Int4>)]
    cooldown_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    updated_at: Option<DateTime<Utc>>,
}

impl From<ReadingRow> for Reading {
    fn from(row: ReadingRow) -> Self {
        let health = match (
            row.failures,
            row.failing_since,
            row.cooldown_ms,
            row.updated_at,
        ) {
            (Some(failures), Some(failing_since), Some(cooldown_ms), Some(updated_at)) => Some(
                HealthRow {
                    failures,
                    failing_since,
                    open_until: row.open_until,
                    cooldown_ms,
                    updated_at,
                }
                .into(),
            ),
            _ => None,
        };
        Reading {
            health,
            now: row.now,
        }
    }
}

/// The clock and a receiver's row (`$1`); the left join returns the clock even when there is no
/// row (a healthy receiver).
const READ: &str = "SELECT clock_timestamp() AS now, \
        h.failures, h.failing_since, h.open_until, h.cooldown_ms, h.updated_at \
    FROM (SELECT 1) AS one \
    LEFT JOIN endpoint_health h ON h.webhook_id = $1";

/// Reads a receiver's state with the clock the breaker's decision is to use.
pub async fn read_health(conn: &mut AsyncPgConnection, webhook_id: Uuid) -> QueryResult<Reading> {
    let row: ReadingRow = sql_query(READ)
        .bind::<SqlUuid, _>(webhook_id)
        .get_result(conn)
        .await?;
    Ok(row.into())
}

/// What became of a [`swap_health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The new state is stored.
    Done,
    /// Another replica changed the row since it was read; nothing was written. The state as this
    /// statement saw it, to decide again from (possibly still behind a write that was
    /// committing meanwhile, which only costs another round).
    Lost(Reading),
}

#[derive(QueryableByName)]
struct SwapRow {
    #[diesel(sql_type = Bool)]
    swapped: bool,
    #[diesel(embed)]
    reading: ReadingRow,
}

/// The row `$1` still holds the state `$2..=$6`.
const UNCHANGED: &str = "webhook_id = $1 AND failures = $2 AND failing_since = $3 \
    AND open_until IS NOT DISTINCT FROM $4 AND cooldown_ms = $5 AND updated_at = $6";

/// Replaces a receiver's state `old` (as read) with `new` (`None`: healthy, no row), unless
/// another replica changed it since; then it reads the current state in the same statement, so
/// a replica that lost the race decides again without another round trip.
pub async fn swap_health(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    old: Option<&Health>,
    new: Option<&Health>,
) -> QueryResult<Swap> {
    // `$2..=$6` is the first state given (the old one, or the row to insert), `$7..=$11` the
    // new one of an update.
    let write = match (old, new) {
        (None, None) => return Ok(Swap::Done),
        // A row that appeared since the read is another replica's write.
        (None, Some(_)) => "INSERT INTO endpoint_health \
                (webhook_id, failures, failing_since, open_until, cooldown_ms, updated_at) \
            VALUES ($1, $2, $3, $4, $5, $6) \
            ON CONFLICT (webhook_id) DO NOTHING RETURNING 1"
            .to_owned(),
        (Some(_), None) => format!("DELETE FROM endpoint_health WHERE {UNCHANGED} RETURNING 1"),
        (Some(_), Some(_)) => format!(
            "UPDATE endpoint_health SET failures = $7, failing_since = $8, open_until = $9, \
                cooldown_ms = $10, updated_at = $11 \
             WHERE {UNCHANGED} RETURNING 1"
        ),
    };
    // The outer select sees the row as it was when the statement began, not the write in it:
    // after a lost race that is the other replica's state (or, rarely, the one before it).
    let query = sql_query(format!(
        "WITH written AS ({write}) \
         SELECT EXISTS (SELECT 1 FROM written) AS swapped, r.* FROM ({READ}) AS r"
    ))
    .bind::<SqlUuid, _>(webhook_id)
    .into_boxed();
    let query = [old, new]
        .into_iter()
        .flatten()
        .map(HealthRow::from)
        .fold(query, |q, row| {
            q.bind::<Int4, _>(row.failures)
                .bind::<Timestamptz, _>(row.failing_since)
                .bind::<Nullable<Timestamptz>, _>(row.open_until)
                .bind::<Int4, _>(row.cooldown_ms)
                .bind::<Timestamptz, _>(row.updated_at)
        });
    let row: SwapRow = query.get_result(conn).await?;
    Ok(if row.swapped {
        Swap::Done
    } else {
        Swap::Lost(row.reading.into())
    })
}

/// A request succeeded: the streak ends and the circuit closes. A success ends the streak from
/// every state, so this needs no read and no compare.
pub async fn record_success(conn: &mut AsyncPgConnection, webhook_id: Uuid) -> QueryResult<()> {
    diesel::delete(endpoint_health::table.find(webhook_id))
        .execute(conn)
        .await
        .map(drop)
}

/// Closes a subscription's circuit and ends its failing streak (changed, disabled or turned
/// back on). Its rate-limit slots stay: messages waiting for them keep their turn.
pub async fn forget_health(conn: &mut AsyncPgConnection, webhook_id: Uuid) -> QueryResult<()> {
    record_success(conn, webhook_id).await
}

/// Drops every per-receiver state of a deleted subscription.
pub async fn forget(conn: &mut AsyncPgConnection, webhook_id: Uuid) -> QueryResult<()> {
    diesel::delete(endpoint_health::table.find(webhook_id))
        .execute(conn)
        .await?;
    diesel::delete(endpoint_throttle::table.find(webhook_id))
        .execute(conn)
        .await
        .map(drop)
}

/// Every failing receiver (the table only holds those, so it stays small).
pub async fn failing(conn: &mut AsyncPgConnection) -> QueryResult<Vec<(Uuid, Health)>> {
    let rows: Vec<(Uuid, HealthRow)> = endpoint_health::table
        .select((endpoint_health::webhook_id, HealthRow::as_select()))
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|(id, row)| (id, row.into())).collect())
}
