//! An OTLP/HTTP trace receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`
//! (gzip-compressed or not), decoded with the project's own OpenTelemetry protocol types and
//! kept span by span with its resource's `service.name`, so a test asserts on the spans the
//! services really exported.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io::Read,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::span::SpanKind,
};
use prost::Message;
use serde_json::Value;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

/// One exported span.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    /// `service.name` of the resource it came with.
    pub service: String,
    pub name: String,
    /// Lowercase hex, as in a `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Whether its status is `error`.
    pub error: bool,
    pub attributes: BTreeMap<String, Value>,
}

impl ExportedSpan {
    /// The attribute `key`, as JSON (strings, numbers, booleans).
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// The attribute `key` when it is a string.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }

    /// The attribute `key` when it is an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_i64)
    }
}

struct Shared {
    spans: Mutex<Vec<ExportedSpan>>,
    arrived: Notify,
}

impl Shared {
    fn spans(&self) -> std::sync::MutexGuard<'_, Vec<ExportedSpan>> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An OTLP/HTTP collector on a random local port, serving until dropped.
pub struct Collector {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Collector {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            spans: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let accept = tokio::spawn(serve(listener, shared.clone()));
        Collector {
            port,
            shared,
            accept,
        }
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter adds `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.shared.spans().clone()
    }

    /// Waits until `done` holds for the spans received; panics after `timeout` listing them.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ExportedSpan]) -> bool,
    ) -> Vec<ExportedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let spans = self.spans();
                if done(&spans) {
                    return spans;
                }
                let seen: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} {} {:?}", s.service, s.name, s.attributes))
                    .collect();
                panic!("waited {timeout:?} for {what}; spans received: {seen:#?}");
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(answer(request, &shared).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn answer(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (head, body) = request.into_parts();
    if head.method != hyper::Method::POST || head.uri.path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND, "text/plain", b"not found".to_vec());
    }
    let content_type = head
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/x-protobuf" {
        return reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
            format!("content type `{content_type}` is not application/x-protobuf").into_bytes(),
        );
    }
    let Ok(collected) = body.collect().await else {
        return reply(StatusCode::BAD_REQUEST, "text/plain", b"body".to_vec());
    };
    let mut bytes = collected.to_bytes().to_vec();
    let gzip = head
        .headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if gzip {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut plain)
            .is_err()
        {
            return reply(StatusCode::BAD_REQUEST, "text/plain", b"bad gzip".to_vec());
        }
        bytes = plain;
    }
    let Ok(export) = ExportTraceServiceRequest::decode(bytes.as_slice()) else {
        return reply(StatusCode::BAD_REQUEST, "text/plain", b"not OTLP".to_vec());
    };
    let mut received = Vec::new();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .map(value)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ExportedSpan {
                    service: service.clone(),
                    kind: match SpanKind::try_from(span.kind) {
                        Ok(SpanKind::Server) => "server",
                        Ok(SpanKind::Client) => "client",
                        Ok(SpanKind::Producer) => "producer",
                        Ok(SpanKind::Consumer) => "consumer",
                        _ => "internal",
                    },
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex(&span.parent_span_id)),
                    attributes: attributes(&span.attributes),
                    name: span.name,
                });
            }
        }
    }
    shared.spans().extend(received);
    shared.arrived.notify_waiters();
    reply(
        StatusCode::OK,
        "application/x-protobuf",
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), value(kv.value.as_ref()?))))
        .collect()
}

fn value(v: &AnyValue) -> Value {
    match &v.value {
        Some(Any::StringValue(s)) => Value::String(s.clone()),
        Some(Any::BoolValue(b)) => Value::Bool(*b),
        Some(Any::IntValue(i)) => Value::from(*i),
        Some(Any::DoubleValue(d)) => Value::from(*d),
        Some(Any::ArrayValue(a)) => Value::Array(a.values.iter().map(value).collect()),
        _ => Value::Null,
    }
}
