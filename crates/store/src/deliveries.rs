//! Events, deliveries and attempts: the dispatcher's record of what it owes and what it did.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{
    deserialize::{self, FromSql, FromSqlRow},
    expression::AsExpression,
    pg::{Pg, PgValue},
    prelude::*,
    serialize::{self, Output, ToSql},
    sql_query,
    sql_types::{Array, Bool, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;
use waybill_domain::{
    DeliveryId, WebhookId,
    delivery::{DeliveryStatus, LastError},
    event::EventEnvelope,
};

use crate::schema::{deliveries, events};

/// The `status` column, checked as it is read: a value outside [`DeliveryStatus`] is an error,
/// never taken for another status.
#[derive(Debug, Clone, Copy, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct StatusColumn(pub DeliveryStatus);

impl FromSql<Text, Pg> for StatusColumn {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let raw = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        Ok(StatusColumn(raw.parse()?))
    }
}

impl ToSql<Text, Pg> for StatusColumn {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.0.as_str(), out)
    }
}

impl From<StatusColumn> for DeliveryStatus {
    fn from(c: StatusColumn) -> Self {
        c.0
    }
}

impl From<DeliveryStatus> for StatusColumn {
    fn from(s: DeliveryStatus) -> Self {
        StatusColumn(s)
    }
}

/// Where an event stands when its message arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    /// Seen for the first time, and now claimed: fan it out.
    Fresh,
    /// Seen before, but its fan-out never finished (a crash in between, or a claim that
    /// expired), and now claimed: fan it out again.
    Unfinished,
    /// Already fanned out: a duplicate.
    Done,
    /// Another replica holds an unexpired claim on it: it is being fanned out there.
    Claimed,
}

/// Who claims the fan-out of the events it takes, and for how long before another replica may
/// take an unfinished one over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claiming process, unique among the replicas running.
    pub owner: String,
    pub lease: std::time::Duration,
}

/// Records `event` unless its (tenant, id) is known, claims its fan-out for `claim.owner` when
/// nobody else holds it, and tells whether this process is to fan it out.
pub async fn take_event(
    conn: &mut AsyncPgConnection,
    event: &EventEnvelope,
    claim: &Claim,
) -> QueryResult<EventState> {
    let states = take_events(conn, std::slice::from_ref(event), claim).await?;
    // One state per event given.
    Ok(states.into_iter().next().unwrap_or(EventState::Done))
}

#[derive(QueryableByName)]
struct Taken {
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Bool)]
    mine: bool,
    #[diesel(sql_type = Int4)]
    claims: i32,
}

/// [`take_event`] for many events in one statement, whatever their number: the state of each,
/// in order. The same (tenant, id) twice in `batch` is taken once; the later copy is a
/// duplicate of the earlier one.
///
/// The insert and the claim are one upsert, so its `WHERE` and `CASE`s see the row as it is
/// when locked, also when another replica inserted or claimed it a moment before: a row not
/// returned was already fanned out; one returned is claimed by this process (newly, or still
/// from an attempt of its own that failed) or by another one whose lease has not expired.
pub async fn take_events(
    conn: &mut AsyncPgConnection,
    batch: &[EventEnvelope],
    claim: &Claim,
) -> QueryResult<Vec<EventState>> {
    use diesel::sql_types::{Double, Jsonb};
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
    for (i, e) in batch.iter().enumerate() {
        first.entry((e.tenant.as_str(), e.id.as_str())).or_insert(i);
    }
    // In key order, so two replicas taking overlapping batches wait for each other instead of
    // deadlocking (and an upsert may not touch one row twice).
    let unique: Vec<&EventEnvelope> = {
        let mut keys: Vec<(&str, &str)> = first.keys().copied().collect();
        keys.sort_unstable();
        keys.into_iter()
            .filter_map(|k| first.get(&k).map(|i| &batch[*i]))
            .collect()
    };
    let taken: Vec<Taken> = sql_query(
        "INSERT INTO events AS e (tenant, id, event_type, client_id, occurred_at, received_at, \
           data, claimed_by, claimed_until, claims) \
         SELECT u.*, $8, now() + make_interval(secs => $9), 1 \
         FROM unnest($1, $2, $3, $4, $5, $6, $7) \
           AS u(tenant, id, event_type, client_id, occurred_at, received_at, data) \
         ORDER BY u.tenant, u.id \
         ON CONFLICT (tenant, id) DO UPDATE SET \
           claimed_by = CASE WHEN e.claimed_until IS NULL OR e.claimed_until <= now() \
               OR e.claimed_by = EXCLUDED.claimed_by \
             THEN EXCLUDED.claimed_by ELSE e.claimed_by END, \
           claimed_until = CASE WHEN e.claimed_until IS NULL OR e.claimed_until <= now() \
               OR e.claimed_by = EXCLUDED.claimed_by \
             THEN EXCLUDED.claimed_until ELSE e.claimed_until END, \
           claims = CASE WHEN e.claimed_until IS NULL OR e.claimed_until <= now() \
               OR e.claimed_by = EXCLUDED.claimed_by \
             THEN e.claims + 1 ELSE e.claims END \
         WHERE e.fanned_out_at IS NULL \
         RETURNING e.tenant, e.id, e.claimed_by IS NOT DISTINCT FROM $8 AS mine, e.claims",
    )
    .bind::<Array<Text>, _>(unique.iter().map(|e| e.tenant.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(unique.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(unique.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        unique
            .iter()
            .map(|e| e.client_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(unique.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(unique.iter().map(|e| e.received_at).collect::<Vec<_>>())
    .bind::<Array<Jsonb>, _>(
        unique
            .iter()
            .map(|e| serde_json::Value::Object(e.data.clone()))
            .collect::<Vec<_>>(),
    )
    .bind::<Text, _>(claim.owner.as_str())
    .bind::<Double, _>(claim.lease.as_secs_f64())
    .load(conn)
    .await?;
    let states: HashMap<(String, String), EventState> = taken
        .into_iter()
        .map(|t| {
            let state = match (t.mine, t.claims) {
                (false, _) => EventState::Claimed,
                (true, 1) => EventState::Fresh,
                (true, _) => EventState::Unfinished,
            };
            ((t.tenant, t.id), state)
        })
        .collect();
    Ok(batch
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if first.get(&(e.tenant.as_str(), e.id.as_str())) != Some(&i) {
                return EventState::Done;
            }
            states
                .get(&(e.tenant.to_string(), e.id.clone()))
                .copied()
                // Not returned: the row was there, fanned out.
                .unwrap_or(EventState::Done)
        })
        .collect())
}

/// Where another replica's fan-out of an event stands, as a replica waiting on its claim sees
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// Fanned out: the waiting copy is a duplicate.
    Done,
    /// Its claim has expired (or the row is gone): the waiting copy may take the event.
    Free,
    /// Still claimed.
    Held,
}

#[derive(QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = Bool)]
    done: bool,
    #[diesel(sql_type = Bool)]
    expired: bool,
}

/// Reads (without writing or locking) whether an event claimed by another replica is done or
/// free to take over.
pub async fn claim_state(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    id: &str,
) -> QueryResult<ClaimState> {
    let row: Option<ClaimRow> = sql_query(
        "SELECT fanned_out_at IS NOT NULL AS done, \
           coalesce(claimed_until <= now(), true) AS expired \
         FROM events WHERE tenant = $1 AND id = $2",
    )
    .bind::<Text, _>(tenant)
    .bind::<Text, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(match row {
        Some(r) if r.done => ClaimState::Done,
        Some(r) if !r.expired => ClaimState::Held,
        _ => ClaimState::Free,
    })
}

/// Ends `claim.owner`'s claim on an event it failed to fan out, so the event's next copy is
/// taken at once by whichever replica gets it, rather than after the lease.
pub async fn release_claim(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    id: &str,
    claim: &Claim,
) -> QueryResult<()> {
    sql_query(
        "UPDATE events SET claimed_until = now() \
         WHERE tenant = $1 AND id = $2 AND claimed_by = $3 AND fanned_out_at IS NULL",
    )
    .bind::<Text, _>(tenant)
    .bind::<Text, _>(id)
    .bind::<Text, _>(claim.owner.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Extends `claim.owner`'s claim on an event by its lease, from now; false when the claim is
/// someone else's now (it expired and another replica took the event over).
pub async fn renew_claim(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    id: &str,
    claim: &Claim,
) -> QueryResult<bool> {
    use diesel::sql_types::Double;
    let renewed = sql_query(
        "UPDATE events SET claimed_until = now() + make_interval(secs => $4) \
         WHERE tenant = $1 AND id = $2 AND claimed_by = $3",
    )
    .bind::<Text, _>(tenant)
    .bind::<Text, _>(id)
    .bind::<Text, _>(claim.owner.as_str())
    .bind::<Double, _>(claim.lease.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(renewed == 1)
}

/// [`finish_fan_out`] for many events in one transaction: every delivery's state (settled,
/// waiting on a queue, or not yet attempted), every attempt made, then every event marked fanned
/// out. Rows are written in id order ([`record`]'s rule), so two replicas finishing overlapping
/// batches wait for each other on them; the order in which the `UPDATE` locks events is the
/// plan's, so two batches of the same events could still deadlock, which Postgres detects and
/// the caller's one-by-one fallback absorbs.
pub async fn finish_fan_outs(
    conn: &mut AsyncPgConnection,
    batch: &[(String, String, Vec<DeliveryRecord>)],
) -> QueryResult<()> {
    let rows: Vec<&DeliveryRecord> = batch.iter().flat_map(|(_, _, r)| r).collect();
    let mut keys: Vec<(&str, &str)> = batch
        .iter()
        .map(|(t, id, _)| (t.as_str(), id.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    conn.transaction(async |conn| {
        write_records(conn, &rows).await?;
        sql_query(
            "UPDATE events SET fanned_out_at = now() \
             FROM unnest($1, $2) AS u(tenant, id) \
             WHERE events.tenant = u.tenant AND events.id = u.id",
        )
        .bind::<Array<Text>, _>(keys.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(keys.iter().map(|k| k.1).collect::<Vec<_>>())
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
}

/// Records the deliveries of an event as its fan-out left them (a state recorded already is
/// kept unless this one is further on, by [`record`]'s rule) and marks the event fanned out, in
/// one transaction.
pub async fn finish_fan_out(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    event_id: &str,
    rows: &[DeliveryRecord],
) -> QueryResult<()> {
    let rows: Vec<&DeliveryRecord> = rows.iter().collect();
    conn.transaction(async |conn| {
        write_records(conn, &rows).await?;
        diesel::update(events::table.find((tenant, event_id)))
            .set(events::fanned_out_at.eq(Utc::now()))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

/// Status and attempt count of a delivery, when it is recorded.
pub async fn progress(
    conn: &mut AsyncPgConnection,
    id: DeliveryId,
) -> QueryResult<Option<(DeliveryStatus, i32)>> {
    let found: Option<(StatusColumn, i32)> = deliveries::table
        .find(id.as_uuid())
        .select((deliveries::status, deliveries::attempts))
        .first(conn)
        .await
        .optional()?;
    Ok(found.map(|(status, attempts)| (status.0, attempts)))
}

/// One attempt as the attempt log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub number: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

/// A delivery's state after something happened to it, with the attempt that did it (if a
/// request was made or refused).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub tenant: String,
    pub webhook_id: WebhookId,
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<LastError>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
    pub attempt: Option<AttemptRecord>,
}

/// Writes a batch of delivery states and attempts in one transaction of two statements. A state
/// replaces the recorded one only when it has more attempts, or as many while the recorded one
/// is still `pending`: a late or repeated message cannot roll a delivery back, and a final status
/// changes only through a newer attempt (a tenant's retry). Within the batch the state with the
/// most attempts wins.
pub async fn record(conn: &mut AsyncPgConnection, batch: &[DeliveryRecord]) -> QueryResult<()> {
    let rows: Vec<&DeliveryRecord> = batch.iter().collect();
    conn.transaction(async |conn| write_records(conn, &rows).await)
        .await
}

/// [`record`]'s two statements, in the caller's transaction.
async fn write_records(conn: &mut AsyncPgConnection, batch: &[&DeliveryRecord]) -> QueryResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut latest: HashMap<DeliveryId, &DeliveryRecord> = HashMap::with_capacity(batch.len());
    let mut attempts: HashMap<(DeliveryId, i32), (DeliveryId, &AttemptRecord)> = HashMap::new();
    for &r in batch {
        match latest.get(&r.id) {
            Some(prev) if prev.attempts > r.attempts => {}
            _ => {
                latest.insert(r.id, r);
            }
        }
        if let Some(a) = &r.attempt {
            attempts.insert((r.id, a.number), (r.id, a));
        }
    }
    // One order for every writer, so two replicas writing overlapping rows cannot deadlock.
    let mut rows: Vec<&DeliveryRecord> = latest.into_values().collect();
    rows.sort_by_key(|r| r.id);
    let mut tries: Vec<(DeliveryId, &AttemptRecord)> = attempts.into_values().collect();
    tries.sort_by_key(|(id, a)| (*id, a.number));
    sql_query(
        "INSERT INTO deliveries (id, tenant, webhook_id, event_id, event_type, status, \
             attempts, last_status_code, last_error, next_attempt_at, created_at, updated_at) \
             SELECT *, u.at FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
               AS u(id, tenant, webhook_id, event_id, event_type, status, attempts, \
                    last_status_code, last_error, next_attempt_at, at) \
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
               attempts = EXCLUDED.attempts, last_status_code = EXCLUDED.last_status_code, \
               last_error = EXCLUDED.last_error, next_attempt_at = EXCLUDED.next_attempt_at, \
               updated_at = EXCLUDED.updated_at \
             WHERE deliveries.attempts < EXCLUDED.attempts \
                OR (deliveries.status = 'pending' AND deliveries.attempts = EXCLUDED.attempts)",
    )
    .bind::<Array<SqlUuid>, _>(rows.iter().map(|r| r.id.as_uuid()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>())
    .bind::<Array<SqlUuid>, _>(
        rows.iter()
            .map(|r| r.webhook_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        rows.iter()
            .map(|r| r.event_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind::<Array<Int4>, _>(rows.iter().map(|r| r.attempts).collect::<Vec<_>>())
    .bind::<Array<Nullable<Int4>>, _>(rows.iter().map(|r| r.last_status_code).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        rows.iter()
            .map(|r| r.last_error.as_ref().map(LastError::to_string))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Timestamptz>>, _>(
        rows.iter().map(|r| r.next_attempt_at).collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(rows.iter().map(|r| r.at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    if !tries.is_empty() {
        sql_query(
            "INSERT INTO delivery_attempts (delivery_id, number, started_at, duration_ms, \
                 status_code, error, response_body) \
                 SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (delivery_id, number) DO UPDATE SET \
                   started_at = EXCLUDED.started_at, duration_ms = EXCLUDED.duration_ms, \
                   status_code = EXCLUDED.status_code, error = EXCLUDED.error, \
                   response_body = EXCLUDED.response_body",
        )
        .bind::<Array<SqlUuid>, _>(tries.iter().map(|(id, _)| id.as_uuid()).collect::<Vec<_>>())
        .bind::<Array<Int4>, _>(tries.iter().map(|(_, a)| a.number).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(tries.iter().map(|(_, a)| a.started_at).collect::<Vec<_>>())
        .bind::<Array<Int4>, _>(tries.iter().map(|(_, a)| a.duration_ms).collect::<Vec<_>>())
        .bind::<Array<Nullable<Int4>>, _>(
            tries.iter().map(|(_, a)| a.status_code).collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            tries
                .iter()
                .map(|(_, a)| a.error.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            tries
                .iter()
                .map(|(_, a)| a.response_body.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// A delivery as the delivery log shows it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = deliveries)]
pub struct DeliveryRow {
    #[diesel(deserialize_as = Uuid)]
    pub id: DeliveryId,
    pub tenant: String,
    #[diesel(deserialize_as = Uuid)]
    pub webhook_id: WebhookId,
    pub event_id: String,
    pub event_type: String,
    #[diesel(deserialize_as = StatusColumn)]
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One attempt as the delivery log shows it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = crate::schema::delivery_attempts)]
pub struct AttemptRow {
    pub number: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

/// An event as recorded by the fan-out.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub id: String,
    pub event_type: String,
    pub client_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// Filters of the delivery log; `since` is inclusive, `until` exclusive (on `created_at`).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A subscription's deliveries, newest first, a page at a time, with the total matching. The
/// caller has checked that the subscription is the tenant's (its deliveries are all of its
/// tenant), so the query stays on the `(webhook_id, created_at, id)` index.
pub async fn list(
    conn: &mut AsyncPgConnection,
    webhook_id: WebhookId,
    filter: &DeliveryFilter,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<DeliveryRow>, i64)> {
    let query = || {
        let mut q = deliveries::table
            .filter(deliveries::webhook_id.eq(webhook_id.as_uuid()))
            .into_boxed();
        if let Some(s) = &filter.status {
            q = q.filter(deliveries::status.eq(s.as_str()));
        }
        if let Some(t) = &filter.event_type {
            q = q.filter(deliveries::event_type.eq(t.clone()));
        }
        if let Some(since) = filter.since {
            q = q.filter(deliveries::created_at.ge(since));
        }
        if let Some(until) = filter.until {
            q = q.filter(deliveries::created_at.lt(until));
        }
        q
    };
    let rows = query()
        .order((deliveries::created_at.desc(), deliveries::id.desc()))
        .limit(limit)
        .offset(offset)
        .select(DeliveryRow::as_select())
        .load(conn)
        .await?;
    let count = query().count().get_result(conn).await?;
    Ok((rows, count))
}

/// A delivery of `tenant` with its attempts (by number) and its event (if still recorded).
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    id: DeliveryId,
) -> QueryResult<Option<(DeliveryRow, Option<EventRow>, Vec<AttemptRow>)>> {
    let id = id.as_uuid();
    use crate::schema::delivery_attempts;
    let Some(row) = deliveries::table
        .filter(deliveries::id.eq(id))
        .filter(deliveries::tenant.eq(tenant))
        .select(DeliveryRow::as_select())
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    let event = events::table
        .find((tenant, &row.event_id))
        .select(EventRow::as_select())
        .first(conn)
        .await
        .optional()?;
    let attempts = delivery_attempts::table
        .filter(delivery_attempts::delivery_id.eq(id))
        .order(delivery_attempts::number.asc())
        .select(AttemptRow::as_select())
        .load(conn)
        .await?;
    Ok(Some((row, event, attempts)))
}

/// Puts deliveries back to `pending` for one more attempt each, in the caller's transaction
/// (the caller publishes their messages before committing, so a delivery is never left
/// pending without a message). Returns each with its event, if still recorded.
pub async fn reopen(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    ids: &[DeliveryId],
) -> QueryResult<Vec<(DeliveryRow, Option<EventRow>)>> {
    let now = Utc::now();
    let ids: Vec<Uuid> = ids.iter().map(DeliveryId::as_uuid).collect();
    let rows: Vec<DeliveryRow> = diesel::update(
        deliveries::table
            .filter(deliveries::tenant.eq(tenant))
            .filter(deliveries::id.eq_any(&ids)),
    )
    .set((
        deliveries::status.eq(DeliveryStatus::Pending.as_str()),
        deliveries::next_attempt_at.eq(now),
        deliveries::updated_at.eq(now),
    ))
    .returning(DeliveryRow::as_returning())
    .get_results(conn)
    .await?;
    let event_ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let found: Vec<EventRow> = events::table
        .filter(events::tenant.eq(tenant))
        .filter(events::id.eq_any(&event_ids))
        .select(EventRow::as_select())
        .load(conn)
        .await?;
    let by_id: HashMap<String, EventRow> = found.into_iter().map(|e| (e.id.clone(), e)).collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let e = by_id.get(&r.event_id).cloned();
            (r, e)
        })
        .collect())
}

/// Ids of a subscription's `failed` deliveries created in `[since, until)`, oldest first, at
/// most `limit`, locked for the caller's transaction (a concurrent recover skips them).
pub async fn failed_in_window(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    webhook_id: WebhookId,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    limit: i64,
) -> QueryResult<Vec<DeliveryId>> {
    let ids: Vec<Uuid> = deliveries::table
        .filter(deliveries::webhook_id.eq(webhook_id.as_uuid()))
        .filter(deliveries::tenant.eq(tenant))
        .filter(deliveries::status.eq(DeliveryStatus::Failed.as_str()))
        .filter(deliveries::created_at.ge(since))
        .filter(deliveries::created_at.lt(until.unwrap_or(DateTime::<Utc>::MAX_UTC)))
        // One whose event is past retention cannot be replayed; it must not block the rest.
        .filter(diesel::dsl::exists(
            events::table
                .filter(events::tenant.eq(deliveries::tenant))
                .filter(events::id.eq(deliveries::event_id)),
        ))
        .order((deliveries::created_at.asc(), deliveries::id.asc()))
        .limit(limit)
        .select(deliveries::id)
        .for_update()
        .skip_locked()
        .load(conn)
        .await?;
    Ok(ids.into_iter().map(DeliveryId::from_uuid).collect())
}
