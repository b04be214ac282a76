//! What the services export their traces to during a pipeline scenario: nothing (tracing
//! off), an OTLP/HTTP endpoint that answers every export, or one that is down. Comparing the
//! three back to back shows what tracing costs and that an exporter's outage costs nothing.

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Serialize;

/// Where the services send their spans.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tracing {
    /// No `OTEL_EXPORTER_OTLP_ENDPOINT`: nothing is exported.
    Off,
    /// Every span sampled and exported to a local OTLP/HTTP endpoint that accepts each batch.
    On,
    /// Every span sampled, exported to a port where nothing listens (connections refused).
    Down,
    /// Every span sampled, exported to an endpoint that accepts connections and never answers.
    Hung,
}

impl Tracing {
    pub fn name(self) -> &'static str {
        match self {
            Tracing::Off => "off",
            Tracing::On => "on",
            Tracing::Down => "down",
            Tracing::Hung => "hung",
        }
    }
}

/// What the endpoint received.
#[derive(Debug, Default, Serialize)]
pub struct Received {
    pub requests: u64,
    pub bytes: u64,
}

/// A running endpoint (or the lack of one) and the variables that point the services at it.
pub struct Exporter {
    pub env: Vec<(&'static str, String)>,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    server: Option<actix_web::dev::ServerHandle>,
    _held: Option<TcpListener>,
}

impl Exporter {
    pub async fn start(mode: Tracing) -> anyhow::Result<Exporter> {
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut exporter = Exporter {
            env: Vec::new(),
            requests: requests.clone(),
            bytes: bytes.clone(),
            server: None,
            _held: None,
        };
        let port = match mode {
            Tracing::Off => return Ok(exporter),
            Tracing::On => {
                let listener = TcpListener::bind("127.0.0.1:0")?;
                let port = listener.local_addr()?.port();
                let server = HttpServer::new(move || {
                    let (requests, bytes) = (requests.clone(), bytes.clone());
                    App::new().route(
                        "/v1/traces",
                        web::post().to(move |body: web::Bytes| {
                            requests.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                            // An empty ExportTraceServiceResponse: full success.
                            async {
                                HttpResponse::Ok()
                                    .content_type("application/x-protobuf")
                                    .finish()
                            }
                        }),
                    )
                })
                .listen(listener)?
                .workers(1)
                .disable_signals()
                .run();
                exporter.server = Some(server.handle());
                tokio::spawn(server);
                port
            }
            Tracing::Down => {
                // A port that was free a moment ago, with nothing listening on it.
                let listener = TcpListener::bind("127.0.0.1:0")?;
                listener.local_addr()?.port()
            }
            Tracing::Hung => {
                // Bound with a backlog and never accepted from: connections complete in the
                // kernel and no answer ever comes.
                let listener = TcpListener::bind("127.0.0.1:0")?;
                let port = listener.local_addr()?.port();
                exporter._held = Some(listener);
                port
            }
        };
        exporter.env = vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        ];
        Ok(exporter)
    }

    pub fn received(&self) -> Received {
        Received {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            drop(server.stop(false));
        }
    }
}
