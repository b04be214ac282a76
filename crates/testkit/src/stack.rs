//! `Stack`: the services a test runs, over one database and one broker prefix of its own.
//!
//! The builder starts each service in process through the `build` function the test passes in
//! (`waybill_api::Application::build` and so on), so this crate depends on no service and a
//! service's tests build only that service. The same per-test settings also drive the real
//! binaries ([`Stack::command`], [`crate::ServiceProcess`]).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use lapin::{Channel, Connection, options::BasicGetOptions};
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use tokio::sync::OnceCell;
use waybill_bus::Broker;
use waybill_domain::{Scope, TenantId};
use waybill_runtime::{
    JwtKeys, Settings,
    service::{RunningService, StopHandle},
};

use crate::{
    DbGuard, Response,
    amqp::{header_text, queue_depth},
    broker_url, create_database, db_url, eventually,
};

/// How long the stack waits for a service to become ready.
const READY: Duration = Duration::from_secs(20);

/// A read+write token's scopes, what a tenant managing its webhooks holds.
pub const READ_WRITE: &[Scope] = &[Scope::WebhooksRead, Scope::WebhooksWrite];

/// The settings every test starts from: its own database and broker prefix, a random port, no
/// rate limit (tests fire bursts), a small pool (many tests share one Postgres).
pub fn test_settings(db: &str, prefix: &str) -> Settings {
    let mut settings = Settings::load_from(0, None, Vec::<(String, String)>::new()).unwrap();
    settings.database.url = db_url(db);
    settings.database.pool_size = 4;
    settings.broker.url = broker_url();
    settings.broker.prefix = prefix.to_owned();
    settings.http.port = 0;
    settings.rate_limit.per_second = 0;
    settings
}

/// Lets the services call receivers on loopback over plain HTTP, as test receivers are.
pub fn allow_loopback(settings: &mut Settings) {
    settings.security.allow_http = true;
    settings.security.allowed_private_ranges = vec!["127.0.0.0/8".parse().unwrap()];
}

/// Delivery settings a test can wait out: a millisecond retry schedule, short timeouts and
/// breaker cooldowns (the default threshold), no periodic resync to race with.
pub fn fast_delivery(settings: &mut Settings) {
    allow_loopback(settings);
    settings.database.pool_size = 6;
    settings.delivery.retry_schedule = vec!["50ms".into(), "100ms".into(), "200ms".into()];
    settings.delivery.timeout = "2s".into();
    settings.delivery.resync_interval = "1h".into();
    settings.breaker.cooldown = "200ms".into();
    settings.breaker.max_cooldown = "1s".into();
}

/// A fresh broker prefix, short enough for the longest queue name it goes into.
fn new_prefix() -> String {
    format!("wbt{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A service's `Application::build`: settings in, a bound service out, ready to run.
pub trait Build: FnOnce(Settings) -> Self::Built + 'static {
    type Built: Future<Output = anyhow::Result<RunningService>> + 'static;
}

impl<F, Fut> Build for F
where
    F: FnOnce(Settings) -> Fut + 'static,
    Fut: Future<Output = anyhow::Result<RunningService>> + 'static,
{
    type Built = Fut;
}

/// A started service's port, once it is bound and serving.
type Started = Pin<Box<dyn Future<Output = (u16, StopHandle)>>>;

/// Starts one service in process from its settings.
type Start = Box<dyn FnOnce(Settings) -> Started>;

/// Starts one more dispatcher each call.
type StartMany = Box<dyn Fn(Settings) -> Started>;

/// A change to the settings before anything starts.
type Tweak<'a> = Box<dyn FnOnce(&mut Settings) + 'a>;

fn start_fn(build: impl Build) -> Start {
    Box::new(move |settings| Box::pin(run(build, settings)))
}

/// Builds a service, serves it on a task of its own and returns its port and stop handle.
async fn run(build: impl Build, settings: Settings) -> (u16, StopHandle) {
    let service = build(settings).await.expect("build the service");
    let started = (service.port(), service.stop_handle());
    tokio::spawn(service.run_until_stopped());
    started
}

/// What [`Stack::builder`] is told to start.
#[must_use]
pub struct StackBuilder<'a> {
    tweaks: Vec<Tweak<'a>>,
    api: Option<Start>,
    ingest: Option<Start>,
    dispatchers: Option<(StartMany, usize)>,
}

impl<'a> StackBuilder<'a> {
    /// Adjusts the settings (after the stack's own defaults, before anything starts).
    pub fn settings(mut self, tweak: impl FnOnce(&mut Settings) + 'a) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Starts the api with `build` (`waybill_api::Application::build`).
    pub fn with_api(mut self, build: impl Build) -> Self {
        self.api = Some(start_fn(build));
        self
    }

    /// Starts the ingest with `build`, after declaring the topology: its queues exist before the
    /// first publish, as they do once any service has started.
    pub fn with_ingest(mut self, build: impl Build) -> Self {
        self.ingest = Some(start_fn(build));
        self
    }

    /// Starts `n` dispatchers with `build` once the api is up, each waited on until ready, with
    /// [`fast_delivery`] settings (applied before the test's own); the api, if any, allows
    /// loopback receivers whatever the test set for the dispatchers.
    pub fn with_dispatchers(mut self, build: impl Build + Clone, n: usize) -> Self {
        self.tweaks.insert(0, Box::new(fast_delivery));
        self.dispatchers = Some((Box::new(move |s| Box::pin(run(build.clone(), s))), n));
        self
    }

    /// Creates the database, applies the settings and starts what was asked for.
    pub async fn start(self) -> Stack {
        let db = create_database().await;
        let prefix = new_prefix();
        let mut settings = test_settings(&db, &prefix);
        for tweak in self.tweaks {
            tweak(&mut settings);
        }
        let guard = Arc::new(DbGuard::new(db.clone(), settings.topology().unwrap()));
        let mut stack = Stack::on(settings, db, prefix, guard);
        if let Some(start) = self.api {
            let mut api = stack.settings.clone();
            if self.dispatchers.is_some() {
                allow_loopback(&mut api);
            }
            stack.api = Some(base(stack.owned(start(api).await)));
        }
        if let Some(start) = self.ingest {
            let topology = stack.settings.topology().unwrap();
            topology.declare(stack.channel().await).await.unwrap();
            let started = start(stack.settings.clone()).await;
            stack.ingest = Some(base(stack.owned(started)));
        }
        if let Some((start, n)) = self.dispatchers {
            for _ in 0..n {
                let started = start(stack.settings.clone()).await;
                let port = stack.owned(started);
                stack.wait_ready(port).await;
                stack.dispatchers.push(port);
            }
        }
        stack.addr = stack
            .api
            .clone()
            .or_else(|| stack.ingest.clone())
            .unwrap_or_default();
        stack
    }
}

fn base(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Services of one test over its own database and broker prefix, both removed when the last
/// stack on them (see [`Stack::sibling`]) is dropped.
pub struct Stack {
    /// The settings the services were started with (the dispatchers', where there are some).
    pub settings: Settings,
    /// The test database's name.
    pub db: String,
    /// The broker prefix of every exchange and queue.
    pub prefix: String,
    /// Base URL of the api when started, else of the ingest: where [`Stack::get`] and the other
    /// request helpers go.
    pub addr: String,
    pub api: Option<String>,
    pub ingest: Option<String>,
    /// Ports of the in-process dispatchers, in start order.
    pub dispatchers: Vec<u16>,
    /// A confirmed publisher on the stack's topology, as an upstream service has.
    pub broker: Broker,
    client: reqwest::Client,
    keys: JwtKeys,
    amqp: OnceCell<(Connection, Channel)>,
    _guard: Arc<DbGuard>,
}

impl Stack {
    /// Nothing started yet: say what to start, then [`StackBuilder::start`].
    pub fn builder<'a>() -> StackBuilder<'a> {
        StackBuilder {
            tweaks: Vec::new(),
            api: None,
            ingest: None,
            dispatchers: None,
        }
    }

    fn on(settings: Settings, db: String, prefix: String, guard: Arc<DbGuard>) -> Stack {
        Stack {
            broker: Broker::new(settings.broker.url.clone(), settings.topology().unwrap()),
            keys: JwtKeys::from_settings(&settings).unwrap(),
            // A proxy from the environment would otherwise intercept 127.0.0.1. No idle pool: a
            // service may close a connection after refusing a body unread (413), and a request
            // sent on that connection meanwhile would fail for the client's reasons, not the
            // service's.
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            settings,
            db,
            prefix,
            addr: String::new(),
            api: None,
            ingest: None,
            dispatchers: Vec::new(),
            amqp: OnceCell::new(),
            _guard: guard,
        }
    }

    /// A stack on this one's database and prefix with `tweak`ed settings and nothing started
    /// (a restart, or a second replica); the database lives until both are dropped.
    pub fn sibling(&self, tweak: impl FnOnce(&mut Settings)) -> Stack {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        Stack::on(
            settings,
            self.db.clone(),
            self.prefix.clone(),
            self._guard.clone(),
        )
    }

    /// Starts a service in process with `settings`; returns its port.
    pub async fn run(&self, build: impl Build, settings: Settings) -> u16 {
        let started = run(build, settings).await;
        self.owned(started)
    }

    /// Hands a started service to the clean-up, which stops it first; returns its port.
    fn owned(&self, (port, service): (u16, StopHandle)) -> u16 {
        self._guard.owns(service);
        port
    }

    /// Starts a service with the stack's settings and points the request helpers
    /// ([`Stack::addr`]) at it; returns its base URL.
    pub async fn serve(&mut self, build: impl Build) -> String {
        let started = run(build, self.settings.clone()).await;
        self.addr = base(self.owned(started));
        self.addr.clone()
    }

    /// Waits until the service on `port` answers `/readyz` with 200.
    pub async fn wait_ready(&self, port: u16) {
        let url = format!("{}/readyz", base(port));
        let ok = eventually(READY, || {
            let r = self.client.get(&url).send();
            async move { r.await.ok().filter(|r| r.status() == 200) }
        })
        .await;
        assert!(ok.is_some(), "service on {port} not ready");
    }

    /// The `/metrics` text of [`Stack::addr`]; `None` when it cannot be fetched.
    pub async fn metrics(&self) -> Option<String> {
        let res = self.client.get(format!("{}/metrics", self.addr)).send();
        res.await.ok()?.text().await.ok()
    }

    /// A metric of the service on `port`, summed over its label sets containing `labels`.
    pub async fn metric(&self, port: u16, name: &str, labels: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", base(port)))
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

    /// A token for `tenant` with `scopes`, valid for an hour.
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
        self.token("acme", READ_WRITE)
    }

    /// An operator's token.
    pub fn admin(&self) -> String {
        self.token("ops", &[Scope::Admin])
    }

    /// A token that may publish events for tenant `acme`.
    pub fn publisher(&self) -> String {
        self.token("acme", &[Scope::EventsPublish])
    }

    /// Sends a request to [`Stack::addr`]`path`, `build` adding to it; reads the answer whole.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        let mut rb = self.client.request(method, format!("{}{path}", self.addr));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        Response::read(build(rb).send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.raw(Method::GET, path, Some(token), |r| r).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.raw(Method::DELETE, path, Some(token), |r| r).await
    }

    pub async fn post(&self, path: &str, token: &str, body: impl Serialize) -> Response {
        self.post_with(path, token, body, |r| r).await
    }

    /// A JSON POST that `build` adds to (headers, say).
    pub async fn post_with(
        &self,
        path: &str,
        token: &str,
        body: impl Serialize,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        self.raw(Method::POST, path, Some(token), |r| build(r.json(&body)))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: impl Serialize) -> Response {
        self.raw(Method::PATCH, path, Some(token), |r| r.json(&body))
            .await
    }

    /// A direct connection to the test database.
    pub async fn sql(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.settings.database.url)
            .await
            .unwrap()
    }

    /// The stack's own channel to the test broker, opened on first use.
    async fn channel(&self) -> &Channel {
        let (_, channel) = self
            .amqp
            .get_or_init(|| async {
                let conn = Connection::connect(&broker_url(), Default::default())
                    .await
                    .unwrap();
                let channel = conn.create_channel().await.unwrap();
                (conn, channel)
            })
            .await;
        channel
    }

    /// How many messages wait in `queue`.
    pub async fn queue_len(&self, queue: &str) -> u32 {
        queue_depth(self.channel().await, queue).await
    }

    /// How many consumers take from `queue`.
    pub async fn queue_consumers(&self, queue: &str) -> u32 {
        crate::amqp::queue_consumers(self.channel().await, queue).await
    }

    /// Takes the next message of `queue`, waiting up to ten seconds for one.
    pub async fn next_message(&self, queue: &str) -> lapin::message::Delivery {
        let channel = self.channel().await;
        let msg = eventually(Duration::from_secs(10), || async {
            channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
        })
        .await
        .unwrap_or_else(|| panic!("no message on {queue}"));
        msg.delivery
    }

    /// Takes every message of `queue`: bodies, headers as text, and message ids.
    pub async fn drain(
        &self,
        queue: &str,
    ) -> Vec<(Vec<u8>, Vec<(String, String)>, Option<String>)> {
        let channel = self.channel().await;
        let mut out = Vec::new();
        while let Some(m) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
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
                        .map(|(k, v)| (k.as_str().to_owned(), header_text(v)))
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
        out
    }

    /// `bin` set up to run on this stack's database and prefix, listening on `port`; the caller
    /// adds arguments and output handling.
    pub fn command(&self, bin: &str, port: u16) -> std::process::Command {
        let mut cmd = crate::service::command(bin);
        cmd.envs(self.env(port));
        cmd
    }

    /// The environment that points a service binary at this stack.
    pub fn env(&self, port: u16) -> Vec<(String, String)> {
        let s = &self.settings;
        [
            ("WAYBILL_DATABASE__URL", s.database.url.clone()),
            ("WAYBILL_BROKER__URL", s.broker.url.clone()),
            ("WAYBILL_BROKER__PREFIX", s.broker.prefix.clone()),
            ("WAYBILL_HTTP__PORT", port.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Declares a suite's own kind of [`Stack`]: a newtype that derefs to it, so the suite adds its
/// set-up and conveniences as inherent methods (which take precedence over the stack's).
#[macro_export]
macro_rules! suite_stack {
    ($(#[$attr:meta])* $vis:vis struct $name:ident;) => {
        $(#[$attr])*
        $vis struct $name(pub $crate::Stack);

        impl ::std::ops::Deref for $name {
            type Target = $crate::Stack;

            fn deref(&self) -> &$crate::Stack {
                &self.0
            }
        }

        impl ::std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $crate::Stack {
                &mut self.0
            }
        }
    };
}
