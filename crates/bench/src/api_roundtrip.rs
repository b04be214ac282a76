//! Control-plane latency: one client creates a subscription and reads it back, sequentially,
//! against a `waybill-api` on loopback whose table already holds `seed` subscriptions.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, bail};
use diesel::sql_query;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use waybill_api::Application;
use waybill_domain::{Scope, TenantId};
use waybill_runtime::{JwtKeys, Settings};

use crate::stats::Summary;

pub struct Params {
    pub seed: u32,
    pub tenants: u32,
    pub requests: u32,
    pub json: Option<PathBuf>,
}

const WARMUP: u32 = 200;

pub async fn run(p: Params) -> anyhow::Result<()> {
    crate::scratch::run_in("api", |settings| measure(&p, settings)).await
}

async fn measure(p: &Params, mut settings: Settings) -> anyhow::Result<()> {
    crate::common::on_loopback(&mut settings, "warn")?;
    waybill_store::migrate(&settings.database.url).await?;

    let started = Instant::now();
    let mut conn = AsyncPgConnection::establish(&settings.database.url).await?;
    sql_query(format!(
        "INSERT INTO webhooks (id, tenant, name, url, method, events, events_key, created_at, updated_at)
         SELECT gen_random_uuid(), 'tenant-' || (g % {tenants}), 'seed ' || g,
                'https://receiver-' || g || '.example.com/hook', 'POST',
                ARRAY['order.shipped', 'stock.*'], 'order.shipped stock.*',
                now() - g * interval '1 second', now()
         FROM generate_series(1, {seed}) g",
        tenants = p.tenants.max(1),
        seed = p.seed
    ))
    .execute(&mut conn)
    .await?;
    sql_query("INSERT INTO webhook_secrets (webhook_id, secret, created_at) SELECT id, '\\x01'::bytea, now() FROM webhooks")
        .execute(&mut conn)
        .await?;
    sql_query("ANALYZE").execute(&mut conn).await?;
    println!(
        "seeded {} subscriptions over {} tenants in {:.1} s",
        p.seed,
        p.tenants,
        started.elapsed().as_secs_f64()
    );

    let keys = JwtKeys::from_settings(&settings)?;
    let base = crate::common::serve(Application::build(settings).await?);
    let client = reqwest::Client::new();
    let scopes = [Scope::WebhooksRead, Scope::WebhooksWrite];

    let (mut round, mut create, mut read) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..(WARMUP + p.requests) {
        let tenant = TenantId::parse(&format!("tenant-{}", i % p.tenants.max(1)))
            .map_err(anyhow::Error::msg)?;
        let token = keys.mint(&tenant, &scopes, chrono::Duration::hours(1))?;
        let body = json!({"url": format!("https://bench-{i}.example.com/hook"), "events": ["order.shipped", "stock.*"]});
        let t0 = Instant::now();
        let res = client
            .post(format!("{base}/v1/webhooks"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?;
        if res.status() != 201 {
            bail!(
                "create answered {}: {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
        let created: serde_json::Value = res.json().await?;
        let t1 = Instant::now();
        let id = created["data"]["id"]
            .as_str()
            .context("no id in the create answer")?;
        let res = client
            .get(format!("{base}/v1/webhooks/{id}"))
            .bearer_auth(&token)
            .send()
            .await?;
        if res.status() != 200 {
            bail!("read answered {}", res.status());
        }
        let _ = res.bytes().await?;
        let t2 = Instant::now();
        if i >= WARMUP {
            create.push(t1 - t0);
            read.push(t2 - t1);
            round.push(t2 - t0);
        }
    }
    let (round, create, read) = (
        Summary::of(&mut round),
        Summary::of(&mut create),
        Summary::of(&mut read),
    );
    println!("{}", create.line("create (POST)"));
    println!("{}", read.line("read (GET)"));
    println!("{}", round.line("create + read"));
    if let Some(path) = &p.json {
        let doc = json!({
            "scenario": "api-roundtrip", "seeded_subscriptions": p.seed, "tenants": p.tenants,
            "create": create, "read": read, "round_trip": round,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
