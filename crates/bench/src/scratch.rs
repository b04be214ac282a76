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
    run_in_with(name, |_| {}, scenario).await
}

/// [`run_in`] with `adjust` applied to the settings first. Whatever shapes the broker objects
/// the services declare (the retry schedule makes one queue per delay) must be set here, not
/// in the scenario, so that the clean-up removes exactly what was declared.
pub async fn run_in_with<A, F, Fut>(name: &str, adjust: A, scenario: F) -> anyhow::Result<()>
where
    A: FnOnce(&mut Settings),
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
    adjust(&mut settings);
    let result = declare_and_run(&settings, scenario).await;
    // Both are removed whatever happened; the first failure is the one reported.
    let dropped = sql_query(format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .map(drop)
        .context("dropping the scenario's database");
    let deleted = delete_topology(&settings)
        .await
        .context("deleting the scenario's broker objects");
    result.and(dropped).and(deleted)
}

async fn declare_and_run<F, Fut>(settings: &Settings, scenario: F) -> anyhow::Result<()>
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let topology = settings.topology()?;
    let conn = lapin::Connection::connect(&settings.broker.url, Default::default()).await?;
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    scenario(settings.clone()).await
}

/// Deletes every queue and exchange of the scenario's topology, on a connection of its own (the
/// scenario may have left the first one broken).
async fn delete_topology(settings: &Settings) -> anyhow::Result<()> {
    let topology = settings.topology()?;
    let conn = lapin::Connection::connect(&settings.broker.url, Default::default()).await?;
    let channel = conn.create_channel().await?;
    topology.delete(&channel).await?;
    Ok(())
}
