//! Builds and runs `waybill-ingest`: database and catalog, broker, HTTP server, catalog refresh.

use std::{net::TcpListener, time::Duration};

use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};
use anyhow::Context;
use tokio::sync::watch;
use waybill_bus::Broker;
use waybill_runtime::{
    AuthState, JwtKeys, Settings,
    http::{Metrics, observe, postgres_and_broker},
    rate_limit::TenantLimiter,
};

use crate::{catalog::Catalog, events::IngestState, publisher::EventPublisher, routes};

/// How often the catalog (active flags, schemas) is re-read from Postgres.
pub const CATALOG_REFRESH: Duration = Duration::from_secs(2);

/// A built, not yet running, ingest service.
pub struct Application {
    port: u16,
    server: Server,
    stop_background: watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Prepares the database and catalog and binds the port (0 picks a free one). The broker is
    /// connected on first use, so ingest starts (and answers 503) while it is away.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let pool = waybill_store::bootstrap(&settings.database.url, settings.database.pool_size)
            .await
            .context("preparing the database")?;
        let catalog = Catalog::default();
        catalog
            .refresh(&pool)
            .await
            .context("loading the event catalog")?;
        let broker = Broker::new(settings.broker.url.clone(), settings.topology()?);
        let state = IngestState {
            catalog: catalog.clone(),
            publisher: EventPublisher::new(broker.clone()),
        };
        let auth = AuthState {
            keys: JwtKeys::from_settings(&settings)?,
            limiter: TenantLimiter::new(&settings.rate_limit),
        };
        let readiness = postgres_and_broker(pool.clone(), broker.clone());
        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| format!("binding {}:{}", settings.http.host, settings.http.port))?;
        let port = listener.local_addr()?.port();
        let (state_d, auth_d, metrics_d, ready_d) = (
            web::Data::new(state),
            web::Data::new(auth.clone()),
            web::Data::new(Metrics::new("ingest")),
            web::Data::new(readiness),
        );
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(observe))
                .app_data(state_d.clone())
                .app_data(auth_d.clone())
                .app_data(metrics_d.clone())
                .app_data(ready_d.clone())
                .configure(routes::configure)
        })
        .listen(listener)?
        .shutdown_timeout(settings.http.shutdown_timeout_seconds)
        .run();

        let (stop_background, mut stop) = watch::channel(false);
        let limiter = auth.limiter.clone();
        let background = vec![tokio::spawn(async move {
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(CATALOG_REFRESH) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = catalog.refresh(&pool).await {
                    tracing::warn!(error = %e, "catalog refresh failed; keeping the last one");
                }
                ticks += 1;
                if ticks.is_multiple_of(30) {
                    limiter.prune();
                }
            }
        })];
        Ok(Application {
            port,
            server,
            stop_background,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM/SIGINT, finishes in-flight requests (each waits for its confirms),
    /// then stops the background task.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        let _ = self.stop_background.send(true);
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        result.context("http server failed")
    }
}
