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
    sql_types::{Array, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid},
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
    /// Seen for the first time: fan it out.
    Fresh,
    /// Seen before, but its fan-out never finished (a crash in between): fan it out again.
    Unfinished,
    /// Already fanned out: a duplicate.
    Done,
}

/// Records `event` unless its (tenant, id) is known, and tells whether it still needs fanning
/// out.
pub async fn take_event(
    conn: &mut AsyncPgConnection,
    event: &EventEnvelope,
) -> QueryResult<EventState> {
    let inserted = diesel::insert_into(events::table)
        .values((
            events::tenant.eq(event.tenant.as_str()),
            events::id.eq(&event.id),
            events::event_type.eq(event.kind.as_str()),
            events::client_id.eq(&event.client_id),
            events::occurred_at.eq(event.occurred_at),
            events::received_at.eq(event.received_at),
            events::data.eq(serde_json::Value::Object(event.data.clone())),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(EventState::Fresh);
    }
    let fanned_out: Option<Option<DateTime<Utc>>> = events::table
        .find((event.tenant.as_str(), &event.id))
        .select(events::fanned_out_at)
        .first(conn)
        .await
        .optional()?;
    Ok(match fanned_out {
        Some(Some(_)) => EventState::Done,
        // Gone between the two statements (retention): treat as new.
        None => EventState::Fresh,
        Some(None) => EventState::Unfinished,
    })
}

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(QueryableByName)]
struct Seen {
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    fanned_out_at: Option<DateTime<Utc>>,
}

/// [`take_event`] for many events at once (two statements whatever their number): the state of
/// each, in order. The same (tenant, id) twice in `batch` is taken once; the later copy is a
/// duplicate of the earlier one.
pub async fn take_events(
    conn: &mut AsyncPgConnection,
    batch: &[EventEnvelope],
) -> QueryResult<Vec<EventState>> {
    use diesel::sql_types::Jsonb;
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
    for (i, e) in batch.iter().enumerate() {
        first.entry((e.tenant.as_str(), e.id.as_str())).or_insert(i);
    }
    // In key order, so two replicas inserting overlapping batches wait for each other instead
    // of deadlocking.
    let unique: Vec<&EventEnvelope> = {
        let mut keys: Vec<(&str, &str)> = first.keys().copied().collect();
        keys.sort_unstable();
        keys.into_iter()
            .filter_map(|k| first.get(&k).map(|i| &batch[*i]))
            .collect()
    };
    let inserted: Vec<Key> = sql_query(
        "INSERT INTO events (tenant, id, event_type, client_id, occurred_at, received_at, data) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT DO NOTHING RETURNING tenant, id",
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
    .load(conn)
    .await?;
    let fresh: std::collections::HashSet<(String, String)> =
        inserted.into_iter().map(|k| (k.tenant, k.id)).collect();
    let known: Vec<&EventEnvelope> = unique
        .iter()
        .copied()
        .filter(|e| !fresh.contains(&(e.tenant.to_string(), e.id.clone())))
        .collect();
    let mut seen: HashMap<(String, String), Option<DateTime<Utc>>> = HashMap::new();
    if !known.is_empty() {
        let rows: Vec<Seen> = sql_query(
            "SELECT e.tenant, e.id, e.fanned_out_at FROM events e \
             JOIN unnest($1, $2) AS u(tenant, id) ON e.tenant = u.tenant AND e.id = u.id",
        )
        .bind::<Array<Text>, _>(known.iter().map(|e| e.tenant.as_str()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(known.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .load(conn)
        .await?;
        seen = rows
            .into_iter()
            .map(|r| ((r.tenant, r.id), r.fanned_out_at))
            .collect();
    }
    Ok(batch
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key = (e.tenant.to_string(), e.id.clone());
            if first.get(&(e.tenant.as_str(), e.id.as_str())) != Some(&i) {
                EventState::Done
            } else if fresh.contains(&key) {
                EventState::Fresh
            } else {
                match seen.get(&key) {
                    Some(Some(_)) => EventState::Done,
                    Some(None) => EventState::Unfinished,
                    // Gone between the two statements (retention): treat as new.
                    None => EventState::Fresh,
                }
            }
        })
        .collect())
}

/// [`finish_fan_out`] for many events in one transaction: every delivery row, then every
/// event marked fanned out. Delivery rows go in id order, so two replicas finishing overlapping
/// batches wait for each other on them; the order in which the `UPDATE` locks events is the
/// plan's, so two batches of the same events without deliveries could still deadlock, which
/// Postgres detects and the caller's one-by-one fallback absorbs.
pub async fn finish_fan_outs(
    conn: &mut AsyncPgConnection,
    batch: &[(String, String, Vec<NewDelivery>)],
) -> QueryResult<()> {
    let mut rows: Vec<&NewDelivery> = batch.iter().flat_map(|(_, _, r)| r).collect();
    rows.sort_by_key(|r| r.id);
    rows.dedup_by_key(|r| r.id);
    let mut keys: Vec<(&str, &str)> = batch
        .iter()
        .map(|(t, id, _)| (t.as_str(), id.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    conn.transaction(async |conn| {
        for chunk in rows.chunks(INSERT_CHUNK * 5) {
            sql_query(
                "INSERT INTO deliveries (id, tenant, webhook_id, event_id, event_type, status, \
                 attempts, created_at, updated_at) \
                 SELECT u.id, u.tenant, u.webhook_id, u.event_id, u.event_type, u.status, 0, \
                        u.at, u.at \
                 FROM unnest($1, $2, $3, $4, $5, $6, $7) \
                   AS u(id, tenant, webhook_id, event_id, event_type, status, at) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind::<Array<SqlUuid>, _>(chunk.iter().map(|r| r.id.as_uuid()).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(chunk.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>())
            .bind::<Array<SqlUuid>, _>(
                chunk
                    .iter()
                    .map(|r| r.webhook_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(
                chunk
                    .iter()
                    .map(|r| r.event_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(
                chunk
                    .iter()
                    .map(|r| r.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(chunk.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind::<Array<Timestamptz>, _>(chunk.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        }
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

/// A delivery the fan-out created.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = deliveries)]
pub struct NewDelivery {
    #[diesel(serialize_as = Uuid)]
    pub id: DeliveryId,
    pub tenant: String,
    #[diesel(serialize_as = Uuid)]
    pub webhook_id: WebhookId,
    pub event_id: String,
    pub event_type: String,
    #[diesel(serialize_as = StatusColumn)]
    pub status: DeliveryStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Rows per insert statement (Postgres takes at most 65,535 bound values).
const INSERT_CHUNK: usize = 1_000;

/// Records the pending deliveries of an event (those already recorded stay as they are) and
/// marks the event fanned out, in one transaction.
pub async fn finish_fan_out(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    event_id: &str,
    rows: &[NewDelivery],
) -> QueryResult<()> {
    conn.transaction(async |conn| {
        for chunk in rows.chunks(INSERT_CHUNK) {
            diesel::insert_into(deliveries::table)
                .values(chunk.to_vec())
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
        }
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
    let mut latest: HashMap<DeliveryId, &DeliveryRecord> = HashMap::with_capacity(batch.len());
    let mut attempts: HashMap<(DeliveryId, i32), (DeliveryId, &AttemptRecord)> = HashMap::new();
    for r in batch {
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
    conn.transaction(async |conn| {
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
        .bind::<Array<Nullable<Int4>>, _>(
            rows.iter().map(|r| r.last_status_code).collect::<Vec<_>>(),
        )
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
            .bind::<Array<Timestamptz>, _>(
                tries.iter().map(|(_, a)| a.started_at).collect::<Vec<_>>(),
            )
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
    })
    .await
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
