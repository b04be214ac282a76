//! The event catalog as the services read it: which types exist, which are active, and a
//! compiled validator for each type's schema. One copy per process, re-read from Postgres on a
//! timer ([`Catalog::keep_fresh`]) or on demand when it may be stale ([`Catalog::refresh_if_older`]),
//! so a type changed through the api is seen everywhere within seconds.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonschema::Validator;
use serde_json::{Map, Value};
use waybill_domain::{CatalogIndex, ValidationErrors};
use waybill_store::{PgPool, PooledConn, StoreError, event_types};

/// How often a service re-reads the catalog on its timer.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

struct Entry {
    active: bool,
    schema: Value,
    validator: Arc<Validator>,
}

#[derive(Default)]
struct Loaded {
    entries: HashMap<String, Arc<Entry>>,
    /// Names and active flags, as the subscription rules match patterns against them.
    index: Arc<CatalogIndex>,
    /// `None` before the first read and after [`Catalog::invalidate`].
    at: Option<Instant>,
    /// Bumped by every [`Catalog::invalidate`]: a read that began before one is not fresh.
    generation: u64,
}

/// The cached catalog, shared by every request.
#[derive(Clone, Default)]
pub struct Catalog {
    loaded: Arc<RwLock<Loaded>>,
    /// Serialises on-demand reloads, so a burst of callers that find it stale reads Postgres
    /// once; holds when [`Catalog::recheck`] last read it.
    reloading: Arc<tokio::sync::Mutex<Option<Instant>>>,
    /// Only names and active flags ([`Catalog::index`]): no schema is compiled or checked.
    names_only: bool,
}

impl Catalog {
    /// A catalog for a service that matches names but never checks an event's `data` (the
    /// api): it keeps [`Catalog::index`] only, without the memory of compiled schemas, and
    /// [`Catalog::check`] and [`Catalog::active`] know no type.
    pub fn names_only() -> Self {
        Self {
            names_only: true,
            ..Self::default()
        }
    }

    /// Re-reads every type; recompiles only the schemas that changed.
    pub async fn refresh(&self, pool: &PgPool) -> Result<usize, StoreError> {
        let mut conn = waybill_store::conn(pool).await?;
        self.reload(&mut conn).await
    }

    /// Re-reads the catalog unless it was read less than `max_age` ago.
    pub async fn refresh_if_older(
        &self,
        conn: &mut PooledConn,
        max_age: Duration,
    ) -> Result<(), StoreError> {
        let _one = self.reloading.lock().await;
        if !self.is_fresh(max_age) {
            self.reload(conn).await?;
        }
        Ok(())
    }

    /// Re-reads the catalog because a caller did not find what it looked for, unless another
    /// such re-read happened less than `min_gap` ago (so unknown names cannot make every
    /// request read Postgres).
    pub async fn recheck(&self, pool: &PgPool, min_gap: Duration) -> Result<(), StoreError> {
        let mut last = self.reloading.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_gap) {
            return Ok(());
        }
        let reloaded = match waybill_store::conn(pool).await {
            Ok(mut conn) => self.reload(&mut conn).await.map(|_| ()),
            Err(e) => Err(e),
        };
        // Stamped once the attempt is over, failed or not: a slow Postgres must not make every
        // waiter behind this one read again at once.
        *last = Some(Instant::now());
        reloaded
    }

    /// Marks the cached copy stale, so the next [`Catalog::refresh_if_older`] reads it again.
    pub fn invalidate(&self) {
        if let Ok(mut l) = self.loaded.write() {
            l.at = None;
            l.generation += 1;
        }
    }

    /// Names and active flags of every type, as last read.
    pub fn index(&self) -> Arc<CatalogIndex> {
        self.loaded
            .read()
            .map(|l| l.index.clone())
            .unwrap_or_default()
    }

    /// Whether the cached copy was read less than `max_age` ago.
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        self.loaded
            .read()
            .ok()
            .and_then(|l| l.at)
            .is_some_and(|at| at.elapsed() < max_age)
    }

    async fn reload(&self, conn: &mut PooledConn) -> Result<usize, StoreError> {
        let generation = self.loaded.read().map(|l| l.generation).unwrap_or_default();
        let (index, next, n) = if self.names_only {
            let flags = event_types::flags(conn).await?;
            let index =
                CatalogIndex::new(flags.iter().map(|(name, active)| (name.as_str(), *active)));
            (Arc::new(index), HashMap::new(), flags.len())
        } else {
            let (rows, _) = event_types::list(conn, &Default::default(), i64::MAX, 0).await?;
            // Every type counts for the subscription rules, even one whose schema stopped
            // compiling.
            let index = Arc::new(CatalogIndex::new(
                rows.iter().map(|r| (r.name.as_str(), r.active)),
            ));
            let next = self.compiled(rows);
            let n = next.len();
            (index, next, n)
        };
        if let Ok(mut l) = self.loaded.write() {
            // An invalidation that came while this read was under way may be of a change the
            // read did not see: keep the rows, but not as fresh.
            let fresh = l.generation == generation;
            *l = Loaded {
                entries: next,
                index,
                at: fresh.then(Instant::now),
                generation: l.generation,
            };
        }
        Ok(n)
    }

    /// Each type's entry, reusing the compiled validator of a schema that did not change.
    fn compiled(&self, rows: Vec<event_types::EventTypeRow>) -> HashMap<String, Arc<Entry>> {
        let old = self
            .loaded
            .read()
            .map(|l| l.entries.clone())
            .unwrap_or_default();
        let mut next = HashMap::with_capacity(rows.len());
        for row in rows {
            let entry = match old.get(&row.name) {
                Some(e) if e.schema == row.schema && e.active == row.active => e.clone(),
                Some(e) if e.schema == row.schema => Arc::new(Entry {
                    active: row.active,
                    schema: row.schema,
                    validator: e.validator.clone(),
                }),
                _ => match jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(&row.schema)
                {
                    Ok(v) => Arc::new(Entry {
                        active: row.active,
                        schema: row.schema,
                        validator: Arc::new(v),
                    }),
                    Err(e) => {
                        tracing::error!(event_type = %row.name, error = %e, "event schema does not compile; type refused");
                        continue;
                    }
                },
            };
            next.insert(row.name, entry);
        }
        next
    }

    /// Re-reads the catalog every `every` until `stop` turns true, keeping the last good one
    /// when Postgres is away.
    pub async fn keep_fresh(
        self,
        pool: PgPool,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.refresh(&pool).await {
                tracing::warn!(error = %e, "catalog refresh failed; keeping the last one");
            }
        }
    }

    /// Whether `kind` is a known type (`Some`) and whether it is active.
    pub fn active(&self, kind: &str) -> Option<bool> {
        self.entry(kind).map(|e| e.active)
    }

    /// Checks that `kind` is an active type and `data` fits its schema, recording failures
    /// under `<prefix>type` and `<prefix>data`.
    pub fn check(
        &self,
        kind: &str,
        data: &Map<String, Value>,
        prefix: &str,
        errors: &mut ValidationErrors,
    ) -> bool {
        let Some(entry) = self.entry(kind) else {
            errors.add(
                format!("{prefix}type"),
                format!("there is no event type `{kind}`"),
            );
            return false;
        };
        if !entry.active {
            errors.add(
                format!("{prefix}type"),
                format!("event type `{kind}` is inactive"),
            );
            return false;
        }
        let instance = Value::Object(data.clone());
        let mut ok = true;
        for e in entry.validator.iter_errors(&instance) {
            ok = false;
            let at = e.instance_path().to_string();
            let message = if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            };
            errors.add(format!("{prefix}data"), message);
        }
        ok
    }

    fn entry(&self, kind: &str) -> Option<Arc<Entry>> {
        self.loaded
            .read()
            .ok()
            .and_then(|l| l.entries.get(kind).cloned())
    }
}
