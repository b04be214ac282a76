//! HTTP plumbing shared by the services: request ids, access logs and metrics middleware,
//! `/healthz`, `/readyz`, `/metrics`, and JSON answers for unknown routes and methods.

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use actix_web::{
    Error, HttpRequest, HttpResponse, ResponseError,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    web,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tracing::{Instrument, field::Empty};

use crate::ApiError;

/// Header carrying the request id, taken from the client when sane, else generated.
pub const REQUEST_ID: &str = "x-request-id";

/// A service's Prometheus registry and its HTTP instruments.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    ready: IntGauge,
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let registry = Registry::new_custom(
            Some("waybill".into()),
            Some([("service".to_owned(), service.to_owned())].into()),
        )
        .unwrap_or_default();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route and status.",
            ),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer HTTP requests.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method", "route"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let ready = IntGauge::new(
            "ready",
            "1 when the last readiness check passed (what GET /readyz answers 200 for), 0 when it failed or has not run yet; checked every 5 s and at each /readyz request.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(latency.clone()));
        let _ = registry.register(Box::new(ready.clone()));
        Self {
            registry,
            requests,
            latency,
            ready,
        }
    }

    /// Records the outcome of a readiness check in `waybill_ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Prometheus text of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

// The metric definitions above are constants; failing to build them is a programming error.
#[allow(clippy::panic)]
fn unreachable_metric<T>() -> T {
    panic!("static metric definition rejected")
}

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

tokio::task_local! {
    /// The well-formed `traceparent` of the request being handled, if it came with one.
    static INCOMING: Option<String>;
}

/// The caller's `traceparent` of the request this runs for, normalised, when well formed: what
/// work the request starts passes on while traces are off (see `waybill_trace::onward`). Only
/// in the request's own task: a spawned task or a blocking pool sees `None`.
pub fn incoming_traceparent() -> Option<String> {
    INCOMING.try_with(Clone::clone).ok().flatten()
}

/// The target of the request spans of [`OPERATIONS_PATHS`]: Waybill's, so that log filters treat
/// them as the others, and left out of export by name (`crate::telemetry`).
pub const OPERATIONS_TARGET: &str = "waybill_runtime::http::operations";

/// The paths of [`standard_routes`], which no trace is made of.
const OPERATIONS_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Middleware: request id, a span per request, one access log line, metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    // The server span of the request; the `otel.*` and semantic-convention fields are filled in
    // only when traces are exported (see `waybill_trace`). Probes, scrapes and the document get
    // a target of their own, so that they are logged like any request but never exported:
    // a trace per liveness probe would bury the events' traces.
    macro_rules! request_span {
        ($target:expr) => {
            tracing::info_span!(
                target: $target,
                "http",
                request_id = %id,
                %method,
                %path,
                otel.name = Empty,
                otel.kind = Empty,
                otel.status_code = Empty,
                http.request.method = Empty,
                http.route = Empty,
                http.response.status_code = Empty,
                url.path = Empty,
                waybill.tenant = Empty,
                waybill.event_type = Empty,
                waybill.event_id = Empty,
            )
        };
    }
    let operations = OPERATIONS_PATHS.contains(&path.as_str());
    let incoming = req
        .headers()
        .get(waybill_trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(waybill_trace::normalize);
    let span = if operations {
        request_span!(OPERATIONS_TARGET)
    } else {
        request_span!("waybill_runtime::http")
    };
    if waybill_trace::on() && !operations {
        let route = req.match_pattern();
        let route = route.as_deref().unwrap_or("unmatched");
        span.record("otel.name", format!("{method} {route}"));
        span.record("otel.kind", "server");
        span.record("http.request.method", method.as_str());
        span.record("http.route", route);
        span.record("url.path", path.as_str());
        waybill_trace::set_parent(&span, incoming.as_deref());
    }
    let mut res = INCOMING
        .scope(incoming, next.call(req).instrument(span.clone()))
        .await?;
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    if waybill_trace::on() {
        span.record("http.response.status_code", i64::from(status));
        if res.status().is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
    let elapsed = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), v);
    }
    if let Some(m) = metrics {
        m.requests
            .with_label_values(&[method.as_str(), route.as_str(), &status.to_string()])
            .inc();
        m.latency
            .with_label_values(&[method.as_str(), route.as_str()])
            .observe(elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(status, route = %route, duration_ms = elapsed.as_secs_f64() * 1000.0, "request");
    });
    Ok(res)
}

/// The routes every service answers besides its own operations: its probes, its metrics and
/// its OpenAPI document, in the order they are registered.
pub fn standard_routes(document: fn() -> String) -> [(&'static str, actix_web::Route); 4] {
    [
        (OPERATIONS_PATHS[0], web::get().to(healthz)),
        (OPERATIONS_PATHS[1], web::get().to(readyz)),
        (OPERATIONS_PATHS[2], web::get().to(metrics)),
        (OPERATIONS_PATHS[3], crate::openapi::serve(document)),
    ]
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /metrics`.
pub async fn metrics(m: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(m.render())
}

/// A dependency check of `/readyz`: a name and an async probe.
pub type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Wraps an async check as a [`Probe`].
pub fn probe<F, Fut>(f: F) -> Probe
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// The checks every service runs: Postgres answers a query, the broker a connection.
pub fn postgres_and_broker(pool: waybill_store::PgPool, broker: waybill_bus::Broker) -> Readiness {
    Readiness(vec![
        (
            "postgres",
            probe(move || {
                let pool = pool.clone();
                async move { waybill_store::ping(&pool).await.map_err(|e| e.to_string()) }
            }),
        ),
        (
            "broker",
            probe(move || {
                let broker = broker.clone();
                async move { broker.ping().await.map_err(|e| e.to_string()) }
            }),
        ),
    ])
}

/// The checks `/readyz` runs.
#[derive(Clone, Default)]
pub struct Readiness(pub Vec<(&'static str, Probe)>);

/// How long one readiness probe may take before it counts as failed.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl Readiness {
    /// Runs every check: `Ok` with each one's `"ok"` when all pass, else what failed and why.
    pub async fn check(&self) -> Result<serde_json::Map<String, serde_json::Value>, Vec<String>> {
        let mut report = serde_json::Map::new();
        let mut failed = Vec::new();
        for (name, probe) in &self.0 {
            match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => {
                    report.insert((*name).into(), "ok".into());
                }
                Ok(Err(e)) => failed.push(format!("{name}: {e}")),
                Err(_) => failed.push(format!("{name}: timed out")),
            }
        }
        if failed.is_empty() {
            Ok(report)
        } else {
            Err(failed)
        }
    }
}

/// `GET /readyz`: 200 when every dependency answers, else 503 naming what does not. The
/// answer also sets `waybill_ready`.
pub async fn readyz(
    checks: web::Data<Readiness>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let checked = checks.check().await;
    metrics.set_ready(checked.is_ok());
    match checked {
        Ok(report) => {
            Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "checks": report})))
        }
        Err(failed) => Err(ApiError::unavailable(
            format!("Not ready: {}.", failed.join("; ")),
            5,
        )),
    }
}

/// Fallback for unknown routes.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("There is no resource at {}.", req.path())).error_response()
}

/// Fallback for a known route with a method it does not take; `allow` lists the ones it does.
pub fn method_not_allowed(allow: impl Into<String>) -> actix_web::Route {
    // Method names are tokens, always a valid header value; a bad one only loses the header.
    let allow = HeaderValue::from_str(&allow.into()).ok();
    web::to(move || {
        let allow = allow.clone();
        async move {
            let mut res = ApiError::method_not_allowed().error_response();
            if let Some(allow) = allow {
                res.headers_mut()
                    .insert(actix_web::http::header::ALLOW, allow);
            }
            res
        }
    })
}
