//! The metrics an operator alerts on: end-to-end lag, deliveries per tenant with a bounded
//! label, open circuits, and readiness, read from the services' `/metrics` as Prometheus would.

use std::time::Duration;

use serde_json::json;
use waybill_domain::event::EventEnvelope;
use waybill_runtime::Settings;
use waybill_testkit::{Proxy, eventually};

use crate::helpers::{Receiver, Reply, Stack, WAIT, example};

/// Publishes an event of `acme` over AMQP that its publisher says was accepted `ago` ago.
async fn publish_accepted_ago(stack: &Stack, kind: &str, id: &str, ago: Duration) {
    let accepted = chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap();
    let event = EventEnvelope {
        id: id.into(),
        tenant: waybill_domain::TenantId::parse("acme").unwrap(),
        kind: waybill_domain::EventTypeName::parse(kind).unwrap(),
        client_id: None,
        occurred_at: accepted,
        received_at: accepted,
        data: example(kind),
    };
    stack
        .publish_raw(kind, id, &serde_json::to_vec(&event).unwrap())
        .await;
}

/// The port of a service's base URL (`http://127.0.0.1:<port>`).
fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_runs_from_the_events_acceptance_to_its_settled_delivery() {
    let stack = Stack::start().await;
    let port = stack.dispatchers[0];
    // Lines such as `waybill_delivery_lag_seconds_bucket{outcome="succeeded",service=...,le="60"}`.
    let lag = |series: &'static str, labels: &'static str| stack.metric(port, series, labels);
    let count = "waybill_delivery_lag_seconds_count{outcome=\"succeeded\"";
    let bucket = "waybill_delivery_lag_seconds_bucket{outcome=\"succeeded\"";
    let (_rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    stack.deliver(&id, "stock.updated", "lag-1").await;
    let counted = eventually(WAIT, || async {
        (lag(count, "").await == 1.0).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the delivered event is counted once");
    // Delivered at once: well under a minute.
    assert_eq!(
        lag(bucket, "le=\"60\"").await,
        1.0,
        "a fresh event's lag is under a minute"
    );

    // An event accepted 90 s before it reached the broker: the lag counts from its acceptance,
    // not from when it was queued.
    publish_accepted_ago(&stack, "stock.updated", "lag-2", Duration::from_secs(90)).await;
    stack.wait_delivery(&id, "lag-2", "succeeded").await;
    let counted = eventually(WAIT, || async {
        (lag(count, "").await == 2.0).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the second delivery is counted");
    assert_eq!(lag(bucket, "le=\"60\"").await, 1.0);
    assert_eq!(lag(bucket, "le=\"120\"").await, 2.0);
    assert!(lag("waybill_delivery_lag_seconds_sum{outcome=\"succeeded\"", "").await >= 90.0);
    assert_eq!(
        lag("waybill_delivery_lag_seconds_count{outcome=\"failed\"", "").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_attempts_are_used_up_counts_as_failed_lag() {
    // 4 attempts, below the breaker's threshold of 5: every one goes out.
    let stack = Stack::start().await;
    let port = stack.dispatchers[0];
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    rx.set_default(Reply::status(500));
    stack.publish("acme", "stock.updated", "lag-f", None).await;
    stack.wait_delivery(&id, "lag-f", "failed").await;
    let counted = eventually(WAIT, || async {
        let failed = stack
            .metric(
                port,
                "waybill_delivery_lag_seconds_count",
                "outcome=\"failed\"",
            )
            .await;
        (failed == 1.0).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the failed delivery is counted once");
    assert_eq!(rx.count(), 4);
    // Retries are not settled deliveries.
    assert_eq!(
        stack
            .metric(
                port,
                "waybill_delivery_lag_seconds_count",
                "outcome=\"succeeded\""
            )
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_tenant_label_limit_deliveries_count_under_other() {
    let stack = Stack::start_with(|s: &mut Settings| s.metrics.tenant_label_limit = 2, 1).await;
    let port = stack.dispatchers[0];
    let rx = Receiver::start().await;
    let tenants = ["acme", "globex", "initech", "umbrella"];
    let mut ids = Vec::new();
    for tenant in tenants {
        let id = stack
            .subscribe(
                tenant,
                json!({"url": rx.url(&format!("/{tenant}")), "events": ["stock.*"]}),
            )
            .await;
        ids.push(id);
    }
    stack.wait_indexed(tenants.len()).await;
    // One at a time, so the first two tenants seen are the first two here.
    for (tenant, id) in tenants.iter().zip(&ids) {
        stack
            .publish(tenant, "stock.updated", &format!("{tenant}-1"), None)
            .await;
        stack
            .wait_delivery(id, &format!("{tenant}-1"), "succeeded")
            .await;
    }
    let on = &stack;
    let counted = move |tenant: &str| {
        let labels = format!("tenant=\"{tenant}\"");
        async move {
            on.metric(port, "waybill_dispatcher_tenant_deliveries_total", &labels)
                .await
        }
    };
    let all = eventually(WAIT, || async {
        (counted("~other").await == 2.0).then_some(())
    })
    .await;
    assert!(all.is_some(), "the third and fourth tenant count as ~other");
    assert_eq!(counted("acme").await, 1.0);
    assert_eq!(counted("globex").await, 1.0);
    assert_eq!(counted("initech").await, 0.0);
    assert_eq!(counted("umbrella").await, 0.0);
    // A tenant that has its label keeps it.
    stack.publish("acme", "stock.updated", "acme-2", None).await;
    stack.wait_delivery(&ids[0], "acme-2", "succeeded").await;
    let again = eventually(WAIT, || async {
        (counted("acme").await == 2.0).then_some(())
    })
    .await;
    assert!(again.is_some(), "acme keeps its own label");
    // The counter by outcome alone counts every delivery.
    assert_eq!(stack.deliveries_counted(port, "succeeded").await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_circuit_gauge_follows_the_breaker() {
    // Opens after 3 failures; first cooldown 1 s.
    let stack = Stack::start_with(
        |s: &mut Settings| {
            s.breaker.failure_threshold = 3;
            s.breaker.cooldown = "1s".into();
            s.breaker.max_cooldown = "2s".into();
            s.delivery.retry_schedule = vec!["50ms".into(); 9];
        },
        1,
    )
    .await;
    let port = stack.dispatchers[0];
    let gauge = |name: &'static str| stack.metric(port, name, "");
    assert_eq!(gauge("waybill_circuits_open").await, 0.0);
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    rx.set_default(Reply::status(503));
    stack.publish_numbered("stock.updated", "cg", 3).await;
    // Read from Postgres every 5 s.
    let opened = eventually(Duration::from_secs(20), || async {
        (gauge("waybill_circuits_open").await == 1.0).then_some(())
    })
    .await;
    assert!(opened.is_some(), "the open circuit is on /metrics");
    assert_eq!(gauge("waybill_receivers_failing").await, 1.0);

    // The receiver recovers: a probe succeeds, the circuit closes, the gauge goes back to 0.
    rx.set_default(Reply::status(200));
    let closed = eventually(Duration::from_secs(40), || async {
        (gauge("waybill_circuits_open").await == 0.0
            && gauge("waybill_receivers_failing").await == 0.0)
            .then_some(())
    })
    .await;
    assert!(closed.is_some(), "the closed circuit is on /metrics");
    let done = eventually(Duration::from_secs(40), || async {
        let all = stack.deliveries(&id).await;
        all.iter()
            .all(|d| d.status == "succeeded")
            .then_some(all.len())
    })
    .await;
    assert_eq!(
        done,
        Some(3),
        "every delivery succeeded after the circuit closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_says_on_metrics_whether_it_is_ready() {
    let mut stack = Stack::start_with(|_| {}, 0).await;
    let ingest = stack
        .run(waybill_ingest::Application::build, stack.settings.clone())
        .await;
    stack.wait_ready(ingest).await;
    let api = port_of(stack.api.as_deref().unwrap());
    // A dispatcher whose database goes through a proxy the test can cut.
    let proxy = Proxy::to_database().await;
    let mut settings = stack.settings.clone();
    settings.database.url = proxy.through(&settings.database.url);
    let dispatcher = stack.spawn_dispatcher(settings).await;
    let ready = |port: u16| stack.metric(port, "waybill_ready", "");
    for port in [api, ingest, dispatcher] {
        let up = eventually(WAIT, || async { (ready(port).await == 1.0).then_some(()) }).await;
        assert!(up.is_some(), "service on {port} shows it is ready");
    }

    // Postgres goes away from the dispatcher alone: it says so without anyone asking /readyz.
    proxy.cut();
    let down = eventually(WAIT, || async {
        (ready(dispatcher).await == 0.0).then_some(())
    })
    .await;
    assert!(down.is_some(), "the dispatcher shows it is not ready");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let readyz = client
        .get(format!("http://127.0.0.1:{dispatcher}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    assert_eq!(ready(api).await, 1.0, "the others are unaffected");

    proxy.restore();
    let back = eventually(WAIT, || async {
        (ready(dispatcher).await == 1.0).then_some(())
    })
    .await;
    assert!(back.is_some(), "the dispatcher is ready again");
}
