//! Operations endpoints and the committed OpenAPI document. Regenerate the document with
//! `UPDATE_OPENAPI=1 cargo test -p waybill-dispatcher --test dispatcher openapi`.

use serde_json::json;

use crate::helpers::Stack;

#[test]
fn committed_openapi_document_matches_the_code() {
    let update = "make openapi";
    let doc = waybill_dispatcher::openapi::document();
    waybill_testkit::openapi::assert_committed("waybill-dispatcher.json", &doc, update);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_openapi_are_served() {
    let stack = Stack::start().await;
    let (_rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    stack.deliver(&id, "stock.updated", "ops-1").await;
    let base = format!("http://127.0.0.1:{}", stack.dispatchers[0]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| client.get(format!("{base}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready: serde_json::Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(
        ready["checks"],
        json!({"postgres": "ok", "broker": "ok", "subscription_index": "ok"})
    );
    let served = get("/openapi.json").await.unwrap().text().await.unwrap();
    assert_eq!(served, waybill_dispatcher::openapi::document());
    let port = stack.dispatchers[0];
    let metric = |name: &'static str, labels: &'static str| stack.metric(port, name, labels);
    assert_eq!(
        metric("waybill_dispatcher_events_total", "outcome=\"fanned_out\"").await,
        1.0
    );
    assert_eq!(
        metric(
            "waybill_dispatcher_deliveries_total",
            "outcome=\"succeeded\""
        )
        .await,
        1.0
    );
    assert_eq!(
        metric("waybill_dispatcher_attempt_duration_seconds_count", "").await,
        1.0
    );
    assert_eq!(
        metric("waybill_dispatcher_requests_in_flight", "").await,
        0.0
    );
    assert_eq!(
        metric("waybill_dispatcher_index_subscriptions", "").await,
        1.0
    );
    let missing = get("/v1/nothing").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

/// A finished test leaves nothing on the broker: its services are stopped before its queues are
/// deleted, so no consumer reconnects and declares them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stack_leaves_no_queue_on_the_broker() {
    let stack = Stack::start().await;
    let topology = stack.settings.topology().unwrap();
    let queues: Vec<String> = topology.queues().into_iter().map(|(q, _)| q).collect();
    drop(stack);
    // The consumers' reconnect backoff starts at 100 ms; a consumer left running would have
    // declared its queue again well within this.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let conn = lapin::Connection::connect(&waybill_testkit::broker_url(), Default::default())
        .await
        .unwrap();
    for queue in queues {
        let channel = conn.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await;
        assert!(found.is_err(), "{queue} is still on the broker");
    }
}
