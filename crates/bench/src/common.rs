//! What the scenarios share: the loopback settings, the benchmark tenant's token, in-process
//! services, the subscription they create, the event they publish, and waiting for a service
//! to be ready.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waybill_domain::{Scope, TenantId};
use waybill_runtime::{JwtKeys, Settings, service::RunningService};

/// The tenant every scenario publishes as.
pub const TENANT: &str = "bench";

/// Services on free loopback ports, receivers on loopback allowed, no tenant rate limit.
pub fn on_loopback(settings: &mut Settings, log_level: &str) -> anyhow::Result<()> {
    settings.http.port = 0;
    settings.rate_limit.per_second = 0;
    settings.log.level = log_level.into();
    settings.security.allow_http = true;
    settings.security.allowed_private_ranges = vec!["127.0.0.0/8".parse()?];
    Ok(())
}

/// A token of [`TENANT`] that may manage subscriptions and publish.
pub fn token(settings: &Settings) -> anyhow::Result<String> {
    token_with(settings, &[Scope::WebhooksWrite, Scope::EventsPublish])
}

/// A token of [`TENANT`] with `scopes`, valid for an hour.
pub fn token_with(settings: &Settings, scopes: &[Scope]) -> anyhow::Result<String> {
    let keys = JwtKeys::from_settings(settings)?;
    let tenant = TenantId::parse(TENANT).map_err(anyhow::Error::msg)?;
    keys.mint(&tenant, scopes, chrono::Duration::hours(1))
}

/// Runs a service built in this process in the background; returns its base URL.
pub fn serve(service: RunningService) -> String {
    let base = format!("http://127.0.0.1:{}", service.port());
    tokio::spawn(service.run_until_stopped());
    base
}

/// Creates a subscription of [`TENANT`] to `stock.updated` at `url`; returns its id.
pub async fn subscribe(
    client: &reqwest::Client,
    api_base: &str,
    token: &str,
    url: &str,
) -> anyhow::Result<String> {
    let created: Value = client
        .post(format!("{api_base}/v1/webhooks"))
        .bearer_auth(token)
        .json(&json!({"url": url, "events": ["stock.updated"]}))
        .send()
        .await?
        .json()
        .await?;
    created["data"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no subscription created: {created}"))
}

/// The `data` of the `stock.updated` events the scenarios publish.
pub fn stock_data() -> Value {
    json!({"sku": "TSH-BLK-M", "warehouse_id": "wh_rtm_01", "on_hand": 340, "allocated": 52,
           "available": 288, "updated_at": "2026-01-10T12:00:04Z"})
}

/// Waits until `base`'s `/readyz` answers 200, for at most two minutes.
pub async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{base} was not ready within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stores one current signing secret (already encrypted) per subscription of `ids`.
pub async fn insert_secrets(
    conn: &mut diesel_async::AsyncPgConnection,
    ids: &[uuid::Uuid],
    secrets: &[Vec<u8>],
) -> anyhow::Result<()> {
    use diesel::{
        sql_query,
        sql_types::{Array, Binary, Uuid as SqlUuid},
    };
    use diesel_async::RunQueryDsl;
    sql_query(
        "INSERT INTO webhook_secrets (webhook_id, secret, created_at) \
         SELECT u.id, u.secret, now() FROM unnest($1, $2) AS u(id, secret)",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Binary>, _>(secrets)
    .execute(conn)
    .await?;
    Ok(())
}
