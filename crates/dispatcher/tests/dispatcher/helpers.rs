//! `Stack`: the api and dispatchers over one test database and broker prefix, a receiver, and
//! an upstream service publishing events over AMQP.

#![allow(dead_code)]

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use diesel::{QueryableByName, sql_query, sql_types};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use waybill_bus::{Broker, Outgoing};
use waybill_domain::{Scope, TenantId, event::EventEnvelope};
use waybill_runtime::{JwtKeys, Settings};
use waybill_testkit::{DbGuard, broker_url, create_database, db_url, eventually};

pub use waybill_testkit::{Receiver, Reply};

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Stack {
    /// The dispatchers' settings (the api shares database, broker and url policy).
    pub settings: Settings,
    pub api: String,
    client: reqwest::Client,
    keys: JwtKeys,
    pub broker: Broker,
    pub dispatchers: Vec<u16>,
    _guard: DbGuard,
}

/// A valid `data` for `kind`: the example its schema carries.
pub fn example(kind: &str) -> serde_json::Map<String, Value> {
    let def = waybill_domain::catalog::definitions()
        .unwrap()
        .into_iter()
        .find(|d| d.name.as_str() == kind)
        .unwrap();
    def.schema["examples"][0].as_object().unwrap().clone()
}

impl Stack {
    /// The api and one in-process dispatcher with a millisecond retry schedule, receivers on
    /// loopback allowed.
    pub async fn start() -> Stack {
        Self::start_with(|_| {}, 1).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings), dispatchers: usize) -> Stack {
        let db = create_database().await;
        let mut settings = Settings::load_from(0, None, Vec::<(String, String)>::new()).unwrap();
        settings.database.url = db_url(&db);
        settings.database.pool_size = 6;
        settings.broker.url = broker_url();
        settings.broker.prefix = format!("wbd{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        settings.http.port = 0;
        settings.rate_limit.per_second = 0;
        settings.security.allow_http = true;
        settings.security.allowed_private_ranges = vec!["127.0.0.0/8".parse().unwrap()];
        settings.delivery.retry_schedule = vec!["50ms".into(), "100ms".into(), "200ms".into()];
        settings.delivery.timeout = "2s".into();
        settings.delivery.resync_interval = "1h".into();
        // The default threshold, with cooldowns a test can wait out.
        settings.breaker.cooldown = "200ms".into();
        settings.breaker.max_cooldown = "1s".into();
        tweak(&mut settings);
        let guard = DbGuard {
            db,
            topology: settings.topology().unwrap(),
        };
        let mut api_settings = settings.clone();
        api_settings.security.allowed_private_ranges = vec!["127.0.0.0/8".parse().unwrap()];
        api_settings.security.allow_http = true;
        let api = waybill_api::Application::build(api_settings).await.unwrap();
        let api_base = format!("http://127.0.0.1:{}", api.port());
        tokio::spawn(api.run_until_stopped());
        let broker = Broker::new(settings.broker.url.clone(), settings.topology().unwrap());
        let keys = JwtKeys::from_settings(&settings).unwrap();
        let mut stack = Stack {
            settings,
            api: api_base,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            keys,
            broker,
            dispatchers: Vec::new(),
            _guard: guard,
        };
        for _ in 0..dispatchers {
            let s = stack.settings.clone();
            stack.spawn_dispatcher(s).await;
        }
        stack
    }

    /// Starts one more in-process dispatcher and waits until it is ready.
    pub async fn spawn_dispatcher(&mut self, settings: Settings) -> u16 {
        let app = waybill_dispatcher::Application::build(settings)
            .await
            .unwrap();
        let port = app.port();
        tokio::spawn(app.run_until_stopped());
        self.dispatchers.push(port);
        self.wait_ready(port).await;
        port
    }

    pub async fn wait_ready(&self, port: u16) {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let ok = eventually(WAIT, || {
            let r = self.client.get(&url).send();
            async move { r.await.ok().filter(|r| r.status() == 200) }
        })
        .await;
        assert!(ok.is_some(), "dispatcher on {port} not ready");
    }

    /// A metric of a dispatcher, summed over its label sets matching `labels`.
    pub async fn metric(&self, port: u16, name: &str, labels: &str) -> f64 {
        let text = self
            .client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until every dispatcher's index holds `n` subscriptions.
    pub async fn wait_indexed(&self, n: usize) {
        for port in &self.dispatchers {
            let got = eventually(WAIT, || async {
                (self
                    .metric(*port, "waybill_dispatcher_index_subscriptions", "")
                    .await as usize
                    == n)
                    .then_some(())
            })
            .await;
            assert!(
                got.is_some(),
                "dispatcher {port} never indexed {n} subscriptions"
            );
        }
    }

    pub fn token(&self, tenant: &str) -> String {
        self.keys
            .mint(
                &TenantId::parse(tenant).unwrap(),
                &[Scope::WebhooksRead, Scope::WebhooksWrite],
                chrono::Duration::hours(1),
            )
            .unwrap()
    }

    pub fn admin(&self) -> String {
        self.keys
            .mint(
                &TenantId::parse("ops").unwrap(),
                &[Scope::Admin],
                chrono::Duration::hours(1),
            )
            .unwrap()
    }

    /// Calls the api; returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    /// Creates a subscription of `tenant`; returns its id.
    pub async fn subscribe(&self, tenant: &str, body: Value) -> String {
        let (status, reply) = self
            .call(
                reqwest::Method::POST,
                "/v1/webhooks",
                &self.token(tenant),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        reply["data"]["id"].as_str().unwrap().to_owned()
    }

    /// A receiver, and one subscription of `acme` to its `/a` for `events`, in every
    /// dispatcher's index.
    pub async fn receiver_for(&self, events: Value) -> (Receiver, String) {
        let rx = Receiver::start().await;
        let id = self
            .subscribe("acme", json!({"url": rx.url("/a"), "events": events}))
            .await;
        self.wait_indexed(self.indexed_now().await + 1).await;
        (rx, id)
    }

    /// Subscriptions in the first dispatcher's index (0 without a dispatcher).
    async fn indexed_now(&self) -> usize {
        match self.dispatchers.as_slice().first() {
            Some(port) => {
                self.metric(*port, "waybill_dispatcher_index_subscriptions", "")
                    .await as usize
            }
            None => 0,
        }
    }

    /// The current signing secret of a subscription.
    pub async fn secret(&self, tenant: &str, id: &str) -> String {
        let (status, reply) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/webhooks/{id}/secret"),
                &self.token(tenant),
                None,
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        reply["data"]["secret"].as_str().unwrap().to_owned()
    }

    /// Publishes an event as an upstream service does over AMQP.
    pub async fn publish(
        &self,
        tenant: &str,
        kind: &str,
        id: &str,
        client_id: Option<&str>,
    ) -> EventEnvelope {
        let now = chrono::Utc::now();
        let event = EventEnvelope {
            id: id.into(),
            tenant: waybill_domain::TenantId::parse(tenant).unwrap(),
            kind: waybill_domain::EventTypeName::parse(kind).unwrap(),
            client_id: client_id.map(Into::into),
            occurred_at: now,
            received_at: now,
            data: example(kind),
        };
        self.publish_raw(kind, id, &serde_json::to_vec(&event).unwrap())
            .await;
        event
    }

    pub async fn publish_raw(&self, routing_key: &str, id: &str, body: &[u8]) {
        let exchange = self.settings.topology().unwrap().events_exchange();
        self.broker
            .publish(&Outgoing {
                exchange: &exchange,
                routing_key,
                body,
                message_id: Some(id),
                headers: vec![],
                mandatory: true,
            })
            .await
            .unwrap();
    }

    pub async fn sql(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.settings.database.url)
            .await
            .unwrap()
    }

    /// The deliveries of a subscription, oldest first.
    pub async fn deliveries(&self, webhook_id: &str) -> Vec<DeliveryRow> {
        let mut conn = self.sql().await;
        sql_query(
            "SELECT id::text AS id, event_id, status, attempts, last_status_code, last_error \
             FROM deliveries WHERE webhook_id = $1::uuid ORDER BY created_at, id",
        )
        .bind::<sql_types::Text, _>(webhook_id)
        .load(&mut conn)
        .await
        .unwrap()
    }

    /// Waits until a delivery of `webhook_id` for `event_id` has `status`; returns it.
    pub async fn wait_delivery(
        &self,
        webhook_id: &str,
        event_id: &str,
        status: &str,
    ) -> DeliveryRow {
        let found = eventually(WAIT, || async {
            self.deliveries(webhook_id)
                .await
                .into_iter()
                .find(|d| d.event_id == event_id && d.status == status)
        })
        .await;
        match found {
            Some(d) => d,
            None => panic!(
                "no {status} delivery of {event_id} to {webhook_id}; have {:?}",
                self.deliveries(webhook_id).await
            ),
        }
    }

    /// The attempts of a delivery, by number.
    pub async fn attempts(&self, delivery_id: &str) -> Vec<AttemptRow> {
        let mut conn = self.sql().await;
        sql_query(
            "SELECT number, duration_ms, status_code, error, response_body \
             FROM delivery_attempts WHERE delivery_id = $1::uuid ORDER BY number",
        )
        .bind::<sql_types::Text, _>(delivery_id)
        .load(&mut conn)
        .await
        .unwrap()
    }

    /// Messages waiting in `queue` (read without consuming them for good).
    pub async fn queue_len(&self, queue: &str) -> u32 {
        let conn = lapin::Connection::connect(&broker_url(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let _ = conn.close(200, "bye".into()).await;
        q.message_count()
    }

    /// Takes every message of `queue`: bodies, headers as text, and message ids.
    pub async fn drain(
        &self,
        queue: &str,
    ) -> Vec<(Vec<u8>, Vec<(String, String)>, Option<String>)> {
        let conn = lapin::Connection::connect(&broker_url(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            let headers = m
                .properties
                .headers()
                .as_ref()
                .map(|h| {
                    h.inner()
                        .iter()
                        .map(|(k, v)| {
                            let v = match v {
                                lapin::types::AMQPValue::LongString(s) => {
                                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                                }
                                other => format!("{other:?}"),
                            };
                            (k.as_str().to_owned(), v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let id = m
                .properties
                .message_id()
                .as_ref()
                .map(|i| i.as_str().to_owned());
            out.push((m.delivery.data.clone(), headers, id));
        }
        let _ = conn.close(200, "bye".into()).await;
        out
    }

    /// Environment for a dispatcher process with these settings.
    pub fn process_env(&self, port: u16) -> Vec<(String, String)> {
        let s = &self.settings;
        vec![
            ("WAYBILL_DATABASE__URL".into(), s.database.url.clone()),
            ("WAYBILL_DATABASE__POOL_SIZE".into(), "6".into()),
            ("WAYBILL_BROKER__URL".into(), s.broker.url.clone()),
            ("WAYBILL_BROKER__PREFIX".into(), s.broker.prefix.clone()),
            ("WAYBILL_HTTP__PORT".into(), port.to_string()),
            ("WAYBILL_SECURITY__ALLOW_HTTP".into(), "true".into()),
            (
                "WAYBILL_SECURITY__ALLOWED_PRIVATE_RANGES".into(),
                "127.0.0.0/8".into(),
            ),
            (
                "WAYBILL_DELIVERY__RETRY_SCHEDULE".into(),
                s.delivery.retry_schedule.join(","),
            ),
            (
                "WAYBILL_DELIVERY__TIMEOUT".into(),
                s.delivery.timeout.clone(),
            ),
            (
                "WAYBILL_BREAKER__COOLDOWN".into(),
                s.breaker.cooldown.clone(),
            ),
            (
                "WAYBILL_BREAKER__MAX_COOLDOWN".into(),
                s.breaker.max_cooldown.clone(),
            ),
            ("WAYBILL_LOG__LEVEL".into(), "warn".into()),
        ]
    }

    /// Starts the dispatcher binary and waits until it is ready.
    pub async fn start_process(&self, extra: &[(&str, &str)]) -> (Child, u16) {
        let port = free_port();
        let child = waybill_testkit::service::command(env!("CARGO_BIN_EXE_waybill-dispatcher"))
            .arg("serve")
            .envs(self.process_env(port))
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.wait_ready(port).await;
        (child, port)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(QueryableByName, Debug, Clone)]
pub struct DeliveryRow {
    #[diesel(sql_type = sql_types::Text)]
    pub id: String,
    #[diesel(sql_type = sql_types::Text)]
    pub event_id: String,
    #[diesel(sql_type = sql_types::Text)]
    pub status: String,
    #[diesel(sql_type = sql_types::Integer)]
    pub attempts: i32,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Integer>)]
    pub last_status_code: Option<i32>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    pub last_error: Option<String>,
}

#[derive(QueryableByName, Debug, Clone)]
pub struct AttemptRow {
    #[diesel(sql_type = sql_types::Integer)]
    pub number: i32,
    #[diesel(sql_type = sql_types::Integer)]
    pub duration_ms: i32,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Integer>)]
    pub status_code: Option<i32>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    pub response_body: Option<String>,
}

/// Runs the Standard Webhooks reference library (PyPI `standardwebhooks`) over requests: each
/// check is (secret as the tenant sees it, request) and passes when the library accepts it.
pub fn verify_with_standardwebhooks(checks: &[(String, &waybill_testkit::Received)]) -> Vec<bool> {
    let input: Vec<Value> = checks
        .iter()
        .map(|(secret, r)| {
            json!({
                "secret": secret,
                "body": String::from_utf8(r.body.clone()).unwrap(),
                "headers": {
                    "webhook-id": r.header("webhook-id"),
                    "webhook-timestamp": r.header("webhook-timestamp"),
                    "webhook-signature": r.header("webhook-signature"),
                }
            })
        })
        .collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/dispatcher/verify_signatures.py"
    );
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(&input).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verifier failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
