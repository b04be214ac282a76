//! `Stack`: the api and dispatchers on a testkit stack, with a receiver, an upstream service
//! publishing events over AMQP, and a look at the delivery log.

#![allow(dead_code)]

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use diesel::{QueryableByName, sql_query, sql_types};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use waybill_bus::Outgoing;
use waybill_domain::event::EventEnvelope;
use waybill_runtime::Settings;
use waybill_testkit::{READ_WRITE, eventually, service::free_port};

pub use waybill_testkit::{Receiver, Reply, example_data as example};

pub const WAIT: Duration = Duration::from_secs(20);

const BIN: &str = env!("CARGO_BIN_EXE_waybill-dispatcher");

waybill_testkit::suite_stack! {
    /// The api and dispatchers over one test database and broker prefix.
    pub struct Stack;
}

impl Stack {
    /// The api and one in-process dispatcher with a millisecond retry schedule, receivers on
    /// loopback allowed.
    pub async fn start() -> Stack {
        Self::start_with(|_| {}, 1).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings), dispatchers: usize) -> Stack {
        Stack(
            waybill_testkit::Stack::builder()
                .settings(tweak)
                .with_api(waybill_api::Application::build)
                .with_dispatchers(waybill_dispatcher::Application::build, dispatchers)
                .start()
                .await,
        )
    }

    /// Starts one more in-process dispatcher and waits until it is ready.
    pub async fn spawn_dispatcher(&mut self, settings: Settings) -> u16 {
        let port = self
            .run(waybill_dispatcher::Application::build, settings)
            .await;
        self.wait_ready(port).await;
        self.dispatchers.push(port);
        port
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

    /// Events the first dispatcher counted with `outcome` (fanned_out, duplicate, ...).
    pub async fn events_counted(&self, outcome: &str) -> f64 {
        let labels = format!("outcome=\"{outcome}\"");
        self.metric(
            self.dispatchers[0],
            "waybill_dispatcher_events_total",
            &labels,
        )
        .await
    }

    /// A read+write token for `tenant`.
    pub fn token(&self, tenant: &str) -> String {
        self.0.token(tenant, READ_WRITE)
    }

    /// Calls the api; returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let r = self
            .raw(method, path, Some(token), |rb| match body {
                Some(b) => rb.json(&b),
                None => rb,
            })
            .await;
        (r.status.as_u16(), r.body)
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

    /// Subscribes `acme` to `path` on `rx` for `events`; returns the subscription's id.
    pub async fn subscribe_at(&self, rx: &Receiver, path: &str, events: Value) -> String {
        self.subscribe("acme", json!({"url": rx.url(path), "events": events}))
            .await
    }

    /// Calls the api, asserts the answer's status and returns its body.
    pub async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let (got, reply) = self.call(method.clone(), path, token, body).await;
        assert_eq!(got, status, "{method} {path}: {reply}");
        reply
    }

    /// Asks for another attempt at a delivery as `token`'s caller, asserting the status.
    pub async fn retry(&self, delivery_id: &str, token: &str, status: u16) -> Value {
        let path = format!("/v1/deliveries/{delivery_id}/retry");
        self.expect(reqwest::Method::POST, &path, token, None, status)
            .await
    }

    /// Deliveries `port`'s dispatcher counted with `outcome` (succeeded, throttled, ...).
    pub async fn deliveries_counted(&self, port: u16, outcome: &str) -> f64 {
        let labels = format!("outcome=\"{outcome}\"");
        self.metric(port, "waybill_dispatcher_deliveries_total", &labels)
            .await
    }

    /// A receiver, and one subscription of `acme` to its `/a` for `events`, in every
    /// dispatcher's index.
    pub async fn receiver_for(&self, events: Value) -> (Receiver, String) {
        let rx = Receiver::start().await;
        // Counted before the subscription exists: its change can reach the index before a count
        // taken after the create would.
        let before = self.indexed_now().await;
        let id = self.subscribe_at(&rx, "/a", events).await;
        self.wait_indexed(before + 1).await;
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

    /// Publishes `n` events of `acme` with ids `{prefix}-0`, `{prefix}-1`, ...
    pub async fn publish_numbered(&self, kind: &str, prefix: &str, n: usize) {
        for i in 0..n {
            self.publish("acme", kind, &format!("{prefix}-{i}"), None)
                .await;
        }
    }

    /// Publishes an event of `acme` and waits until `webhook_id` received it.
    pub async fn deliver(&self, webhook_id: &str, kind: &str, event_id: &str) -> DeliveryRow {
        self.publish("acme", kind, event_id, None).await;
        self.wait_delivery(webhook_id, event_id, "succeeded").await
    }

    /// Changes a subscription of `acme`; returns the answer's body.
    pub async fn patch_webhook(&self, id: &str, body: Value) -> Value {
        let path = format!("/v1/webhooks/{id}");
        let token = self.token("acme");
        self.expect(reqwest::Method::PATCH, &path, &token, Some(body), 200)
            .await
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

    /// Starts the dispatcher binary with these settings and waits until it is ready.
    pub async fn start_process(&self, extra: &[(&str, &str)]) -> (Child, u16) {
        let port = free_port();
        let s = &self.settings;
        let child = self
            .command(BIN, port)
            .arg("serve")
            .envs([
                ("WAYBILL_DATABASE__POOL_SIZE", "6".to_owned()),
                ("WAYBILL_SECURITY__ALLOW_HTTP", "true".to_owned()),
                (
                    "WAYBILL_SECURITY__ALLOWED_PRIVATE_RANGES",
                    "127.0.0.0/8".to_owned(),
                ),
                (
                    "WAYBILL_DELIVERY__RETRY_SCHEDULE",
                    s.delivery.retry_schedule.join(","),
                ),
                ("WAYBILL_DELIVERY__TIMEOUT", s.delivery.timeout.clone()),
                ("WAYBILL_BREAKER__COOLDOWN", s.breaker.cooldown.clone()),
                (
                    "WAYBILL_BREAKER__MAX_COOLDOWN",
                    s.breaker.max_cooldown.clone(),
                ),
                ("WAYBILL_LOG__LEVEL", "warn".to_owned()),
            ])
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.wait_ready(port).await;
        (child, port)
    }
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

impl DeliveryRow {
    /// The last error, empty when there is none.
    pub fn error(&self) -> &str {
        self.last_error.as_deref().unwrap_or("")
    }
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
