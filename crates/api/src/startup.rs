//! Builds the api: migrations, catalog sync, HTTP server, change-feed relay.

use std::sync::Arc;

use actix_web::web;
use anyhow::Context;
use prometheus::IntGauge;
use tokio::sync::Notify;
use waybill_bus::Broker;
use waybill_runtime::{
    AuthState, JwtKeys, Settings,
    http::{Metrics, postgres_and_broker},
    rate_limit::TenantLimiter,
    service::{RunningService, Shared},
};
use waybill_store::Cipher;

use crate::{relay, routes, state::AppState};

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
        let state = AppState {
            pool: pool.clone(),
            broker: broker.clone(),
            outbound: waybill_dispatcher::outbound::Outbound::new(
                settings.url_policy(),
                waybill_runtime::config::parse_duration(&settings.delivery.timeout)?,
            )?,
            cipher: Cipher::new(&settings.encryption_key()?)?,
            urls: settings.url_policy(),
            relay_wakeup: Arc::new(Notify::new()),
            catalog: Default::default(),
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
            routes::configure(cfg);
        })?;
        service.spawn(move |stop| relay::run(pool, broker, wakeup, backlog, stop));
        Ok(service)
    }
}
