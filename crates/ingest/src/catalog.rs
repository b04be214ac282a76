//! The event catalog as ingest needs it: which types exist, which are active, and a compiled
//! validator for each type's schema. Re-read from Postgres every few seconds, so a type
//! deactivated through the api is refused here within seconds.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use jsonschema::Validator;
use serde_json::{Map, Value};
use waybill_domain::ValidationErrors;
use waybill_store::{PgPool, StoreError, event_types};

struct Entry {
    active: bool,
    schema: Value,
    validator: Arc<Validator>,
}

/// The cached catalog, shared by every request.
#[derive(Clone, Default)]
pub struct Catalog {
    entries: Arc<RwLock<HashMap<String, Arc<Entry>>>>,
}

impl Catalog {
    /// Re-reads every type; recompiles only the schemas that changed.
    pub async fn refresh(&self, pool: &PgPool) -> Result<usize, StoreError> {
        let mut conn = waybill_store::conn(pool).await?;
        let (rows, _) = event_types::list(&mut conn, &Default::default(), i64::MAX, 0).await?;
        let old = self.entries.read().map(|m| m.clone()).unwrap_or_default();
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
        let n = next.len();
        if let Ok(mut m) = self.entries.write() {
            *m = next;
        }
        Ok(n)
    }

    /// Re-reads the catalog every [`crate::startup::CATALOG_REFRESH`] until `stop` turns true,
    /// keeping the last good one when Postgres is away.
    pub async fn keep_fresh(self, pool: PgPool, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(crate::startup::CATALOG_REFRESH) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.refresh(&pool).await {
                tracing::warn!(error = %e, "catalog refresh failed; keeping the last one");
            }
        }
    }

    /// Whether `kind` is a known type (`Some`) and whether it is active.
    pub fn active(&self, kind: &str) -> Option<bool> {
        self.entries
            .read()
            .ok()
            .and_then(|m| m.get(kind).map(|e| e.active))
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
        let entry = self.entries.read().ok().and_then(|m| m.get(kind).cloned());
        let Some(entry) = entry else {
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
}
