//! Builds the api: migrations, catalog sync, HTTP server, change-feed relay.

use std::sync::Arc;

use actix_web::web;
use anyhow::Context;
use prometheus::IntGauge;
use tokio::sync::Notify;
use waybill_bus::Broker;
use waybill_runtime::{
    AuthState, JwtKeys, Settings,
    config::{parse_duration, parse_duration_up_to},
    http::{Metrics, postgres_and_broker},
    openapi::ServiceConfig,
    rate_limit::TenantLimiter,
    service::{RunningService, Shared},
};
use waybill_store::Cipher;

use crate::{relay, retention::Retention, routes, state::AppState};

/// The api service.
pub struct Application;

impl Application {
    /// Migrates the database, loads the catalog, binds the port (0 picks a free one) and starts
    /// the change-feed relay.
    pub async fn build(settings: Settings) -> anyhow::Result<RunningService> {
        let pool = waybill_store::bootstrap(&settings.database.url, settings.database.pool_size)
            .await
            .context("preparing the database")?;
        let broker = Broker::new(settings.broker.url.clone(), settings.topology()?);
        let metrics = Metrics::new("api");
        let backlog = IntGauge::new(
            "subscription_changes_pending",
            "Subscription changes not yet published to the broker.",
        )?;
        metrics.registry.register(Box::new(backlog.clone()))?;
        let purged = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "retention_deleted_rows_total",
                "Rows deleted by the retention job, by table.",
            ),
            &["table"],
        )?;
        metrics.registry.register(Box::new(purged.clone()))?;
        let retention = Retention {
            pool: pool.clone(),
            period: parse_duration_up_to(&settings.retention.period, 3650)?,
            interval: parse_duration(&settings.retention.interval)?,
            batch_size: i64::from(settings.retention.batch_size),
            purged,
        };
        let state = AppState {
            pool: pool.clone(),
            broker: broker.clone(),
            outbound: waybill_outbound::Outbound::new(
                settings.url_policy(),
                parse_duration(&settings.delivery.timeout)?,
            )?,
            cipher: Cipher::new(&settings.encryption_key()?)?,
            urls: settings.url_policy(),
            relay_wakeup: Arc::new(Notify::new()),
            catalog: waybill_catalog::Catalog::names_only(),
            max_webhooks_per_tenant: settings.limits.max_webhooks_per_tenant,
        };
        let shared = Shared {
            auth: AuthState {
                keys: JwtKeys::from_settings(&settings)?,
                limiter: TenantLimiter::new(&settings.rate_limit),
            },
            metrics,
            readiness: postgres_and_broker(pool.clone(), broker.clone()),
        };
        let wakeup = state.relay_wakeup.clone();
        let state = web::Data::new(state);
        let mut service = RunningService::start(&settings, shared, move |cfg| {
            cfg.app_data(state.clone());
            routes::configure(&mut ServiceConfig::new(cfg));
        })?;
        service.spawn(move |stop| retention.run(stop));
        service.spawn(move |stop| relay::run(pool, broker, wakeup, backlog, stop));
        Ok(service)
    }
}
