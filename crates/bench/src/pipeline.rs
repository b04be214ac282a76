//! The whole pipeline, end to end: a load generator publishes events (through ingest over HTTP,
//! or straight onto RabbitMQ), the three real service binaries fan them out and deliver them,
//! and a receiver on loopback verifies every signature and records when each delivery first
//! succeeded. Reported per scenario: events/s in, deliveries/s out, latency from the publisher's
//! acknowledgement (ingest's 202, or the broker's confirm) to the receiver, lost and duplicated
//! deliveries, and each service's peak memory and CPU time.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Serialize;
use serde_json::json;
use waybill_bus::{Broker, Outgoing};
use waybill_domain::{
    EventTypeName, SigningSecret, TenantId, event::EventEnvelope, signature::sign,
};
use waybill_runtime::Settings;
use waybill_store::{Cipher, crypto::secret_context};

use crate::{
    cluster::Cluster,
    common::{self, TENANT},
    exporter::{Exporter, Received, Tracing},
    stats::Summary,
};

/// How events reach the platform.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `POST /v1/events` on ingest; acknowledged by its 202.
    Http,
    /// Straight onto the events exchange; acknowledged by the broker's confirm.
    Amqp,
}

/// One scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub via: Via,
    /// Events per second; `None`: as fast as the publishers get acknowledgements.
    pub rate: Option<u32>,
    /// Concurrent publishers when there is no fixed rate.
    pub publishers: u32,
    pub seconds: u64,
    /// Subscriptions each event goes to.
    pub fanout: u32,
    /// Share of requests the receiver answers with 500.
    pub fail_ratio: f64,
    /// Other tenants' subscriptions in the index besides the measured ones.
    pub seeded_subscriptions: u32,
    pub seeded_tenants: u32,
    /// The retry schedule (a short one where failures are injected).
    pub retry_schedule: Vec<String>,
    /// Where the services export their traces.
    pub tracing: Tracing,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub scenario: Scenario,
    pub events_published: u64,
    pub events_accepted: u64,
    pub events_in_per_s: f64,
    pub deliveries_expected: u64,
    pub deliveries_succeeded: u64,
    pub deliveries_out_per_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub bad_signatures: u64,
    pub requests: u64,
    pub answered_500: u64,
    pub latency: Summary,
    /// Per service: peak resident memory (MiB) and CPU seconds over the run.
    pub services: Vec<ServiceFigures>,
    /// The dispatcher's index size and how long it took to be ready with it.
    pub index_subscriptions: u64,
    pub dispatcher_ready_s: f64,
    /// From the first publish to the last delivery, and the CPU seconds the rest of the machine
    /// used meanwhile: where the time went when the services are not the limit.
    pub wall_seconds: f64,
    pub rabbitmq_cpu_seconds: f64,
    pub postgres_cpu_seconds: f64,
    pub load_generator_and_receiver_cpu_seconds: f64,
    /// What the trace endpoint received (zero unless tracing is `on`).
    pub exporter: Received,
}

#[derive(Debug, Serialize)]
pub struct ServiceFigures {
    pub service: &'static str,
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

/// The signing secret every measured subscription shares, so the receiver holds one key.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EVENT_TYPE: &str = "stock.updated";

#[derive(Default)]
struct Log {
    /// First success of each (event id, subscription number).
    first: HashMap<(String, u32), Instant>,
    duplicates: u64,
    bad_signatures: u64,
}

struct ReceiverState {
    key: Vec<u8>,
    fail_per_mille: u64,
    requests: AtomicU64,
    failed: AtomicU64,
    log: Mutex<Log>,
}

/// FNV-1a, to pick the failed requests the same way on every run.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

async fn receive(
    req: HttpRequest,
    path: web::Path<u32>,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let now = Instant::now();
    state.requests.fetch_add(1, Ordering::Relaxed);
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (id, ts, sigs, attempt) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        header("waybill-attempt"),
    );
    let n = path.into_inner();
    if fnv(&[id.as_bytes(), &n.to_le_bytes(), attempt.as_bytes()]) % 1000 < state.fail_per_mille {
        state.failed.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::InternalServerError().finish();
    }
    let valid = ts
        .parse::<i64>()
        .map(|ts| {
            sigs.split(' ')
                .any(|s| s == sign(&state.key, id, ts, &body))
        })
        .unwrap_or(false);
    if let Ok(mut log) = state.log.lock() {
        if !valid {
            log.bad_signatures += 1;
        }
        match log.first.entry((id.to_owned(), n)) {
            std::collections::hash_map::Entry::Occupied(_) => log.duplicates += 1,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
            }
        }
    }
    HttpResponse::NoContent().finish()
}

/// Runs one scenario in a database and broker prefix of its own.
pub async fn run(s: Scenario) -> anyhow::Result<Outcome> {
    let name = s.name.replace('-', "_");
    let mut out = None;
    let schedule = s.retry_schedule.clone();
    crate::scratch::run_in_with(
        &name,
        |settings| settings.delivery.retry_schedule = schedule,
        async |settings| {
            out = Some(measure(&s, settings).await?);
            Ok(())
        },
    )
    .await?;
    out.ok_or_else(|| anyhow::anyhow!("scenario {} produced nothing", s.name))
}

/// Stores `n` subscriptions of `tenants` other tenants, with real encrypted keys, so the
/// dispatcher indexes them as it would real ones.
async fn seed(settings: &Settings, n: u32, tenants: u32) -> anyhow::Result<()> {
    use diesel::{
        sql_query,
        sql_types::{Array, Text, Uuid as SqlUuid},
    };
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    if n == 0 {
        return Ok(());
    }
    let cipher = Cipher::new(&settings.encryption_key()?)?;
    let mut conn = AsyncPgConnection::establish(&settings.database.url).await?;
    let patterns = [
        ["order.shipped", "stock.*"],
        ["parcel.*", "order.created"],
        ["*", "order.shipped"],
        ["inventory.adjusted", "shipment.created"],
    ];
    let chunk = 5_000u32;
    let mut start = 0u32;
    while start < n {
        let end = (start + chunk).min(n);
        let mut ids = Vec::new();
        let mut tenant = Vec::new();
        let mut url = Vec::new();
        let mut events = Vec::new();
        let mut key = Vec::new();
        let mut secrets = Vec::new();
        for i in start..end {
            let id = uuid::Uuid::now_v7();
            let p = patterns[(i % 4) as usize];
            ids.push(id);
            tenant.push(format!("seed-{}", i % tenants.max(1)));
            url.push(format!("https://receiver-{i}.example.com/hook"));
            events.push(format!("{{{},{}}}", p[0], p[1]));
            key.push(format!("{} {}", p[0].min(p[1]), p[0].max(p[1])));
            let secret = format!(
                "whsec_{}",
                STANDARD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
            );
            secrets.push(cipher.encrypt(secret.as_bytes(), &secret_context(id.into()))?);
        }
        sql_query(
            "INSERT INTO webhooks (id, tenant, name, url, method, events, events_key, created_at, updated_at) \
             SELECT u.id, u.tenant, '', u.url, 'POST', u.events::text[], u.key, now(), now() \
             FROM unnest($1, $2, $3, $4, $5) AS u(id, tenant, url, events, key)",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Text>, _>(&tenant)
        .bind::<Array<Text>, _>(&url)
        .bind::<Array<Text>, _>(&events)
        .bind::<Array<Text>, _>(&key)
        .execute(&mut conn)
        .await?;
        common::insert_secrets(&mut conn, &ids, &secrets).await?;
        start = end;
    }
    sql_query("ANALYZE").execute(&mut conn).await?;
    Ok(())
}

/// Publishes for `s.seconds`; returns each accepted event's id and acknowledgement time.
async fn publish(
    s: &Scenario,
    ingest_url: &str,
    token: &str,
    broker: &Broker,
    exchange: &str,
) -> (u64, Vec<(String, Instant)>, Duration) {
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(_) => return (0, Vec::new(), Duration::ZERO),
    };
    let data = common::stock_data();
    let one = {
        let (client, url, token, broker, exchange, data, via) = (
            client.clone(),
            Arc::new(ingest_url.to_owned()),
            Arc::new(token.to_owned()),
            broker.clone(),
            Arc::new(exchange.to_owned()),
            data.clone(),
            s.via,
        );
        move |id: String| {
            let (client, url, token, broker, exchange, data) = (
                client.clone(),
                url.clone(),
                token.clone(),
                broker.clone(),
                exchange.clone(),
                data.clone(),
            );
            async move {
                let ok = match via {
                    Via::Http => client
                        .post(url.as_str())
                        .bearer_auth(token.as_str())
                        .json(&json!({"type": EVENT_TYPE, "id": id, "data": data}))
                        .send()
                        .await
                        .map(|r| r.status() == 202)
                        .unwrap_or(false),
                    Via::Amqp => {
                        let (Ok(tenant), Ok(kind)) =
                            (TenantId::parse(TENANT), EventTypeName::parse(EVENT_TYPE))
                        else {
                            // Both are constants that parse; were they not, nothing would.
                            return None;
                        };
                        let now = chrono::Utc::now();
                        let envelope = EventEnvelope {
                            id: id.clone(),
                            tenant,
                            kind,
                            client_id: None,
                            occurred_at: now,
                            received_at: now,
                            data: data.as_object().cloned().unwrap_or_default(),
                        };
                        match serde_json::to_vec(&envelope) {
                            Ok(body) => broker
                                .publish(&Outgoing {
                                    exchange: exchange.as_str(),
                                    routing_key: EVENT_TYPE,
                                    body: &body,
                                    message_id: Some(&id),
                                    headers: vec![],
                                    mandatory: true,
                                })
                                .await
                                .is_ok(),
                            Err(_) => false,
                        }
                    }
                };
                ok.then(|| (id, Instant::now()))
            }
        }
    };
    // Warm up connections and pools, unmeasured.
    for i in 0..20 {
        one(format!("warm-{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(s.seconds);
    let mut accepted = Vec::new();
    let published = match s.rate {
        Some(rate) => {
            let total = u64::from(rate) * s.seconds;
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::with_capacity(total as usize);
            for i in 0..total {
                ticker.tick().await;
                tasks.push(tokio::spawn(one(format!("ev-{i}"))));
            }
            for t in tasks {
                if let Ok(Some(a)) = t.await {
                    accepted.push(a);
                }
            }
            total
        }
        None => {
            let counter = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..s.publishers.max(1) {
                let (one, counter) = (one.clone(), counter.clone());
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while Instant::now() < deadline {
                        let i = counter.fetch_add(1, Ordering::Relaxed);
                        if let Some(a) = one(format!("ev-{i}")).await {
                            mine.push(a);
                        }
                    }
                    mine
                }));
            }
            for t in tasks {
                if let Ok(mine) = t.await {
                    accepted.extend(mine);
                }
            }
            counter.load(Ordering::Relaxed)
        }
    };
    (published, accepted, started.elapsed())
}

async fn measure(s: &Scenario, settings: Settings) -> anyhow::Result<Outcome> {
    waybill_store::migrate(&settings.database.url).await?;
    seed(&settings, s.seeded_subscriptions, s.seeded_tenants).await?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let receiver_port = listener.local_addr()?.port();
    let secret = SigningSecret::parse(SECRET).map_err(anyhow::Error::msg)?;
    let state = web::Data::new(ReceiverState {
        key: secret.key().to_vec(),
        fail_per_mille: (s.fail_ratio * 1000.0).round() as u64,
        requests: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        log: Mutex::new(Log::default()),
    });
    let receiver_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(receiver_state.clone())
            .route("/hook/{n}", web::post().to(receive))
    })
    .listen(listener)?
    .workers(2)
    .run();
    tokio::spawn(server);

    let exporter = Exporter::start(s.tracing).await?;
    let mut extra = vec![(
        "WAYBILL_DELIVERY__RETRY_SCHEDULE",
        s.retry_schedule.join(","),
    )];
    extra.extend(exporter.env.iter().cloned());
    let started = Instant::now();
    let cluster = Cluster::start(&settings, &extra).await?;
    let dispatcher_ready_s = started.elapsed().as_secs_f64();

    let token = common::token(&settings)?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    for n in 0..s.fanout {
        let r = client
            .post(format!("{}/v1/webhooks", cluster.api.base()))
            .bearer_auth(&token)
            .json(
                &json!({"url": format!("http://127.0.0.1:{receiver_port}/hook/{n}"),
                          "events": [EVENT_TYPE], "secret": SECRET}),
            )
            .send()
            .await?;
        if r.status() != 201 {
            anyhow::bail!("creating subscription {n}: {}", r.text().await?);
        }
    }
    // Every dispatcher index holds them before the clock starts.
    let metrics_url = format!("{}/metrics", cluster.dispatcher.base());
    let expected_index = u64::from(s.seeded_subscriptions + s.fanout);
    let mut index_subscriptions = 0;
    for _ in 0..600 {
        let text = client.get(&metrics_url).send().await?.text().await?;
        index_subscriptions = text
            .lines()
            .find(|l| l.starts_with("waybill_dispatcher_index_subscriptions"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if index_subscriptions >= expected_index {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let broker = Broker::new(settings.broker.url.clone(), settings.topology()?);
    let exchange = settings.topology()?.events_exchange();
    let cpu_before: Vec<f64> = cluster
        .services()
        .iter()
        .map(|svc| svc.cpu_seconds().unwrap_or(0.0))
        .collect();
    let others_before = [
        crate::cluster::cpu_of("beam.smp"),
        crate::cluster::cpu_of("postgres"),
        crate::cluster::cpu_of("self"),
    ];
    let wall = Instant::now();
    let ingest_url = format!("{}/v1/events", cluster.ingest.base());
    let (published, accepted, publish_time) =
        publish(s, &ingest_url, &token, &broker, &exchange).await;

    // Wait for the deliveries: until all are in, or nothing new came for 20 s.
    let expected = accepted.len() as u64 * u64::from(s.fanout);
    let mut last_count = 0u64;
    let mut last_change = Instant::now();
    loop {
        let count = state.log.lock().map(|l| l.first.len() as u64).unwrap_or(0);
        // Warm-up events count too; only the measured ones are checked below.
        if count >= expected + 20 * u64::from(s.fanout) {
            break;
        }
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let others = [
        crate::cluster::cpu_of("beam.smp") - others_before[0],
        crate::cluster::cpu_of("postgres") - others_before[1],
        crate::cluster::cpu_of("self") - others_before[2],
    ];
    let wall_seconds = wall.elapsed().as_secs_f64();
    let services: Vec<ServiceFigures> = cluster
        .services()
        .iter()
        .zip(cpu_before)
        .map(|(svc, before)| ServiceFigures {
            service: svc.name,
            peak_rss_mib: svc.peak_rss_mib().unwrap_or(0.0),
            cpu_seconds: svc.cpu_seconds().unwrap_or(0.0) - before,
        })
        .collect();
    drop(cluster);

    let log = state
        .log
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
    let first_ack = accepted.iter().map(|(_, at)| *at).min();
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut succeeded = 0u64;
    let mut last_arrival = None;
    for (id, acked) in &accepted {
        for n in 0..s.fanout {
            if let Some(at) = log.first.get(&(id.clone(), n)) {
                succeeded += 1;
                latencies.push(at.saturating_duration_since(*acked));
                last_arrival = Some(last_arrival.map_or(*at, |l: Instant| l.max(*at)));
            }
        }
    }
    let out_secs = match (first_ack, last_arrival) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Outcome {
        scenario: s.clone(),
        events_published: published,
        events_accepted: accepted.len() as u64,
        events_in_per_s: accepted.len() as f64 / publish_time.as_secs_f64().max(0.001),
        deliveries_expected: expected,
        deliveries_succeeded: succeeded,
        deliveries_out_per_s: if out_secs > 0.0 {
            succeeded as f64 / out_secs
        } else {
            0.0
        },
        lost: expected - succeeded,
        duplicates: log.duplicates,
        bad_signatures: log.bad_signatures,
        requests: state.requests.load(Ordering::Relaxed),
        answered_500: state.failed.load(Ordering::Relaxed),
        latency: Summary::of(&mut latencies),
        services,
        index_subscriptions,
        dispatcher_ready_s,
        wall_seconds,
        rabbitmq_cpu_seconds: others[0],
        postgres_cpu_seconds: others[1],
        load_generator_and_receiver_cpu_seconds: others[2],
        exporter: exporter.received(),
    })
}

impl Outcome {
    /// A few lines for people.
    pub fn report(&self) -> String {
        let s = &self.scenario;
        let rate = s.rate.map_or_else(
            || format!("max ({} publishers)", s.publishers),
            |r| format!("{r}/s"),
        );
        let mut out = format!(
            "== {} ({:?}, {rate}, {} s, fan-out {}, {:.0}% answered 500, {} other subscriptions, tracing {})\n",
            s.name,
            s.via,
            s.seconds,
            s.fanout,
            s.fail_ratio * 100.0,
            s.seeded_subscriptions,
            s.tracing.name()
        );
        out += &format!(
            "   in {:.0} events/s ({} of {} accepted), out {:.0} deliveries/s; {} lost, {} duplicates, {} bad signatures, {} requests ({} answered 500)\n",
            self.events_in_per_s,
            self.events_accepted,
            self.events_published,
            self.deliveries_out_per_s,
            self.lost,
            self.duplicates,
            self.bad_signatures,
            self.requests,
            self.answered_500
        );
        out += &format!("   {}\n", self.latency.line("ack -> receiver"));
        let mem: Vec<String> = self
            .services
            .iter()
            .map(|f| {
                format!(
                    "{} {:.1} MiB / {:.1} s CPU",
                    f.service, f.peak_rss_mib, f.cpu_seconds
                )
            })
            .collect();
        out += &format!(
            "   peak RSS / CPU: {}; index {} subscriptions, services ready in {:.1} s\n",
            mem.join(", "),
            self.index_subscriptions,
            self.dispatcher_ready_s
        );
        out += &format!(
            "   over {:.1} s: RabbitMQ {:.1} s CPU, PostgreSQL {:.1} s CPU, load generator and receiver {:.1} s CPU\n",
            self.wall_seconds,
            self.rabbitmq_cpu_seconds,
            self.postgres_cpu_seconds,
            self.load_generator_and_receiver_cpu_seconds
        );
        if s.tracing == Tracing::On {
            out += &format!(
                "   trace endpoint received {} exports, {:.1} MiB\n",
                self.exporter.requests,
                self.exporter.bytes as f64 / 1024.0 / 1024.0
            );
        }
        out
    }
}
