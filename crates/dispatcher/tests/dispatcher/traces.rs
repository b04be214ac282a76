//! Traces across the three service binaries, exported over OTLP to a collector in the test: one
//! trace per event from the caller through ingest, the broker, the fan-out and each attempt to
//! the receiver's request, and nothing held up when the collector is away.
//!
//! The services run as processes (the OpenTelemetry provider is process-global). The api's and
//! ingest's binaries are taken from the same directory as the dispatcher's, where
//! `cargo test --workspace` builds them.

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Stdio},
};

use serde_json::{Value, json};
use waybill_bus::Outgoing;
use waybill_testkit::{
    Collector, ExportedSpan, Receiver, Reply, Stack, example_data, service::free_port,
};

use crate::helpers::WAIT;

const DISPATCHER: &str = env!("CARGO_BIN_EXE_waybill-dispatcher");

/// A sibling binary of the dispatcher's.
fn binary(name: &str) -> PathBuf {
    let path = std::path::Path::new(DISPATCHER).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p {name}`, or run `cargo test --workspace`)",
        path.display()
    );
    path
}

/// A service process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The three services on `stack`, each exporting to `endpoint`.
struct Services {
    api: u16,
    ingest: u16,
    dispatcher: u16,
    /// Where ingest's log lines go.
    ingest_log: TempLog,
    _processes: Vec<Process>,
}

/// A log file in the temp directory, removed when dropped.
struct TempLog(PathBuf);

impl TempLog {
    fn new(name: &str) -> TempLog {
        TempLog(std::env::temp_dir().join(format!("{name}-{}.log", uuid::Uuid::new_v4())))
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn start_services(stack: &Stack, endpoint: &str) -> Services {
    let ingest_log = TempLog::new("waybill-ingest");
    let mut processes = Vec::new();
    let mut ports = Vec::new();
    for bin in ["waybill-api", "waybill-ingest", "waybill-dispatcher"] {
        let port = free_port();
        let stdout = if bin == "waybill-ingest" {
            Stdio::from(File::create(&ingest_log.0).unwrap())
        } else {
            Stdio::null()
        };
        let child = stack
            .command(binary(bin).to_str().unwrap(), port)
            .arg("serve")
            .envs([
                ("WAYBILL_SECURITY__ALLOW_HTTP", "true"),
                ("WAYBILL_SECURITY__ALLOWED_PRIVATE_RANGES", "127.0.0.0/8"),
                ("WAYBILL_DELIVERY__RETRY_SCHEDULE", "50ms,100ms"),
                ("WAYBILL_DELIVERY__TIMEOUT", "2s"),
                ("WAYBILL_LOG__LEVEL", "info"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                // Spans are sent a tenth of a second after they end, not five seconds.
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ])
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_TRACES_SAMPLER")
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        processes.push(Process(child));
        ports.push(port);
    }
    for port in &ports {
        stack.wait_ready(*port).await;
    }
    Services {
        api: ports[0],
        ingest: ports[1],
        dispatcher: ports[2],
        ingest_log,
        _processes: processes,
    }
}

/// Subscribes `acme` to `url` for `order.shipped` through the api process; waits until the
/// dispatcher's index has it.
async fn subscribe(stack: &Stack, services: &Services, url: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/webhooks", services.api))
        .bearer_auth(stack.acme())
        .json(&json!({"url": url, "events": ["order.shipped"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    let indexed = waybill_testkit::eventually(WAIT, || async {
        (stack
            .metric(
                services.dispatcher,
                "waybill_dispatcher_index_subscriptions",
                "",
            )
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert!(indexed.is_some(), "the dispatcher never indexed {id}");
    id
}

/// Publishes one `order.shipped` of `acme` through the ingest process; returns its id.
async fn publish(stack: &Stack, services: &Services, traceparent: Option<&str>) -> String {
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/events", services.ingest))
        .bearer_auth(stack.publisher())
        .json(&json!({"type": "order.shipped", "data": example_data("order.shipped")}));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    body["data"]["id"].as_str().unwrap().to_owned()
}

fn one<'a>(
    spans: &'a [ExportedSpan],
    what: &str,
    f: impl Fn(&ExportedSpan) -> bool,
) -> &'a ExportedSpan {
    let found: Vec<&ExportedSpan> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

/// The trace and parent ids of a `traceparent` header.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_event_from_the_caller_through_a_retry_to_the_receiver() {
    let collector = Collector::start().await;
    let stack = Stack::builder().start().await;
    let services = start_services(&stack, &collector.endpoint()).await;
    let rx = Receiver::start().await;
    let webhook = subscribe(&stack, &services, &rx.url("/traced?token=s3cret")).await;
    rx.script([Reply::status(500)]);

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let event = publish(&stack, &services, Some(&format!("00-{trace}-{caller}-01"))).await;
    let seen = rx.wait_for(2, WAIT).await;
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(500), Some(200)]
    );
    // The receiver can continue the trace: both attempts carry it, each from its own span.
    let sent: Vec<(String, String)> = seen
        .iter()
        .map(|r| ids(r.header("traceparent").expect("no traceparent")))
        .collect();
    assert!(sent.iter().all(|(t, _)| t == trace), "{sent:?}");
    assert_ne!(sent[0].1, sent[1].1);
    let delivery = seen[0].header("waybill-delivery-id").unwrap().to_owned();

    let spans = collector
        .wait_until(WAIT, "the event's trace and the api's request", |spans| {
            let in_trace = |name: &str| {
                spans
                    .iter()
                    .filter(|s| s.trace_id == trace && s.name == name)
                    .count()
            };
            in_trace("waybill.fanout") == 1
                && in_trace("waybill.deliver") == 2
                && in_trace("POST") == 2
                && spans.iter().any(|s| s.name == "POST /v1/events")
                && spans.iter().any(|s| s.name == "POST /v1/webhooks")
                && spans.iter().any(|s| s.name == "waybill.sync")
        })
        .await;

    // The services were awaited on `/readyz` and the index read on `/metrics`, but probes and
    // scrapes make no trace.
    let operations: Vec<&str> = spans
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| {
            *n == "http"
                || ["/healthz", "/readyz", "/metrics", "/openapi.json"]
                    .iter()
                    .any(|p| n.ends_with(p))
        })
        .collect();
    assert!(operations.is_empty(), "{operations:?}");

    // ingest's request span, a child of the caller's.
    let ingest = one(&spans, "ingest's span", |s| s.name == "POST /v1/events");
    assert_eq!(
        (
            ingest.service.as_str(),
            ingest.kind,
            ingest.trace_id.as_str()
        ),
        ("waybill-ingest", "server", trace)
    );
    assert_eq!(ingest.parent_span_id.as_deref(), Some(caller));
    assert_eq!(ingest.text("http.route"), Some("/v1/events"));
    assert_eq!(ingest.text("http.request.method"), Some("POST"));
    assert_eq!(
        ingest.int("http.response.status_code"),
        Some(202),
        "{ingest:?}"
    );
    assert_eq!(ingest.text("waybill.tenant"), Some("acme"));
    assert_eq!(ingest.text("waybill.event_type"), Some("order.shipped"));
    assert_eq!(ingest.text("waybill.event_id"), Some(event.as_str()));

    // The fan-out, a consumer span whose parent came in the message's traceparent.
    let fanout = one(&spans, "the fan-out", |s| s.name == "waybill.fanout");
    assert_eq!(
        (
            fanout.service.as_str(),
            fanout.kind,
            fanout.trace_id.as_str()
        ),
        ("waybill-dispatcher", "consumer", trace)
    );
    assert_eq!(fanout.parent_span_id.as_ref(), Some(&ingest.span_id));
    assert_eq!(fanout.text("messaging.system"), Some("rabbitmq"));
    assert_eq!(
        fanout.text("messaging.destination.name"),
        Some(format!("{}.dispatch", stack.prefix).as_str())
    );
    assert_eq!(fanout.text("waybill.event_id"), Some(event.as_str()));
    assert_eq!(fanout.int("waybill.deliveries"), Some(1));

    // Attempt 1 under the fan-out, attempt 2 under attempt 1 (its retry message carried it).
    let attempt = |n: i64| {
        one(&spans, &format!("attempt {n}"), |s| {
            s.name == "waybill.deliver" && s.int("waybill.attempt") == Some(n)
        })
    };
    let (first, second) = (attempt(1), attempt(2));
    assert_eq!(first.parent_span_id.as_ref(), Some(&fanout.span_id));
    assert_eq!(second.parent_span_id.as_ref(), Some(&first.span_id));
    for (span, status, outcome) in [(first, 500, "retrying"), (second, 200, "succeeded")] {
        assert_eq!(
            (span.service.as_str(), span.kind, span.trace_id.as_str()),
            ("waybill-dispatcher", "consumer", trace)
        );
        assert_eq!(span.text("waybill.tenant"), Some("acme"));
        assert_eq!(span.text("waybill.event_type"), Some("order.shipped"));
        assert_eq!(span.text("waybill.event_id"), Some(event.as_str()));
        assert_eq!(span.text("waybill.subscription_id"), Some(webhook.as_str()));
        assert_eq!(span.text("waybill.delivery_id"), Some(delivery.as_str()));
        assert_eq!(span.int("http.response.status_code"), Some(status));
        assert_eq!(span.text("waybill.outcome"), Some(outcome));
    }
    assert!(first.error && !second.error);

    // Each attempt's request is its client span, whose context the receiver got.
    for (i, parent) in [first, second].into_iter().enumerate() {
        let client = one(&spans, "a client span", |s| {
            s.kind == "client" && s.parent_span_id.as_ref() == Some(&parent.span_id)
        });
        assert_eq!(client.name, "POST");
        assert_eq!(client.trace_id, trace);
        assert_eq!(
            client.span_id, sent[i].1,
            "the receiver got the client span's context"
        );
        assert_eq!(client.text("http.request.method"), Some("POST"));
        // No query string: receivers' URLs can carry secrets there.
        assert_eq!(client.text("url.full"), Some(rx.url("/traced").as_str()));
        assert_eq!(client.text("server.address"), Some("127.0.0.1"));
        assert_eq!(client.int("http.response.status_code"), Some([500, 200][i]));
    }

    // The api's request span for the subscription, and the change feed it set off: the relay's
    // batch span in the api, continued by the dispatcher's index sync.
    let create = one(&spans, "the api's request", |s| {
        s.name == "POST /v1/webhooks"
    });
    assert_eq!(
        (create.service.as_str(), create.kind),
        ("waybill-api", "server")
    );
    assert_eq!(create.text("http.route"), Some("/v1/webhooks"));
    assert_eq!(create.int("http.response.status_code"), Some(201));
    let sync = spans.iter().find(|s| s.name == "waybill.sync").unwrap();
    let relay = one(&spans, "the relay batch", |s| {
        s.name == "waybill.relay" && Some(&s.span_id) == sync.parent_span_id.as_ref()
    });
    assert_eq!(
        (relay.service.as_str(), relay.kind),
        ("waybill-api", "producer")
    );
    assert_eq!(sync.service, "waybill-dispatcher");

    // Ingest's log line of the request carries the ids of its span.
    let logged = waybill_testkit::eventually(WAIT, || async {
        std::fs::read_to_string(&services.ingest_log.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "request" && l["route"] == "/v1/events")
    })
    .await
    .expect("no request line in ingest's log");
    assert_eq!(logged["trace_id"], trace);
    assert_eq!(logged["span_id"], ingest.span_id.as_str());

    // An event an upstream service publishes over AMQP continues that publisher's trace.
    let upstream_trace = "0af7651916cd43dd8448eb211c80319c";
    let upstream_span = "b7ad6b7169203331";
    let now = chrono::Utc::now();
    let direct = waybill_domain::event::EventEnvelope {
        id: "ev-amqp-traced".into(),
        tenant: waybill_domain::TenantId::parse("acme").unwrap(),
        kind: waybill_domain::EventTypeName::parse("order.shipped").unwrap(),
        client_id: None,
        occurred_at: now,
        received_at: now,
        data: example_data("order.shipped"),
    };
    let exchange = stack.settings.topology().unwrap().events_exchange();
    stack
        .broker
        .publish(&Outgoing {
            exchange: &exchange,
            routing_key: "order.shipped",
            body: &serde_json::to_vec(&direct).unwrap(),
            message_id: Some("ev-amqp-traced"),
            headers: vec![
                ("waybill-tenant", "acme".to_owned()),
                (
                    "traceparent",
                    format!("00-{upstream_trace}-{upstream_span}-01"),
                ),
            ],
            mandatory: true,
        })
        .await
        .unwrap();
    let seen = rx.wait_for(3, WAIT).await;
    let (t, _) = ids(seen[2].header("traceparent").unwrap());
    assert_eq!(t, upstream_trace);
    let spans = collector
        .wait_until(WAIT, "the AMQP event's fan-out", |spans| {
            spans
                .iter()
                .any(|s| s.name == "waybill.fanout" && s.trace_id == upstream_trace)
        })
        .await;
    let fanout = one(&spans, "the AMQP event's fan-out", |s| {
        s.name == "waybill.fanout" && s.trace_id == upstream_trace
    });
    assert_eq!(fanout.parent_span_id.as_deref(), Some(upstream_span));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_and_delivered_while_the_collector_is_down() {
    // Nothing listens there: every export fails.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let stack = Stack::builder().start().await;
    let services = start_services(&stack, &closed).await;
    let rx = Receiver::start().await;
    subscribe(&stack, &services, &rx.url("/down")).await;
    rx.script([Reply::status(500)]);
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(
            publish(
                &stack,
                &services,
                Some(&format!("00-{trace}-00f067aa0ba902b7-01")),
            )
            .await,
        );
    }
    // Three deliveries, one of them retried once.
    let seen = rx.wait_for(4, WAIT).await;
    let delivered: std::collections::BTreeSet<&str> = seen
        .iter()
        .filter(|r| r.status == Some(200))
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    let published: std::collections::BTreeSet<&str> = events.iter().map(String::as_str).collect();
    assert_eq!(delivered, published);
    // The trace context still reaches the receiver.
    assert!(
        seen.iter()
            .all(|r| r.header("traceparent").is_some_and(|tp| ids(tp).0 == trace))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_still_queued_are_exported_on_sigterm() {
    let collector = Collector::start().await;
    let stack = Stack::builder().start().await;
    let port = free_port();
    let mut child = Process(
        stack
            .command(DISPATCHER, port)
            .arg("serve")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            // Nothing is exported on schedule during the test: only the flush at the stop.
            .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
            .env_remove("OTEL_SDK_DISABLED")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    stack.wait_ready(port).await;
    let trace = "6bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        // Not a probe (probes make no trace): a path the dispatcher does not serve.
        .get(format!("http://127.0.0.1:{port}/v1/nothing"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(collector.spans().is_empty());
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exited = waybill_testkit::eventually(WAIT, || {
        let status = child.0.try_wait().unwrap();
        async move { status }
    })
    .await
    .expect("no exit after SIGTERM");
    assert!(exited.success(), "{exited:?}");
    let spans = collector
        .wait_until(WAIT, "the request's span", |spans| {
            spans.iter().any(|s| s.trace_id == trace)
        })
        .await;
    let request = one(&spans, "the request's span", |s| s.trace_id == trace);
    assert_eq!(request.name, "GET unmatched");
    assert_eq!(request.service, "waybill-dispatcher");
}

#[test]
fn an_unsupported_protocol_or_sampler_refuses_to_start() {
    for (var, value, says) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc",
            "OTEL_EXPORTER_OTLP_PROTOCOL=`grpc` is not supported; supported: http/protobuf",
        ),
        (
            "OTEL_TRACES_SAMPLER",
            "sometimes",
            "use always_on, always_off, traceidratio, parentbased_always_on",
        ),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            "2",
            "is not a ratio between 0 and 1",
        ),
    ] {
        let out = waybill_testkit::service::command(DISPATCHER)
            .arg("serve")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OTEL_TRACES_SAMPLER", "traceidratio")
            .env_remove("OTEL_SDK_DISABLED")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{var}={value}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_traces_off_the_publishers_traceparent_reaches_the_receiver_unchanged() {
    // In process: this process exports nothing, so no span of the pipeline exists.
    let stack = crate::helpers::Stack::start().await;
    let (rx, _) = stack.receiver_for(json!(["order.shipped"])).await;
    rx.script([Reply::status(500)]);
    let tp = "00-7bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let exchange = stack.settings.topology().unwrap().events_exchange();
    let newline = format!("{tp}\n");
    let later = format!("01{}-\u{1}more", &tp[2..]);
    // A malformed one (a direct publisher may put anything there) is dropped, never sent on
    // where it would make the request to the receiver invalid.
    let cases = [
        ("ev-with-context", Some(tp), Some(tp), 2),
        ("ev-without", None, None, 3),
        ("ev-bad-context", Some("not a context\u{1}\n"), None, 4),
        // Well formed around the edges: passed on as the version-00 value it reads as.
        ("ev-trailing-newline", Some(&newline), Some(tp), 5),
        ("ev-later-version", Some(&later), Some(tp), 6),
    ];
    for (id, traceparent, expected, n) in cases {
        let now = chrono::Utc::now();
        let event = waybill_domain::event::EventEnvelope {
            id: id.into(),
            tenant: waybill_domain::TenantId::parse("acme").unwrap(),
            kind: waybill_domain::EventTypeName::parse("order.shipped").unwrap(),
            client_id: None,
            occurred_at: now,
            received_at: now,
            data: example_data("order.shipped"),
        };
        let mut headers = vec![("waybill-tenant", "acme".to_owned())];
        if let Some(tp) = traceparent {
            headers.push(("traceparent", tp.to_owned()));
        }
        stack
            .broker
            .publish(&Outgoing {
                exchange: &exchange,
                routing_key: "order.shipped",
                body: &serde_json::to_vec(&event).unwrap(),
                message_id: Some(id),
                headers,
                mandatory: true,
            })
            .await
            .unwrap();
        // The first event's first attempt fails: its retry carries the context too. `n` is
        // the requests received so far.
        let seen = rx.wait_for(n, WAIT).await;
        let ours: Vec<_> = seen
            .iter()
            .filter(|r| r.header("webhook-id") == Some(id))
            .collect();
        assert!(!ours.is_empty(), "{id} was not delivered");
        for r in ours {
            assert_eq!(r.header("traceparent"), expected, "{id}");
        }
    }
    assert_eq!(
        rx.received()
            .iter()
            .filter(|r| r.header("webhook-id") == Some("ev-with-context"))
            .count(),
        2
    );
}
