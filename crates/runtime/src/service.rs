//! A service process: its HTTP server with what every service shares (request observation,
//! auth, metrics, readiness, body limit), its background tasks, and the orderly stop of both.

use std::{future::Future, net::TcpListener, sync::Arc, time::Duration};

use actix_web::{
    App, HttpServer,
    dev::{Server, ServerHandle},
    middleware::from_fn,
    web,
};
use anyhow::Context;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    AuthState, Settings,
    body::{BodyLimit, BodyTimeout},
    http::{Metrics, Readiness, observe},
};

/// How long each background task gets to stop by default.
const DEFAULT_TASK_GRACE: Duration = Duration::from_secs(10);

/// How often per-tenant rate-limit state of idle tenants is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often the readiness checks run for `waybill_ready`, whether or not `/readyz` is asked.
pub const READY_CHECK_EVERY: Duration = Duration::from_secs(5);

/// What every service's routes need.
pub struct Shared {
    pub auth: AuthState,
    pub metrics: Metrics,
    pub readiness: Readiness,
}

/// Stops a [`RunningService`] from outside, as SIGTERM does, for a harness that runs services
/// inside its own process and has no signal to send.
#[derive(Clone)]
pub struct StopHandle {
    server: ServerHandle,
    stop: Arc<watch::Sender<bool>>,
}

impl StopHandle {
    /// Tells the background tasks to stop and the server to finish; returns at once. The tasks
    /// learn of it before this returns, so none of them starts anything new (a reconnect, say)
    /// after it.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        // The command is sent when called; the returned future only waits for its completion.
        drop(self.server.stop(true));
    }
}

/// A bound, serving service; [`RunningService::run_until_stopped`] waits for its end.
pub struct RunningService {
    port: u16,
    server: Server,
    stop: Arc<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<()>>,
    task_grace: Duration,
}

impl RunningService {
    /// Binds `http.host:http.port` (0 picks a free port) and serves the routes `configure`
    /// registers, with the shared app data around them.
    pub fn start<F>(
        settings: &Settings,
        shared: Shared,
        configure: F,
    ) -> anyhow::Result<RunningService>
    where
        F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        let http = &settings.http;
        let listener = TcpListener::bind((http.host.as_str(), http.port))
            .with_context(|| format!("binding {}:{}", http.host, http.port))?;
        let port = listener.local_addr()?.port();
        let limiter = shared.auth.limiter.clone();
        let (ready_checks, ready_gauge) = (shared.readiness.clone(), shared.metrics.clone());
        let (auth, metrics, readiness) = (
            web::Data::new(shared.auth),
            web::Data::new(shared.metrics),
            web::Data::new(shared.readiness),
        );
        let body_limit = web::Data::new(BodyLimit(http.body_limit_bytes));
        let read_timeout = settings.body_read_timeout()?;
        let body_timeout = web::Data::new(BodyTimeout(read_timeout));
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(observe))
                .app_data(auth.clone())
                .app_data(metrics.clone())
                .app_data(readiness.clone())
                .app_data(body_limit.clone())
                .app_data(body_timeout.clone())
                .configure(configure.clone())
        })
        // The head gets the same time as the body (actix answers a late head with a bare 408);
        // a client that does not close after the answer is cut off a second later.
        .client_request_timeout(read_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .listen(listener)?
        .shutdown_timeout(http.shutdown_timeout_seconds)
        .run();
        let (stop, _) = watch::channel(false);
        let mut service = RunningService {
            port,
            server,
            stop: Arc::new(stop),
            tasks: Vec::new(),
            task_grace: DEFAULT_TASK_GRACE,
        };
        service.spawn(move |mut stop| async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(PRUNE_EVERY) => limiter.prune(),
                    _ = stop.changed() => return,
                }
            }
        });
        // A scrape of /metrics then says whether the service would answer /readyz with 200,
        // without the scrape itself waiting on Postgres or the broker.
        service.spawn(move |mut stop| async move {
            loop {
                tokio::select! {
                    checked = ready_checks.check() => ready_gauge.set_ready(checked.is_ok()),
                    _ = stop.changed() => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(READY_CHECK_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
        });
        Ok(service)
    }

    /// Runs a background task; it gets the stop signal and should return soon after it turns.
    pub fn spawn<T, Fut>(&mut self, task: T)
    where
        T: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(task(self.stop.subscribe())));
    }

    /// How long each background task gets to finish once told to stop (10 s by default); a
    /// service whose tasks wait on slow peers sets it above their timeout.
    pub fn set_task_grace(&mut self, grace: Duration) {
        self.task_grace = grace;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops this service from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            server: self.server.handle(),
            stop: self.stop.clone(),
        }
    }

    /// Serves until SIGTERM/SIGINT: the server stops accepting and finishes in-flight requests,
    /// then the background tasks are told to stop and given the task grace each.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        tracing::info!("http server stopped; stopping background tasks");
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(self.task_grace, task).await;
        }
        result.context("http server failed")
    }
}
