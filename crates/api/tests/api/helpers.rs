//! `TestApp`: a running api on a random port with its own database and broker prefix.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use diesel::{QueryableByName, sql_query, sql_types::Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use waybill_api::Application;
use waybill_domain::{Scope, TenantId};
use waybill_runtime::{JwtKeys, Settings};

/// Server-level database the tests administer from.
pub fn admin_url() -> String {
    std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub use waybill_testkit::broker_url;

fn db_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

#[derive(QueryableByName)]
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

/// Creates a fresh database for one test.
pub async fn create_database() -> String {
    let template = template_name();
    let mut admin = AsyncPgConnection::establish(&admin_url())
        .await
        .expect("connect to postgres");
    sql_query("SELECT pg_advisory_lock(72170)")
        .execute(&mut admin)
        .await
        .unwrap();
    let exists: Vec<Exists> = sql_query(format!(
        "SELECT datname FROM pg_database WHERE datname = '{template}'"
    ))
    .load(&mut admin)
    .await
    .unwrap();
    if exists.is_empty() {
        sql_query(format!("CREATE DATABASE {template}"))
            .execute(&mut admin)
            .await
            .unwrap();
        waybill_store::migrate(&db_url(&template))
            .await
            .expect("migrate template");
    }
    sql_query("SELECT pg_advisory_unlock(72170)")
        .execute(&mut admin)
        .await
        .unwrap();
    let name = format!("waybill_test_{}", uuid::Uuid::new_v4().simple());
    let mut tries = 0;
    loop {
        match sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => break,
            // Another test may still be cloning; the template is briefly busy.
            Err(e) if tries < 20 && e.to_string().contains("being accessed") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    name
}

/// Drops a test database and the broker objects of its topology, from a thread of its own (this
/// runs in `Drop`, where the test's runtime may be shutting down).
fn cleanup(db: String, topology: waybill_bus::Topology) {
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

/// Drops a test database (and its broker prefix's objects) when it goes out of scope.
pub struct DbGuard {
    pub db: String,
    pub topology: waybill_bus::Topology,
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        cleanup(self.db.clone(), self.topology.clone());
    }
}

/// A running api and what a test needs to talk to it.
pub struct TestApp {
    pub addr: String,
    pub db: String,
    pub prefix: String,
    pub settings: Settings,
    client: reqwest::Client,
    keys: JwtKeys,
    owns_db: bool,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.owns_db
            && let Ok(topology) = waybill_api::startup::topology(&self.settings)
        {
            cleanup(self.db.clone(), topology);
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The field names of a 422's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["error"]["errors"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn assert(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts a 422 whose errors name `field`.
    #[track_caller]
    pub fn assert_invalid(&self, field: &str) {
        assert_eq!(
            self.status.as_u16(),
            422,
            "expected 422 on {field}; body: {}",
            self.body
        );
        assert_eq!(self.code(), "validation_failed");
        assert_eq!(self.body["error"]["message"], "The given data was invalid.");
        assert!(
            self.error_fields().iter().any(|f| f == field),
            "expected an error on `{field}`, got {}",
            self.body
        );
    }
}

pub fn base_settings() -> Settings {
    Settings::load_from(0, None, Vec::<(String, String)>::new()).unwrap()
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts an app with its own database, after `tweak` adjusted the settings.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let db = create_database().await;
        let prefix = format!("wbt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut settings = base_settings();
        settings.database.url = db_url(&db);
        settings.database.pool_size = 4;
        settings.broker.url = broker_url();
        settings.broker.prefix = prefix.clone();
        settings.http.port = 0;
        settings.rate_limit.per_second = 0;
        tweak(&mut settings);
        Self::start(settings, db, prefix, true).await
    }

    /// Starts another app on this app's database (a restart, or a second replica).
    pub async fn sibling(&self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        Self::start(settings, self.db.clone(), self.prefix.clone(), false).await
    }

    async fn start(settings: Settings, db: String, prefix: String, owns_db: bool) -> TestApp {
        let app = Application::build(settings.clone())
            .await
            .expect("build app");
        let addr = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let keys = JwtKeys::from_settings(&settings).unwrap();
        TestApp {
            addr,
            db,
            prefix,
            settings,
            client: reqwest::Client::new(),
            keys,
            owns_db,
        }
    }

    /// A token for `tenant` with `scopes`.
    pub fn token(&self, tenant: &str, scopes: &[Scope]) -> String {
        self.keys
            .mint(
                &TenantId::parse(tenant).unwrap(),
                scopes,
                chrono::Duration::hours(1),
            )
            .unwrap()
    }

    /// A read+write token for tenant `acme`.
    pub fn acme(&self) -> String {
        self.token("acme", &[Scope::WebhooksRead, Scope::WebhooksWrite])
    }

    pub fn admin(&self) -> String {
        self.token("ops", &[Scope::Admin])
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Reply {
        let mut rb = self.client.request(method, format!("{}{path}", self.addr));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let res = build(rb).send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.raw(Method::GET, path, Some(token), |r| r).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.raw(Method::DELETE, path, Some(token), |r| r).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.raw(Method::POST, path, Some(token), |r| r.json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.raw(Method::PATCH, path, Some(token), |r| r.json(&body))
            .await
    }

    /// Creates a webhook for `token`'s tenant and returns its JSON.
    pub async fn create_webhook(&self, token: &str, body: Value) -> Value {
        let r = self.post("/v1/webhooks", token, body).await;
        r.assert(201);
        r.body["data"].clone()
    }

    /// Creates a webhook and returns its id.
    pub async fn create_webhook_id(&self, token: &str, body: Value) -> String {
        self.create_webhook(token, body).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A direct connection to this app's database.
    pub async fn sql(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.settings.database.url)
            .await
            .unwrap()
    }
}

/// A minimal valid create body.
pub fn webhook(url: &str) -> Value {
    json!({"url": url, "events": ["order.shipped"]})
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
