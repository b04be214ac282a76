//! Delivery log reads with a large log: seeds `attempts` attempt rows (two per delivery, the
//! deliveries spread evenly over `subscriptions` subscriptions of one tenant), then times
//! `GET /v1/webhooks/{id}/deliveries?limit=50` (the newest 50 with the total count) and
//! `GET /v1/deliveries/{id}` against `waybill-api` on loopback.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use diesel::{sql_query, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use waybill_domain::Scope;
use waybill_runtime::Settings;

use crate::{common, stats::Summary};

pub struct Params {
    pub attempts: i64,
    pub subscriptions: i64,
    pub requests: u32,
    pub json: Option<PathBuf>,
}

pub async fn run(p: Params) -> anyhow::Result<()> {
    crate::scratch::run_in("log", |settings| measure(&p, settings)).await
}

async fn measure(p: &Params, mut settings: Settings) -> anyhow::Result<()> {
    common::on_loopback(&mut settings, "warn")?;
    let base = common::serve(waybill_api::Application::build(settings.clone()).await?);
    let token = common::token_with(&settings, &[Scope::WebhooksRead, Scope::WebhooksWrite])?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let webhook = common::subscribe(&client, &base, &token, "https://example.com/hook").await?;

    let deliveries = p.attempts / 2;
    let started = Instant::now();
    let mut conn = AsyncPgConnection::establish(&settings.database.url).await?;
    // Subscription 0 of the spread is the one created above, so it owns its share of the log.
    sql_query(
        "INSERT INTO deliveries (id, tenant, webhook_id, event_id, event_type, status, attempts, \
           last_status_code, created_at, updated_at) \
         SELECT gen_random_uuid(), 'bench', \
           CASE WHEN g % $2 = 0 THEN $3::uuid ELSE md5((g % $2)::text)::uuid END, \
           'ev-' || g, 'stock.updated', 'succeeded', 2, 200, \
           now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval \
         FROM generate_series(1, $1) g",
    )
    .bind::<BigInt, _>(deliveries)
    .bind::<BigInt, _>(p.subscriptions)
    .bind::<diesel::sql_types::Text, _>(&webhook)
    .execute(&mut conn)
    .await?;
    sql_query(
        "INSERT INTO delivery_attempts (delivery_id, number, started_at, duration_ms, status_code, response_body) \
         SELECT d.id, n, d.created_at, 12, CASE WHEN n = 1 THEN 503 ELSE 200 END, 'ok' \
         FROM deliveries d CROSS JOIN generate_series(1, 2) n",
    )
    .execute(&mut conn)
    .await?;
    // As autovacuum leaves a table that has settled: statistics and visibility map current.
    sql_query("VACUUM ANALYZE deliveries")
        .execute(&mut conn)
        .await?;
    sql_query("VACUUM ANALYZE delivery_attempts")
        .execute(&mut conn)
        .await?;
    let seeded = started.elapsed();
    println!(
        "seeded {deliveries} deliveries and {} attempts over {} subscriptions in {:.0} s",
        deliveries * 2,
        p.subscriptions,
        seeded.as_secs_f64()
    );

    let list_url = format!("{base}/v1/webhooks/{webhook}/deliveries?limit=50");
    let first: serde_json::Value = client
        .get(&list_url)
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let count = first["count"].as_i64().unwrap_or(0);
    let one = first["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let detail_url = format!("{base}/v1/deliveries/{one}");
    let time = async |url: &str| -> anyhow::Result<Summary> {
        for _ in 0..50 {
            client.get(url).bearer_auth(&token).send().await?;
        }
        let mut samples: Vec<Duration> = Vec::with_capacity(p.requests as usize);
        for _ in 0..p.requests {
            let t0 = Instant::now();
            let r = client.get(url).bearer_auth(&token).send().await?;
            let status = r.status();
            r.bytes().await?;
            samples.push(t0.elapsed());
            anyhow::ensure!(status == 200, "{url} answered {status}");
        }
        Ok(Summary::of(&mut samples))
    };
    let list = time(&list_url).await?;
    let detail = time(&detail_url).await?;
    println!("the measured subscription has {count} deliveries");
    println!("{}", list.line("list newest 50"));
    println!("{}", detail.line("one delivery"));
    if let Some(path) = &p.json {
        let doc = json!({"scenario": "delivery-log", "attempts": deliveries * 2,
            "deliveries": deliveries, "subscriptions": p.subscriptions,
            "deliveries_of_measured_subscription": count, "list": list, "detail": detail});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
