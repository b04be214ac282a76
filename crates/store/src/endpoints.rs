//! Per-receiver state shared by every dispatcher replica: the rate limiter's next free slot and
//! the circuit breaker's stored [`Health`]. The rules are the domain's
//! (`waybill_domain::breaker`, `waybill_domain::throttle`); this module stores what they
//! compute and makes the writes of competing replicas safe. Times come from Postgres's clock,
//! so replicas agree on them.
//!
//! The breaker is read with the database's `now` ([`read_health`]), the domain computes the
//! next state, and [`swap_health`] writes it only if the row is still the one that was read
//! (compare-and-set). A replica that loses the race reads the current state and decides
//! again, so two failures counted at once are both counted and one
//! half-open probe is claimed by exactly one replica, without a row lock held between the read
//! and the write. The decision cannot be one SQL statement without the rules living in SQL;
//! the compare-and-set keeps them in the domain at the cost of a retried round under a race.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{
    PgExpressionMethods,
    prelude::*,
    sql_query,
    sql_types::{Int8, Timestamptz, Uuid as SqlUuid},
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

diesel::define_sql_function! {
    /// Postgres's clock, not frozen at the transaction's start.
    fn clock_timestamp() -> Timestamptz;
}

// The breaker's statements are diesel's typed queries rather than SQL text, so the connection
// prepares each once and a transition costs one round trip per statement: writers of one
// receiver wait on each other's round trips, which on a loaded machine is what takes time.

/// Reads a receiver's state with the clock the breaker's decision is to use.
pub async fn read_health(conn: &mut AsyncPgConnection, webhook_id: Uuid) -> QueryResult<Reading> {
    let row: Option<(DateTime<Utc>, HealthRow)> = endpoint_health::table
        .find(webhook_id)
        .select((clock_timestamp(), HealthRow::as_select()))
        .first(conn)
        .await
        .optional()?;
    Ok(match row {
        Some((now, row)) => Reading {
            health: Some(row.into()),
            now,
        },
        None => Reading {
            health: None,
            now: diesel::select(clock_timestamp()).get_result(conn).await?,
        },
    })
}

/// What became of a [`swap_health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The new state is stored.
    Done,
    /// Another replica changed the row since it was read; nothing was written. The state read
    /// again after it, to decide again from.
    Lost(Reading),
}

/// Replaces a receiver's state `old` (as read) with `new` (`None`: healthy, no row), unless
/// another replica changed it since; then it reads the current state for the caller to decide
/// again.
pub async fn swap_health(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    old: Option<&Health>,
    new: Option<&Health>,
) -> QueryResult<Swap> {
    use endpoint_health::dsl as h;

    let written = match (old, new) {
        (None, None) => return Ok(Swap::Done),
        (None, Some(new)) => {
            let new = HealthRow::from(new);
            // A row that appeared since the read is another replica's write.
            diesel::insert_into(h::endpoint_health)
                .values((
                    h::webhook_id.eq(webhook_id),
                    h::failures.eq(new.failures),
                    h::failing_since.eq(new.failing_since),
                    h::open_until.eq(new.open_until),
                    h::cooldown_ms.eq(new.cooldown_ms),
                    h::updated_at.eq(new.updated_at),
                ))
                .on_conflict(h::webhook_id)
                .do_nothing()
                .execute(conn)
                .await?
        }
        (Some(old), new) => {
            let old = HealthRow::from(old);
            let unchanged = h::endpoint_health
                .filter(h::webhook_id.eq(webhook_id))
                .filter(h::failures.eq(old.failures))
                .filter(h::failing_since.eq(old.failing_since))
                .filter(h::open_until.is_not_distinct_from(old.open_until))
                .filter(h::cooldown_ms.eq(old.cooldown_ms))
                .filter(h::updated_at.eq(old.updated_at));
            match new {
                None => diesel::delete(unchanged).execute(conn).await?,
                Some(new) => {
                    let new = HealthRow::from(new);
                    diesel::update(unchanged)
                        .set((
                            h::failures.eq(new.failures),
                            h::failing_since.eq(new.failing_since),
                            h::open_until.eq(new.open_until),
                            h::cooldown_ms.eq(new.cooldown_ms),
                            h::updated_at.eq(new.updated_at),
                        ))
                        .execute(conn)
                        .await?
                }
            }
        }
    };
    if written == 1 {
        return Ok(Swap::Done);
    }
    read_health(conn, webhook_id).await.map(Swap::Lost)
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
