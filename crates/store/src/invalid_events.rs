//! Events the dispatcher refused, kept for an operator (see `waybill_domain::invalid_event`).

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_query,
    sql_types::{BigInt, Timestamptz},
    upsert::excluded,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;
use waybill_domain::invalid_event::{EXCERPT_BYTES, InvalidEvent};

use crate::schema::invalid_events::{self, dsl};

/// A stored record, its body whole (as stored).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = invalid_events)]
pub struct InvalidEventRow {
    pub id: Uuid,
    pub tenant: Option<String>,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    pub body: Vec<u8>,
    pub body_truncated: bool,
    pub body_bytes: i32,
}

/// Stores a refused event. The same message refused again (its id is derived from it) keeps
/// one record, with the latest reason and time.
pub async fn record(conn: &mut AsyncPgConnection, event: &InvalidEvent) -> QueryResult<()> {
    diesel::insert_into(invalid_events::table)
        .values((
            dsl::id.eq(event.id),
            dsl::tenant.eq(event.tenant.as_ref().map(|t| t.as_str())),
            dsl::routing_key.eq(&event.routing_key),
            dsl::message_id.eq(event.message_id.as_deref()),
            dsl::reason.eq(&event.reason),
            dsl::received_at.eq(event.received_at),
            dsl::body.eq(&event.body),
            dsl::body_truncated.eq(event.body_truncated),
            dsl::body_bytes.eq(i32::try_from(event.body_bytes).unwrap_or(i32::MAX)),
        ))
        .on_conflict(dsl::id)
        .do_update()
        .set((
            dsl::reason.eq(excluded(dsl::reason)),
            dsl::received_at.eq(excluded(dsl::received_at)),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Escapes `LIKE`'s wildcards, so a filter matches its text literally.
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A page of records, newest first, their bodies cut to [`EXCERPT_BYTES`] (and a few bytes
/// more, so the caller can cut on a character), and the total that matches. `reason` keeps the
/// records whose reason contains it, ignoring case.
pub async fn list(
    conn: &mut AsyncPgConnection,
    reason: Option<&str>,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<InvalidEventRow>, i64)> {
    let filtered = || {
        let mut q = invalid_events::table.into_boxed();
        if let Some(r) = reason {
            q = q.filter(dsl::reason.ilike(like_literal(r)));
        }
        q
    };
    let total: i64 = filtered().count().get_result(conn).await?;
    let head = diesel::dsl::sql::<diesel::sql_types::Binary>(&format!(
        "substring(body from 1 for {})",
        EXCERPT_BYTES + 4
    ));
    let rows = filtered()
        .order((dsl::received_at.desc(), dsl::id.desc()))
        .limit(limit)
        .offset(offset)
        .select((
            dsl::id,
            dsl::tenant,
            dsl::routing_key,
            dsl::message_id,
            dsl::reason,
            dsl::received_at,
            head,
            dsl::body_truncated,
            dsl::body_bytes,
        ))
        .load::<InvalidEventRow>(conn)
        .await?;
    Ok((rows, total))
}

/// One record, locked until the transaction ends (a re-drive holds it while the broker
/// confirms, so a concurrent re-drive or delete waits).
pub async fn find_for_update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<InvalidEventRow>> {
    invalid_events::table
        .find(id)
        .select(InvalidEventRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Deletes one record; whether there was one.
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    diesel::delete(invalid_events::table.find(id))
        .execute(conn)
        .await
        .map(|n| n > 0)
}

/// Deletes up to `batch` records received before `cutoff`; how many.
pub async fn purge_batch(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> QueryResult<usize> {
    sql_query(
        "DELETE FROM invalid_events WHERE id = ANY(ARRAY(\
           SELECT id FROM invalid_events WHERE received_at < $1 LIMIT $2)) AND received_at < $1",
    )
    .bind::<Timestamptz, _>(cutoff)
    .bind::<BigInt, _>(batch)
    .execute(conn)
    .await
}
