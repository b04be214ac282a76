//! Delivery latency: events published through ingest over HTTP at a fixed rate, each to one
//! subscription, delivered by a dispatcher to a receiver on loopback that verifies every
//! signature. Latency is from the moment the publisher has ingest's 202 to the moment the
//! receiver has the request. Everything runs in this process on loopback: api, ingest,
//! dispatcher, receiver and load generator, with the real Postgres and RabbitMQ.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::json;
use waybill_domain::{SigningSecret, signature::sign};
use waybill_runtime::Settings;

use crate::{common, stats::Summary};

pub struct Params {
    pub rate: u32,
    pub seconds: u64,
    pub json: Option<PathBuf>,
}

pub async fn run(p: Params) -> anyhow::Result<()> {
    crate::scratch::run_in("delivery", |settings| measure(&p, settings)).await
}

#[derive(Default)]
struct Arrivals {
    at: HashMap<String, Vec<Instant>>,
    bad_signatures: u64,
}

struct ReceiverState {
    key: Vec<u8>,
    arrivals: Mutex<Arrivals>,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let now = Instant::now();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, ts, sigs) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let valid = ts
        .parse::<i64>()
        .map(|ts| {
            sigs.split(' ')
                .any(|s| s == sign(&state.key, &id, ts, &body))
        })
        .unwrap_or(false);
    if let Ok(mut a) = state.arrivals.lock() {
        if !valid {
            a.bad_signatures += 1;
        }
        a.at.entry(id).or_default().push(now);
    }
    HttpResponse::NoContent().finish()
}

async fn measure(p: &Params, mut settings: Settings) -> anyhow::Result<()> {
    common::on_loopback(&mut settings, "warn")?;
    let token = common::token(&settings)?;
    let client = reqwest::Client::builder().no_proxy().build()?;

    let api_base = common::serve(waybill_api::Application::build(settings.clone()).await?);

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let receiver_port = listener.local_addr()?.port();
    let webhook_id = common::subscribe(
        &client,
        &api_base,
        &token,
        &format!("http://127.0.0.1:{receiver_port}/hook"),
    )
    .await?;
    let secret: serde_json::Value = client
        .get(format!("{api_base}/v1/webhooks/{webhook_id}/secret"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let secret = SigningSecret::parse(secret["data"]["secret"].as_str().unwrap_or(""))
        .map_err(anyhow::Error::msg)?;
    let state = web::Data::new(ReceiverState {
        key: secret.key().to_vec(),
        arrivals: Mutex::new(Arrivals::default()),
    });
    let receiver_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(receiver_state.clone())
            .route("/hook", web::post().to(receive))
    })
    .listen(listener)?
    .workers(1)
    .run();
    tokio::spawn(server);

    let dispatcher = common::serve(waybill_dispatcher::Application::build(settings.clone()).await?);
    let publish_url = Arc::new(format!(
        "{}/v1/events",
        common::serve(waybill_ingest::Application::build(settings.clone()).await?)
    ));
    // Ready: the dispatcher's index is loaded.
    common::wait_ready(&client, &dispatcher).await?;

    let data = common::stock_data();
    let token = Arc::new(token);
    let publish = |id: String| {
        let (client, url, token, data) = (
            client.clone(),
            publish_url.clone(),
            token.clone(),
            data.clone(),
        );
        async move {
            let sent = Instant::now();
            let r = client
                .post(url.as_str())
                .bearer_auth(token.as_str())
                .json(&json!({"type": "stock.updated", "id": id, "data": data}))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 202 => Some((id, sent, Instant::now())),
                _ => None,
            }
        }
    };
    // Warm up the connections, the dispatcher's pool and the receiver.
    for i in 0..50 {
        publish(format!("warm-{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let total = u64::from(p.rate) * p.seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(p.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticker.tick().await;
        tasks.push(tokio::spawn(publish(format!("ev-{i}"))));
    }
    let mut accepted: HashMap<String, Instant> = HashMap::new();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    for t in tasks {
        if let Some((id, sent, at)) = t.await? {
            sent_at.insert(id.clone(), sent);
            accepted.insert(id, at);
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    // Let the last deliveries arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let arrived = state
            .arrivals
            .lock()
            .map(|a| accepted.keys().filter(|k| a.at.contains_key(*k)).count())
            .unwrap_or(0);
        if arrived == accepted.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrivals = state
        .arrivals
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
    let mut latencies = Vec::with_capacity(accepted.len());
    let mut end_to_end = Vec::with_capacity(accepted.len());
    let (mut lost, mut duplicates, mut early) = (0u64, 0u64, 0u64);
    for (id, at_202) in &accepted {
        match arrivals.at.get(id) {
            None => lost += 1,
            Some(times) => {
                duplicates += times.len() as u64 - 1;
                let first = times.iter().min().copied().unwrap_or(*at_202);
                if first < *at_202 {
                    // The delivery beat the 202 back to the publisher.
                    early += 1;
                }
                latencies.push(first.saturating_duration_since(*at_202));
                if let Some(sent) = sent_at.get(id) {
                    end_to_end.push(first.saturating_duration_since(*sent));
                }
            }
        }
    }
    let summary = Summary::of(&mut latencies);
    let whole = Summary::of(&mut end_to_end);
    println!(
        "{} events/s for {} s: {} published ({} accepted, {:.0}/s), {lost} lost, {duplicates} duplicates, {} bad signatures, {early} delivered before the publisher had its 202 (counted as 0 ms)",
        p.rate,
        p.seconds,
        total,
        accepted.len(),
        accepted.len() as f64 / publish_secs,
        arrivals.bad_signatures
    );
    println!("{}", summary.line("202 -> receiver"));
    println!("{}", whole.line("request -> receiver"));
    if let Some(path) = &p.json {
        let doc = json!({"scenario": "delivery-latency", "rate": p.rate, "seconds": p.seconds,
            "published": total, "accepted": accepted.len(), "lost": lost, "duplicates": duplicates,
            "bad_signatures": arrivals.bad_signatures, "latency": summary,
            "latency_from_request": whole});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
