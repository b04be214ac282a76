//! Per-receiver state shared by every dispatcher replica: the rate limiter's next free slot and
//! the circuit breaker's stored [`Health`]. The rules are the domain's
//! (`waybill_domain::breaker`, `waybill_domain::throttle`); this module stores what they
//! compute and makes the writes of competing replicas safe. Times come from Postgres's clock,
//! so replicas agree on them.
//!
//! The breaker moves one step per transaction ([`transition_health`]): it takes a lock for the
//! receiver, reads the stored state and the database's clock, lets the domain compute the next
//! state and writes it. Replicas writing one receiver at once queue on that lock, like writers
//! of one row queue on its row lock, so two failures counted at once are both counted and one
//! half-open probe is claimed by exactly one replica; a writer waits for the ones before it,
//! never retries and never gives up. The decision cannot be one SQL statement without the rules
//! living in SQL; the lock keeps them in the domain at the cost of a transaction (five round
//! trips at most) per step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_query,
    sql_types::{Int8, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
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
    // + spacing), applied under the row lock of one upsert rather than in a locked transaction
    // that reads, computes and writes like the breaker's: every delivery to a limited receiver
    // takes a slot, so one round trip instead of five matters most when the limit is busy, and
    // the rule is small enough to say in SQL.
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

/// One `endpoint_health` row but its key. A closed circuit's `open_until` is written as NULL.
#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = endpoint_health, treat_none_as_null = true)]
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

// The breaker's statements are diesel's typed queries where diesel can say them, so the
// connection prepares each once: writers of one receiver wait on each other's round trips under
// its lock, which on a loaded machine is what takes time.

/// Reads a receiver's state and Postgres's clock, without the receiver's lock: what a
/// [`transition_health`] would start from if it ran now.
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

/// The advisory-lock key of a receiver's health: the webhook id folded to 64 bits. Two
/// receivers sharing a key only wait for each other's transitions, which stays correct; so does
/// a key equal to the migration lock's (a transition would wait for a migration).
fn health_lock_key(webhook_id: Uuid) -> i64 {
    let id = webhook_id.as_u128();
    // Folding keeps bits of every part of the id: v4 and v7 ids differ in different halves.
    i64::from_ne_bytes((((id >> 64) as u64) ^ (id as u64)).to_ne_bytes())
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

/// Moves a receiver's state one step: in one transaction, takes the receiver's lock, reads its
/// state and Postgres's clock, lets `decide` (the domain's rule) compute the next state and
/// what to return, writes that state (`None`: healthy, no row) unless it is the one read, and
/// commits. Writers of one receiver, on every replica, queue on the lock and each decides from
/// what the one before it stored, so none is lost and none gives up.
///
/// The lock is a transaction-scoped advisory lock rather than `SELECT … FOR UPDATE` because a
/// healthy receiver has no row to lock: locking a row would mean inserting one first and
/// deleting it again when the decision is "healthy", two writes where there may be none. The
/// lock is its own statement, before the read: under read committed each statement sees what
/// was committed when it started, so only a read that starts after the lock is granted sees
/// the previous holder's write. The clock is read with the lock, after the wait for it, so the
/// decision uses the time it is made at.
pub async fn transition_health<T, F>(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    decide: F,
) -> QueryResult<T>
where
    F: FnOnce(Option<&Health>, DateTime<Utc>) -> (Option<Health>, T) + Send,
    T: Send,
{
    conn.transaction(async move |conn| {
        // In `FROM`, the lock is taken before the select list (the clock) is computed.
        let locked: Locked =
            sql_query("SELECT clock_timestamp() AS now FROM pg_advisory_xact_lock($1)")
                .bind::<Int8, _>(health_lock_key(webhook_id))
                .get_result(conn)
                .await?;
        let current: Option<Health> = endpoint_health::table
            .find(webhook_id)
            .select(HealthRow::as_select())
            .first(conn)
            .await
            .optional()?
            .map(Health::from);
        let (next, out) = decide(current.as_ref(), locked.now);
        if next != current {
            write_health(conn, webhook_id, current.is_some(), next.as_ref()).await?;
        }
        Ok(out)
    })
    .await
}

/// Stores `new` in place of a state read under the receiver's lock (`existed`: there was a
/// row). Successes and subscription changes delete the row without the lock; a state decided
/// from a row that such a delete removed since is not written back (the update or delete
/// matches nothing), so the delete counts as coming after this transition, never before it.
async fn write_health(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    existed: bool,
    new: Option<&Health>,
) -> QueryResult<()> {
    use endpoint_health::dsl as h;

    let mine = h::endpoint_health.filter(h::webhook_id.eq(webhook_id));
    match (existed, new.map(HealthRow::from)) {
        (false, None) => {}
        (false, Some(new)) => {
            // Every insert is made under the lock, so no other row can have appeared.
            diesel::insert_into(h::endpoint_health)
                .values((h::webhook_id.eq(webhook_id), &new))
                .execute(conn)
                .await?;
        }
        (true, None) => {
            diesel::delete(mine).execute(conn).await?;
        }
        (true, Some(new)) => {
            diesel::update(mine).set(&new).execute(conn).await?;
        }
    }
    Ok(())
}

/// A request succeeded: the streak ends and the circuit closes. A success ends the streak from
/// every state, so this needs no read and no lock (see [`transition_health`] for how it
/// orders with a transition it overtakes).
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
