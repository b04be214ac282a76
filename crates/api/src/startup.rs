//! Builds and runs the service: migrations, catalog sync, HTTP server, change-feed relay.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};
use anyhow::Context;
use prometheus::IntGauge;
use tokio::sync::{Notify, watch};
use waybill_bus::Broker;
use waybill_runtime::{
    AuthState, JwtKeys, Settings,
    body::BodyLimit,
    http::{Metrics, observe, postgres_and_broker},
    rate_limit::TenantLimiter,
};
use waybill_store::Cipher;

use crate::{relay, routes, state::AppState};

/// A built, not yet running, api service.
pub struct Application {
    port: u16,
    server: Server,
    stop_background: watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Migrates the database, loads the catalog, binds the port (0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let pool = waybill_store::bootstrap(&settings.database.url, settings.database.pool_size)
            .await
            .context("preparing the database")?;

        let cipher = Cipher::new(&settings.encryption_key()?)?;
        let broker = Broker::new(settings.broker.url.clone(), settings.topology()?);
        let metrics = Metrics::new("api");
        let backlog = IntGauge::new(
            "subscription_changes_pending",
            "Subscription changes not yet published to the broker.",
        )?;
        metrics.registry.register(Box::new(backlog.clone()))?;
        let state = AppState {
            pool: pool.clone(),
            cipher,
            urls: settings.url_policy(),
            relay_wakeup: Arc::new(Notify::new()),
            catalog: Default::default(),
        };
        let auth = AuthState {
            keys: JwtKeys::from_settings(&settings)?,
            limiter: TenantLimiter::new(&settings.rate_limit),
        };
        let readiness = postgres_and_broker(pool.clone(), broker.clone());

        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| format!("binding {}:{}", settings.http.host, settings.http.port))?;
        let port = listener.local_addr()?.port();
        let body_limit = settings.http.body_limit_bytes;
        let (state_d, auth_d, metrics_d, ready_d) = (
            web::Data::new(state.clone()),
            web::Data::new(auth.clone()),
            web::Data::new(metrics),
            web::Data::new(readiness),
        );
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(observe))
                .app_data(state_d.clone())
                .app_data(auth_d.clone())
                .app_data(metrics_d.clone())
                .app_data(ready_d.clone())
                .app_data(web::Data::new(BodyLimit(body_limit)))
                .configure(routes::configure)
        })
        .listen(listener)?
        .shutdown_timeout(settings.http.shutdown_timeout_seconds)
        .run();

        let (stop_background, stop_rx) = watch::channel(false);
        let mut background = vec![tokio::spawn(relay::run(
            pool,
            broker,
            state.relay_wakeup.clone(),
            backlog,
            stop_rx.clone(),
        ))];
        let limiter = auth.limiter.clone();
        let mut stop_prune = stop_rx;
        background.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => limiter.prune(),
                    _ = stop_prune.changed() => return,
                }
            }
        }));
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

    /// Serves until SIGTERM/SIGINT (or the server handle stops), then drains in-flight requests
    /// and stops the background tasks.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        tracing::info!("http server stopped; stopping background tasks");
        let _ = self.stop_background.send(true);
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        result.context("http server failed")
    }
}
