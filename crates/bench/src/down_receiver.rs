//! A receiver that is down for the whole run: how many requests does the dispatcher still send
//! it? Events are published through ingest over HTTP at a fixed rate to one subscription whose
//! receiver answers 503 to everything; the receiver counts what reaches it. With the circuit
//! breaker, that is the requests that open the circuit plus one probe per cooldown; without it
//! (`--threshold` larger than the events), one request per event and more as retries come due.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::json;
use waybill_runtime::Settings;

use crate::common;

pub struct Params {
    pub rate: u32,
    pub seconds: u64,
    pub threshold: u32,
    pub cooldown: String,
    pub json: Option<PathBuf>,
}

pub async fn run(p: Params) -> anyhow::Result<()> {
    // A short schedule, so that without a breaker the retries would come due within the run.
    let schedule = |s: &mut Settings| {
        s.delivery.retry_schedule = vec!["10s".into(), "20s".into(), "40s".into()];
    };
    crate::scratch::run_in_with("down", schedule, |settings| measure(&p, settings)).await
}

async fn measure(p: &Params, mut settings: Settings) -> anyhow::Result<()> {
    common::on_loopback(&mut settings, "error")?;
    settings.breaker.failure_threshold = p.threshold;
    settings.breaker.cooldown = p.cooldown.clone();
    settings.breaker.max_cooldown = "10m".into();
    settings.breaker_policy()?;
    let token = common::token(&settings)?;
    let client = reqwest::Client::builder().no_proxy().build()?;

    let requests = Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let receiver_port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().default_service(web::to(move || {
            seen.fetch_add(1, Ordering::Relaxed);
            async { HttpResponse::ServiceUnavailable().finish() }
        }))
    })
    .listen(listener)?
    .workers(1)
    .run();
    tokio::spawn(server);

    let api_base = common::serve(waybill_api::Application::build(settings.clone()).await?);
    common::subscribe(
        &client,
        &api_base,
        &token,
        &format!("http://127.0.0.1:{receiver_port}/down"),
    )
    .await?;
    let dispatcher = common::serve(waybill_dispatcher::Application::build(settings.clone()).await?);
    let publish_url = format!(
        "{}/v1/events",
        common::serve(waybill_ingest::Application::build(settings.clone()).await?)
    );
    common::wait_ready(&client, &dispatcher).await?;

    let data = common::stock_data();
    let total = u64::from(p.rate) * p.seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(p.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut accepted = 0u64;
    for i in 0..total {
        ticker.tick().await;
        let r = client
            .post(&publish_url)
            .bearer_auth(&token)
            .json(&json!({"type": "stock.updated", "id": format!("down-{i}"), "data": data}))
            .send()
            .await;
        if r.map(|r| r.status() == 202).unwrap_or(false) {
            accepted += 1;
        }
    }
    let elapsed = started.elapsed();
    let sent = requests.load(Ordering::Relaxed);
    let metric = |text: &str, outcome: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("waybill_dispatcher_deliveries_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let text = client
        .get(format!("{dispatcher}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let deferred = metric(&text, "deferred").max(0.0) as u64;
    println!(
        "receiver down for {:.0} s: {accepted} events accepted ({} events/s), {sent} requests reached the receiver, {deferred} times a delivery was held back by the open circuit (breaker threshold {}, cooldown {})",
        elapsed.as_secs_f64(),
        p.rate,
        p.threshold,
        p.cooldown
    );
    if let Some(path) = &p.json {
        let doc = json!({"scenario": "down-receiver", "rate": p.rate, "seconds": p.seconds,
            "accepted": accepted, "requests_to_receiver": sent, "deferred": deferred,
            "breaker_threshold": p.threshold, "breaker_cooldown": p.cooldown});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
