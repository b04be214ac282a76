//! `TestIngest`: a running ingest on a random port, and a look at its dispatch queue.

use std::time::Duration;

use lapin::{
    Channel, Connection,
    options::{BasicGetOptions, QueueDeclareOptions},
    types::FieldTable,
};
use reqwest::StatusCode;
use serde_json::Value;
use waybill_domain::{Scope, TenantId};
use waybill_ingest::Application;
use waybill_runtime::{JwtKeys, Settings};
use waybill_testkit::{DbGuard, broker_url, create_database, db_url};

pub struct TestIngest {
    pub addr: String,
    pub settings: Settings,
    keys: JwtKeys,
    _guard: DbGuard,
    channel: Channel,
    _conn: Connection,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    #[track_caller]
    pub fn assert(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        self
    }

    /// Messages recorded for `field` in a 422.
    #[track_caller]
    pub fn errors_on(&self, field: &str) -> Vec<String> {
        assert_eq!(self.status.as_u16(), 422, "body: {}", self.body);
        self.body["error"]["errors"][field]
            .as_array()
            .unwrap_or_else(|| panic!("no error on `{field}`: {}", self.body))
            .iter()
            .map(|m| m.as_str().unwrap().to_owned())
            .collect()
    }
}

/// A valid `data` for `kind`: the example its schema carries.
pub fn example(kind: &str) -> Value {
    let def = waybill_domain::catalog::definitions()
        .unwrap()
        .into_iter()
        .find(|d| d.name.as_str() == kind)
        .unwrap();
    def.schema["examples"][0].clone()
}

impl TestIngest {
    pub async fn spawn() -> TestIngest {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestIngest {
        let db = create_database().await;
        let mut settings = Settings::load_from(0, None, Vec::<(String, String)>::new()).unwrap();
        settings.database.url = db_url(&db);
        settings.database.pool_size = 4;
        settings.broker.url = broker_url();
        settings.broker.prefix = format!("wbi{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        settings.http.port = 0;
        settings.rate_limit.per_second = 0;
        let guard = DbGuard {
            db,
            topology: settings.topology().unwrap(),
        };
        tweak(&mut settings);
        // The queues exist before the first publish, as they do once any service has started.
        let conn = Connection::connect(&broker_url(), Default::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        settings
            .topology()
            .unwrap()
            .declare(&channel)
            .await
            .unwrap();
        let app = Application::build(settings.clone())
            .await
            .expect("build ingest");
        let addr = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let keys = JwtKeys::from_settings(&settings).unwrap();
        TestIngest {
            addr,
            settings,
            keys,
            _guard: guard,
            channel,
            _conn: conn,
        }
    }

    pub fn token(&self, tenant: &str, scopes: &[Scope]) -> String {
        self.keys
            .mint(
                &TenantId::parse(tenant).unwrap(),
                scopes,
                chrono::Duration::hours(1),
            )
            .unwrap()
    }

    pub fn publisher(&self) -> String {
        self.token("acme", &[Scope::EventsPublish])
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.post_with(path, token, body, |r| r).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Reply {
        let rb = reqwest::Client::new()
            .post(format!("{}{path}", self.addr))
            .bearer_auth(token)
            .json(body);
        let res = build(rb).send().await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = res.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("non-JSON ({status}): {}", String::from_utf8_lossy(&bytes)));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// How many messages wait on the dispatch queue.
    pub async fn queued(&self) -> u32 {
        let q = self.settings.topology().unwrap().dispatch_queue();
        self.channel
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// The next message on the dispatch queue.
    pub async fn next_message(&self) -> lapin::message::Delivery {
        let q = self.settings.topology().unwrap().dispatch_queue();
        let msg = waybill_testkit::eventually(Duration::from_secs(10), || async {
            self.channel
                .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
        })
        .await
        .expect("a message on the dispatch queue");
        msg.delivery
    }
}
