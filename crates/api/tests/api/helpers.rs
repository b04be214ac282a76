//! `TestApp`: a running api on a random port with its own database and broker prefix.

#![allow(dead_code)]

use diesel_async::{AsyncConnection, AsyncPgConnection};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use waybill_api::Application;
use waybill_domain::{Scope, TenantId};
use waybill_runtime::{JwtKeys, Settings};
pub use waybill_testkit::{broker_url, cleanup, create_database, db_url, eventually};

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
            && let Ok(topology) = self.settings.topology()
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
