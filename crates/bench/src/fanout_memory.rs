//! One big event to thousands of subscriptions: the dispatcher's peak memory while it fans the
//! event out and delivers every copy. The subscriptions (all `*` of one tenant) are stored
//! before the dispatcher starts, so it loads them with its index; the event is an
//! `order.created` whose lines make it the size asked for, published straight onto the events
//! exchange; a receiver on loopback counts the requests.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Serialize;
use serde_json::{Value, json};
use waybill_bus::{Broker, Outgoing};
use waybill_domain::{EventTypeName, TenantId, event::EventEnvelope};
use waybill_runtime::Settings;
use waybill_store::{Cipher, crypto::secret_context};

use crate::{cluster::Cluster, common::TENANT};

pub struct Params {
    pub subscriptions: u32,
    pub event_kib: u32,
    pub delivery_concurrency: Option<u16>,
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    subscriptions: u32,
    delivery_concurrency: Option<u16>,
    event_bytes: usize,
    delivered: u64,
    /// From the publish to the last request.
    seconds: f64,
    /// The dispatcher's peak RSS once it was ready with its index, and over the whole run.
    dispatcher_ready_rss_mib: f64,
    dispatcher_peak_rss_mib: f64,
}

const EVENT_TYPE: &str = "order.created";

pub async fn run(p: Params) -> anyhow::Result<()> {
    let mut out = None;
    crate::scratch::run_in("fanout_memory", async |settings| {
        out = Some(measure(&p, settings).await?);
        Ok(())
    })
    .await?;
    let out = out.ok_or_else(|| anyhow::anyhow!("the scenario produced nothing"))?;
    println!(
        "== fanout-memory: one {:.0} KiB event to {} subscriptions\n   {} delivered in {:.1} s; dispatcher peak RSS {:.1} MiB ({:.1} MiB when ready)",
        out.event_bytes as f64 / 1024.0,
        out.subscriptions,
        out.delivered,
        out.seconds,
        out.dispatcher_peak_rss_mib,
        out.dispatcher_ready_rss_mib
    );
    if let Some(path) = p.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}

/// Stores `n` subscriptions of [`TENANT`] to every event type, each to its own path on the
/// receiver, with real encrypted secrets.
async fn seed(settings: &Settings, n: u32, receiver_port: u16) -> anyhow::Result<()> {
    use diesel::{
        sql_query,
        sql_types::{Array, Text, Uuid as SqlUuid},
    };
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let cipher = Cipher::new(&settings.encryption_key()?)?;
    let mut conn = AsyncPgConnection::establish(&settings.database.url).await?;
    let mut ids = Vec::new();
    let mut urls = Vec::new();
    let mut secrets = Vec::new();
    for i in 0..n {
        let id = uuid::Uuid::now_v7();
        let secret = format!(
            "whsec_{}",
            STANDARD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
        );
        secrets.push(cipher.encrypt(secret.as_bytes(), &secret_context(id.into()))?);
        ids.push(id);
        urls.push(format!("http://127.0.0.1:{receiver_port}/hook/{i}"));
    }
    sql_query(
        "INSERT INTO webhooks (id, tenant, name, url, method, events, events_key, created_at, updated_at) \
         SELECT u.id, $3, '', u.url, 'POST', '{*}', '*', now(), now() \
         FROM unnest($1, $2) AS u(id, url)",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&urls)
    .bind::<Text, _>(TENANT)
    .execute(&mut conn)
    .await?;
    crate::common::insert_secrets(&mut conn, &ids, &secrets).await?;
    Ok(())
}

/// An order with as many lines as make its `data` about `kib` KiB.
fn big_order(kib: u32) -> serde_json::Map<String, Value> {
    let target = kib as usize * 1024;
    let mut order = json!({"order_id": "ord_big_1", "order_number": "SO-900001",
        "warehouse_id": "wh_rtm_01", "owner_code": "ACME", "status": "created",
        "created_at": "2026-01-10T12:00:00Z", "lines": []});
    // The order without lines, as written; each line adds itself and a comma after the first.
    let mut size = order.to_string().len();
    let mut lines = Vec::new();
    let mut n = 0u32;
    while size < target {
        n += 1;
        let line = json!({"line_number": n, "sku": format!("SKU-{n:06}"),
            "product_name": format!("Warehouse bin label, roll of 500, batch {n}"), "quantity": n % 40 + 1});
        size += line.to_string().len() + usize::from(!lines.is_empty());
        lines.push(line);
    }
    order["lines"] = Value::Array(lines);
    order.as_object().cloned().unwrap_or_default()
}

/// The dispatcher's index size, from its metrics (0 when unreadable).
async fn indexed(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(r) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("waybill_dispatcher_index_subscriptions"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn measure(p: &Params, settings: Settings) -> anyhow::Result<Outcome> {
    waybill_store::migrate(&settings.database.url).await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let receiver_port = listener.local_addr()?.port();
    seed(&settings, p.subscriptions, receiver_port).await?;

    let requests = web::Data::new(AtomicU64::new(0));
    let counted = requests.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(counted.clone())
            .app_data(web::PayloadConfig::new(4 << 20))
            .route(
                "/hook/{n}",
                web::post().to(
                    |_body: web::Bytes, count: web::Data<AtomicU64>| async move {
                        count.fetch_add(1, Ordering::Relaxed);
                        HttpResponse::NoContent().finish()
                    },
                ),
            )
    })
    .listen(listener)?
    .workers(2)
    .run();
    tokio::spawn(server);

    let extra: Vec<(&str, String)> = p
        .delivery_concurrency
        .map(|c| ("WAYBILL_DELIVERY__CONCURRENCY", c.to_string()))
        .into_iter()
        .collect();
    let cluster = Cluster::start(&settings, &extra).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while indexed(&client, &cluster.dispatcher.base()).await < u64::from(p.subscriptions) {
        if Instant::now() > deadline {
            anyhow::bail!("the dispatcher did not index the subscriptions within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_rss = cluster.dispatcher.peak_rss_mib().unwrap_or(0.0);

    let now = chrono::Utc::now();
    let event = EventEnvelope {
        id: "big-1".into(),
        tenant: TenantId::parse(TENANT).map_err(anyhow::Error::msg)?,
        kind: EventTypeName::parse(EVENT_TYPE).map_err(anyhow::Error::msg)?,
        client_id: None,
        occurred_at: now,
        received_at: now,
        data: big_order(p.event_kib.saturating_sub(1)),
    };
    let body = serde_json::to_vec(&event)?;
    let broker = Broker::new(settings.broker.url.clone(), settings.topology()?);
    let exchange = settings.topology()?.events_exchange();
    let started = Instant::now();
    broker
        .publish(&Outgoing {
            exchange: &exchange,
            routing_key: EVENT_TYPE,
            body: &body,
            message_id: Some("big-1"),
            headers: vec![],
            mandatory: true,
        })
        .await?;

    // Until every subscription got it, or nothing new came for 30 s (10 minutes for the first
    // request: a fan-out that builds every message first takes a while).
    let mut last = (0, Instant::now(), Instant::now());
    loop {
        let count = requests.load(Ordering::Relaxed);
        if count != last.0 {
            last = (count, Instant::now(), Instant::now());
        }
        let patience = Duration::from_secs(if count == 0 { 600 } else { 30 });
        if count >= u64::from(p.subscriptions) || last.1.elapsed() > patience {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = cluster.dispatcher.peak_rss_mib().unwrap_or(0.0);
    let delivered = requests.load(Ordering::Relaxed);
    let seconds = last.2.saturating_duration_since(started).as_secs_f64();
    drop(cluster);
    Ok(Outcome {
        subscriptions: p.subscriptions,
        delivery_concurrency: p.delivery_concurrency,
        event_bytes: body.len(),
        delivered,
        seconds,
        dispatcher_ready_rss_mib: ready_rss,
        dispatcher_peak_rss_mib: peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_big_order_is_about_the_size_asked_for() {
        let size = serde_json::to_vec(&big_order(255)).unwrap().len();
        assert!((255 * 1024..256 * 1024).contains(&size), "{size}");
    }
}
