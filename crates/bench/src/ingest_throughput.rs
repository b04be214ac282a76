//! Ingest throughput: concurrent clients publish single events over HTTP for a fixed time
//! against a `waybill-ingest` on loopback; every 202 is a persistent message the broker
//! confirmed. Reports events accepted per second and the latency of each publish.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use waybill_domain::Scope;
use waybill_ingest::Application;
use waybill_runtime::Settings;

use crate::{common, stats::Summary};

pub struct Params {
    pub clients: u32,
    pub seconds: u64,
    pub json: Option<PathBuf>,
}

pub async fn run(p: Params) -> anyhow::Result<()> {
    crate::scratch::run_in("ingest", |settings| measure(&p, settings)).await
}

async fn measure(p: &Params, mut settings: Settings) -> anyhow::Result<()> {
    common::on_loopback(&mut settings, "warn")?;
    let token = Arc::new(common::token_with(&settings, &[Scope::EventsPublish])?);
    let base = Arc::new(format!(
        "{}/v1/events",
        common::serve(Application::build(settings).await?)
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(p.clients as usize)
        .build()?;
    let data = common::stock_data();
    // Warm up connections and the catalog.
    for _ in 0..50 {
        client
            .post(base.as_str())
            .bearer_auth(token.as_str())
            .json(&json!({"type": "stock.updated", "data": data}))
            .send()
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(p.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..p.clients)
        .map(|_| {
            let (client, base, token, data) =
                (client.clone(), base.clone(), token.clone(), data.clone());
            tokio::spawn(async move {
                let (mut lat, mut refused) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let res = client
                        .post(base.as_str())
                        .bearer_auth(token.as_str())
                        .json(&json!({"type": "stock.updated", "data": data}))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 202 => lat.push(t0.elapsed()),
                        _ => refused += 1,
                    }
                }
                (lat, refused)
            })
        })
        .collect();
    let (mut lat, mut refused) = (Vec::new(), 0);
    for w in workers {
        let (l, r) = w.await?;
        lat.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = lat.len();
    let rate = accepted as f64 / elapsed;
    let summary = Summary::of(&mut lat);
    println!(
        "{} clients, {:.1} s: {accepted} events accepted (202), {refused} not, {rate:.0} events/s",
        p.clients, elapsed
    );
    println!("{}", summary.line("publish latency"));
    if let Some(path) = &p.json {
        let doc = json!({"scenario": "ingest-throughput", "clients": p.clients, "seconds": elapsed, "accepted": accepted, "refused": refused, "events_per_second": rate, "latency": summary});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
