//! Per-receiver state shared by every dispatcher replica: the rate limiter's next free slot and
//! the circuit breaker with its failing streak. Times come from Postgres's clock, so replicas
//! agree on them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_query,
    sql_types::{Bool, Int4, Int8, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

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

/// Takes the next free slot of a receiver limited to one request per `spacing`: the returned
/// time is when this delivery may be sent (now, or later when others hold the slots before it).
/// Every replica takes its slots from the same row, so the limit holds over all of them.
pub async fn reserve_slot(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    spacing: Duration,
) -> QueryResult<DateTime<Utc>> {
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

/// A receiver's failing streak and circuit.
#[derive(Debug, Clone, QueryableByName, Queryable, Selectable)]
#[diesel(table_name = endpoint_health)]
pub struct Health {
    /// Failed requests since the last success.
    pub failures: i32,
    /// When the first of them was sent.
    pub failing_since: DateTime<Utc>,
    /// The circuit is open until then; `None`: closed.
    pub open_until: Option<DateTime<Utc>>,
}

/// The breaker's settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Failures in a row that open the circuit.
    pub threshold: u32,
    /// How long it first stays open.
    pub cooldown: Duration,
    /// The longest it stays open; each failed probe doubles the time up to this.
    pub max_cooldown: Duration,
    /// A failure this long after the previous one starts a new streak: the receiver was not
    /// failing continuously, it had nothing to receive.
    pub streak_gap: Duration,
}

/// What a replica may do with a receiver whose circuit it saw open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeClaim {
    /// This replica sends the one probe; the circuit stays open to the others until `lease`.
    Claimed,
    /// The circuit is still open until then (another replica is probing, or the cooldown runs).
    Open(DateTime<Utc>),
    /// The circuit is closed; `failing` when the receiver's last request failed all the same.
    Closed { failing: bool },
}

/// The receiver's state; `None` when it is healthy.
pub async fn health(conn: &mut AsyncPgConnection, webhook_id: Uuid) -> QueryResult<Option<Health>> {
    endpoint_health::table
        .find(webhook_id)
        .select(Health::as_select())
        .first(conn)
        .await
        .optional()
}

/// Claims the half-open probe once the circuit's cooldown is over. The claim keeps the circuit
/// open to everyone else for `lease` (long enough for the probe to be answered).
pub async fn claim_probe(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    lease: Duration,
) -> QueryResult<ProbeClaim> {
    let claimed = sql_query(
        "UPDATE endpoint_health \
         SET open_until = clock_timestamp() \
               + GREATEST(cooldown_ms::bigint * 1000, $2) * interval '1 microsecond', \
             updated_at = clock_timestamp() \
         WHERE webhook_id = $1 AND open_until <= clock_timestamp() \
         RETURNING failures, failing_since, open_until",
    )
    .bind::<SqlUuid, _>(webhook_id)
    .bind::<Int8, _>(micros(lease))
    .get_results::<Health>(conn)
    .await?;
    if !claimed.is_empty() {
        return Ok(ProbeClaim::Claimed);
    }
    Ok(match health(conn, webhook_id).await? {
        Some(Health {
            open_until: Some(until),
            ..
        }) => ProbeClaim::Open(until),
        Some(_) => ProbeClaim::Closed { failing: true },
        None => ProbeClaim::Closed { failing: false },
    })
}

/// Counts a failed request and returns the state after it. The circuit opens at the
/// threshold; a failed probe (or a failure seen after the cooldown ended) reopens it for twice
/// the previous time, up to the policy's longest. A streak whose last failure is older than the
/// policy's `streak_gap` is forgotten first.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    sent_at: DateTime<Utc>,
    probe: bool,
    policy: &BreakerPolicy,
) -> QueryResult<Health> {
    sql_query(
        "DELETE FROM endpoint_health \
         WHERE webhook_id = $1 AND updated_at < clock_timestamp() - $2 * interval '1 millisecond'",
    )
    .bind::<SqlUuid, _>(webhook_id)
    .bind::<Int8, _>(i64::try_from(policy.streak_gap.as_millis()).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    sql_query(
        "INSERT INTO endpoint_health AS h \
           (webhook_id, failures, failing_since, open_until, cooldown_ms, updated_at) \
         VALUES ($1, 1, $2, \
                 CASE WHEN $4 <= 1 THEN clock_timestamp() + $5 * interval '1 millisecond' END, \
                 $5, clock_timestamp()) \
         ON CONFLICT (webhook_id) DO UPDATE SET \
           failures = h.failures + 1, \
           failing_since = LEAST(h.failing_since, EXCLUDED.failing_since), \
           cooldown_ms = CASE \
             WHEN $3 OR h.open_until <= clock_timestamp() THEN LEAST(h.cooldown_ms::bigint * 2, $6) \
             WHEN h.open_until IS NULL THEN $5 \
             ELSE h.cooldown_ms END, \
           open_until = CASE \
             WHEN $3 OR h.open_until <= clock_timestamp() \
               THEN clock_timestamp() + LEAST(h.cooldown_ms::bigint * 2, $6) * interval '1 millisecond' \
             WHEN h.open_until IS NULL AND h.failures + 1 >= $4 \
               THEN clock_timestamp() + $5 * interval '1 millisecond' \
             ELSE h.open_until END, \
           updated_at = clock_timestamp() \
         RETURNING h.failures, h.failing_since, h.open_until",
    )
    .bind::<SqlUuid, _>(webhook_id)
    .bind::<Timestamptz, _>(sent_at)
    .bind::<Bool, _>(probe)
    .bind::<Int4, _>(i32::try_from(policy.threshold).unwrap_or(i32::MAX))
    .bind::<Int4, _>(millis(policy.cooldown))
    .bind::<Int4, _>(millis(policy.max_cooldown))
    .get_result(conn)
    .await
}

/// A request succeeded: the streak ends and the circuit closes.
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
    endpoint_health::table
        .select((endpoint_health::webhook_id, Health::as_select()))
        .load(conn)
        .await
}
