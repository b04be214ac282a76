//! A database per test, cloned from a template migrated once per set of migrations, and dropped
//! (with the test's broker objects) when the test ends.

use std::time::Duration;

use diesel::{QueryableByName, sql_query, sql_types::Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::broker_url;

/// Server-level database the tests administer from.
pub fn admin_url() -> String {
    std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn db_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// Deletes a topology's exchanges and queues when dropped, even when the test panicked.
pub struct TopologyGuard(pub waybill_bus::Topology);

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        let topology = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(conn) =
                    lapin::Connection::connect(&broker_url(), Default::default()).await
                    && let Ok(ch) = conn.create_channel().await
                {
                    let _ = topology.delete(&ch).await;
                    let _ = conn.close(200, "bye".into()).await;
                }
            });
        })
        .join();
    }
}

/// A row of `pg_database`; only whether there is one matters.
#[derive(QueryableByName)]
#[allow(dead_code)]
struct Exists {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// The name of the migrated template: the same in every checkout, new whenever a migration changes.
fn template_name() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let mut h: u64 = 0xcbf29ce484222325;
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for f in ["up.sql", "down.sql"] {
            for b in name
                .bytes()
                .chain(std::fs::read(dir.join(f)).unwrap_or_default())
            {
                h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
            }
        }
    }
    format!("waybill_test_template_{:012x}", h & 0xffff_ffff_ffff)
}

/// Runs one admin statement; the set-up cannot go on without it.
async fn run(admin: &mut AsyncPgConnection, sql: impl Into<String>) {
    sql_query(sql.into()).execute(admin).await.unwrap();
}

/// Creates a fresh database for one test.
pub async fn create_database() -> String {
    let template = template_name();
    let mut admin = AsyncPgConnection::establish(&admin_url())
        .await
        .expect("connect to postgres");
    run(&mut admin, "SELECT pg_advisory_lock(72170)").await;
    let exists: Vec<Exists> = sql_query(format!(
        "SELECT datname FROM pg_database WHERE datname = '{template}'"
    ))
    .load(&mut admin)
    .await
    .unwrap();
    if exists.is_empty() {
        run(&mut admin, format!("CREATE DATABASE {template}")).await;
        waybill_store::migrate(&db_url(&template))
            .await
            .expect("migrate template");
    }
    run(&mut admin, "SELECT pg_advisory_unlock(72170)").await;
    let name = format!("waybill_test_{}", uuid::Uuid::new_v4().simple());
    let mut tries = 0;
    loop {
        match sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => break,
            // Another test may still be cloning; the template is briefly busy (for longer on a
            // loaded machine, hence the generous limit).
            Err(e) if tries < 300 && e.to_string().contains("being accessed") => {
                tries += 1;
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 50);
                tokio::time::sleep(Duration::from_millis(50 + jitter)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    name
}

/// Drops a test database and the broker objects of its topology, from a thread of its own (this
/// runs in `Drop`, where the test's runtime may be shutting down).
pub fn cleanup(db: String, topology: waybill_bus::Topology) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok(mut admin) = AsyncPgConnection::establish(&admin_url()).await {
                let _ = sql_query(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
            if let Ok(conn) = lapin::Connection::connect(&broker_url(), Default::default()).await {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = topology.delete(&ch).await;
                }
                let _ = conn.close(200, "bye".into()).await;
            }
        });
    })
    .join();
}

/// Drops a test database (and its broker prefix's objects) when it goes out of scope, after
/// stopping the in-process services on them.
pub struct DbGuard {
    pub db: String,
    pub topology: waybill_bus::Topology,
    /// Services started on this database and prefix; stopped first, so that none of their
    /// consumers reconnects and declares its queues again once they are deleted.
    pub services: std::sync::Mutex<Vec<waybill_runtime::service::StopHandle>>,
}

impl DbGuard {
    pub fn new(db: String, topology: waybill_bus::Topology) -> Self {
        Self {
            db,
            topology,
            services: Default::default(),
        }
    }

    /// Stops `service` before the clean-up.
    pub fn owns(&self, service: waybill_runtime::service::StopHandle) {
        self.services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(service);
    }
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        let services = self.services.get_mut().unwrap_or_else(|p| p.into_inner());
        for service in services.drain(..) {
            service.stop();
        }
        cleanup(self.db.clone(), self.topology.clone());
    }
}
