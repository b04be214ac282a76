//! The event catalog table.

use chrono::{DateTime, Utc};
use diesel::{prelude::*, upsert::excluded};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use waybill_domain::EventDefinition;

use crate::schema::event_types::{self, dsl};

/// One catalog row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = event_types)]
pub struct EventTypeRow {
    pub name: String,
    pub group_name: String,
    pub action: String,
    pub description: String,
    pub description_overridden: bool,
    pub schema: serde_json::Value,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Upserts the catalog from its definitions: new types arrive active; an existing type keeps its
/// `active` flag and an operator's description.
pub async fn sync_catalog(
    conn: &mut AsyncPgConnection,
    defs: &[EventDefinition],
) -> QueryResult<usize> {
    let now = Utc::now();
    let rows: Vec<_> = defs
        .iter()
        .map(|d| {
            (
                dsl::name.eq(d.name.as_str()),
                dsl::group_name.eq(d.name.group()),
                dsl::action.eq(d.name.action()),
                dsl::description.eq(d.description.as_str()),
                dsl::schema.eq(&d.schema),
                dsl::created_at.eq(now),
                dsl::updated_at.eq(now),
            )
        })
        .collect();
    diesel::insert_into(event_types::table)
        .values(rows)
        .on_conflict(dsl::name)
        .do_update()
        .set((
            dsl::schema.eq(excluded(dsl::schema)),
            dsl::description.eq(diesel::dsl::sql::<diesel::sql_types::Text>(
                "CASE WHEN event_types.description_overridden THEN event_types.description ELSE excluded.description END",
            )),
            dsl::updated_at.eq(diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
                "CASE WHEN event_types.schema = excluded.schema AND (event_types.description_overridden OR event_types.description = excluded.description) THEN event_types.updated_at ELSE excluded.updated_at END",
            )),
        ))
        .execute(conn)
        .await
}

/// Filters of the catalog listing.
#[derive(Debug, Default, Clone)]
pub struct EventTypeFilter {
    pub group: Option<String>,
    pub active: Option<bool>,
}

/// A page of the catalog and the total that matches.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &EventTypeFilter,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<EventTypeRow>, i64)> {
    let filtered = || {
        let mut q = event_types::table.into_boxed();
        if let Some(g) = &filter.group {
            q = q.filter(dsl::group_name.eq(g.clone()));
        }
        if let Some(a) = filter.active {
            q = q.filter(dsl::active.eq(a));
        }
        q
    };
    let total: i64 = filtered().count().get_result(conn).await?;
    let rows = filtered()
        .order(dsl::name.asc())
        .limit(limit)
        .offset(offset)
        .select(EventTypeRow::as_select())
        .load(conn)
        .await?;
    Ok((rows, total))
}

pub async fn find(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<Option<EventTypeRow>> {
    event_types::table
        .find(name)
        .select(EventTypeRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Changes an event type's `active` flag and/or description.
pub async fn update(
    conn: &mut AsyncPgConnection,
    name: &str,
    active: Option<bool>,
    description: Option<&str>,
) -> QueryResult<Option<EventTypeRow>> {
    #[derive(AsChangeset)]
    #[diesel(table_name = event_types)]
    struct Patch<'a> {
        active: Option<bool>,
        description: Option<&'a str>,
        description_overridden: Option<bool>,
        updated_at: DateTime<Utc>,
    }
    diesel::update(event_types::table.find(name))
        .set(Patch {
            active,
            description,
            description_overridden: description.map(|_| true),
            updated_at: Utc::now(),
        })
        .returning(EventTypeRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// `(name, active)` of every type, for the subscription rules.
pub async fn flags(conn: &mut AsyncPgConnection) -> QueryResult<Vec<(String, bool)>> {
    event_types::table
        .select((dsl::name, dsl::active))
        .load(conn)
        .await
}
