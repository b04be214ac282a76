//! Builds `waybill-ingest`: database and catalog, broker, HTTP server, catalog refresh.

use actix_web::web;
use anyhow::Context;
use waybill_bus::Broker;
use waybill_runtime::{
    AuthState, JwtKeys, Settings,
    http::{Metrics, postgres_and_broker},
    openapi::ServiceConfig,
    rate_limit::TenantLimiter,
    service::{RunningService, Shared},
};

use waybill_catalog::Catalog;
use waybill_publisher::EventPublisher;

use crate::{events::IngestState, routes};

/// The ingest service.
pub struct Application;

impl Application {
    /// Prepares the database and catalog and binds the port (0 picks a free one). The broker is
    /// connected on first use, so ingest starts (and answers 503) while it is away.
    pub async fn build(settings: Settings) -> anyhow::Result<RunningService> {
        let pool = waybill_store::bootstrap(&settings.database.url, settings.database.pool_size)
            .await
            .context("preparing the database")?;
        let catalog = Catalog::default();
        catalog
            .refresh(&pool)
            .await
            .context("loading the event catalog")?;
        let broker = Broker::new(settings.broker.url.clone(), settings.topology()?);
        let shared = Shared {
            auth: AuthState {
                keys: JwtKeys::from_settings(&settings)?,
                limiter: TenantLimiter::new(&settings.rate_limit),
            },
            metrics: Metrics::new("ingest"),
            readiness: postgres_and_broker(pool.clone(), broker.clone()),
        };
        let state = web::Data::new(IngestState {
            catalog: catalog.clone(),
            publisher: EventPublisher::new(broker),
        });
        let mut service = RunningService::start(&settings, shared, move |cfg| {
            cfg.app_data(state.clone());
            routes::configure(&mut ServiceConfig::new(cfg));
        })?;
        service.spawn(move |stop| catalog.keep_fresh(pool, waybill_catalog::REFRESH_EVERY, stop));
        Ok(service)
    }
}
