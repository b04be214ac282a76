//! A database and broker prefix of a scenario's own, removed when it ends (also on failure).

use std::future::Future;

use anyhow::Context;
use diesel::sql_query;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use waybill_runtime::Settings;

/// The server part of a Postgres URL (everything before the database name).
fn server_url(db_url: &str) -> &str {
    db_url.rsplit_once('/').map_or(db_url, |(base, _)| base)
}

/// Runs `scenario` with the configured settings pointed at a fresh database and broker prefix
/// named after `name`, then drops both.
pub async fn run_in<F, Fut>(name: &str, scenario: F) -> anyhow::Result<()>
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut settings = Settings::load(0, None)?;
    let admin_url = std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| format!("{}/postgres", server_url(&settings.database.url)));
    let scratch = format!("waybill_bench_{name}_{}", std::process::id());
    let mut admin = AsyncPgConnection::establish(&admin_url)
        .await
        .context("connecting to postgres")?;
    sql_query(format!("CREATE DATABASE {scratch}"))
        .execute(&mut admin)
        .await?;
    settings.database.url = format!("{}/{scratch}", server_url(&admin_url));
    settings.broker.prefix = scratch.clone();
    let topology = settings.topology()?;
    let conn = lapin::Connection::connect(&settings.broker.url, Default::default()).await?;
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    let result = scenario(settings).await;
    sql_query(format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    topology.delete(&channel).await?;
    result
}
