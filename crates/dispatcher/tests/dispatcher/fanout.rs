//! Fan-out: which subscriptions get an event, once, and what is refused.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Receiver, Stack, WAIT, example};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_reaches_exactly_the_matching_subscriptions() {
    let stack = Stack::start().await;
    let rx = Receiver::start().await;
    let sub =
        |path: &str, events: serde_json::Value| json!({"url": rx.url(path), "events": events});
    stack
        .subscribe("acme", sub("/exact", json!(["order.shipped"])))
        .await;
    stack
        .subscribe("acme", sub("/group", json!(["order.*"])))
        .await;
    stack.subscribe("acme", sub("/all", json!(["*"]))).await;
    stack
        .subscribe(
            "acme",
            json!({"url": rx.url("/client-c1"), "events": ["order.shipped"], "client_ids": ["c1"]}),
        )
        .await;
    stack
        .subscribe("acme", sub("/stock", json!(["stock.*"])))
        .await;
    stack
        .subscribe(
            "acme",
            json!({"url": rx.url("/paused"), "events": ["*"], "active": false}),
        )
        .await;
    stack
        .subscribe("globex", sub("/other-tenant", json!(["*"])))
        .await;
    stack.wait_indexed(7).await;

    stack
        .publish("acme", "order.shipped", "ev-1", Some("c1"))
        .await;
    stack
        .publish("acme", "order.shipped", "ev-2", Some("c2"))
        .await;
    stack.publish("acme", "order.cancelled", "ev-3", None).await;
    // 3 + 1 (ev-1), 3 (ev-2), 2 (ev-3)
    let got = rx.wait_for(9, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = if rx.count() > got.len() {
        rx.received()
    } else {
        got
    };
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|r| (r.path.clone(), r.header("webhook-id").unwrap().to_owned()))
        .collect();
    seen.sort();
    let expect: Vec<(String, String)> = [
        ("/all", "ev-1"),
        ("/all", "ev-2"),
        ("/all", "ev-3"),
        ("/client-c1", "ev-1"),
        ("/exact", "ev-1"),
        ("/exact", "ev-2"),
        ("/group", "ev-1"),
        ("/group", "ev-2"),
        ("/group", "ev-3"),
    ]
    .iter()
    .map(|(p, e)| (p.to_string(), e.to_string()))
    .collect();
    assert_eq!(seen, expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_event_id_is_fanned_out_once() {
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    stack.deliver(&id, "stock.updated", "dup-1").await;
    stack.publish("acme", "stock.updated", "dup-1", None).await;
    // Another tenant may use the same id.
    let other = stack
        .subscribe(
            "globex",
            json!({"url": rx.url("/b"), "events": ["stock.*"]}),
        )
        .await;
    stack.wait_indexed(2).await;
    stack
        .publish("globex", "stock.updated", "dup-1", None)
        .await;
    stack.publish("acme", "stock.updated", "after", None).await;
    stack.wait_delivery(&other, "dup-1", "succeeded").await;
    stack.wait_delivery(&id, "after", "succeeded").await;
    let to_acme: Vec<String> = rx
        .received_on("/a")
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(to_acme, ["dup-1", "after"]);
    assert_eq!(stack.events_counted("duplicate").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_repeated_ids_is_recorded_together_and_each_id_delivered_once() {
    // Published back to back, the events go through the fan-out's batched writes together;
    // a copy of an id still being fanned out waits for it and counts as a duplicate.
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    let exchange = stack.settings.topology().unwrap().events_exchange();
    let now = chrono::Utc::now();
    let bodies: Vec<(String, Vec<u8>)> = (0..120)
        .map(|i| {
            let event_id = format!("burst-{}", i % 40);
            let event = waybill_domain::event::EventEnvelope {
                id: event_id.clone(),
                tenant: waybill_domain::TenantId::parse("acme").unwrap(),
                kind: waybill_domain::EventTypeName::parse("stock.updated").unwrap(),
                client_id: None,
                occurred_at: now,
                received_at: now,
                data: example("stock.updated"),
            };
            (event_id, serde_json::to_vec(&event).unwrap())
        })
        .collect();
    let outgoing: Vec<waybill_bus::Outgoing<'_>> = bodies
        .iter()
        .map(|(event_id, body)| waybill_bus::Outgoing {
            exchange: &exchange,
            routing_key: "stock.updated",
            body,
            message_id: Some(event_id),
            headers: vec![],
            mandatory: true,
        })
        .collect();
    stack.broker.publish_many(&outgoing).await.unwrap();
    let seen = rx.wait_for(40, WAIT).await;
    assert_eq!(seen.len(), 40);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut ids: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "each id delivered");
    assert_eq!(rx.count(), 40, "and only once");
    for i in 0..40 {
        stack
            .wait_delivery(&id, &format!("burst-{i}"), "succeeded")
            .await;
    }
    assert_eq!(stack.deliveries(&id).await.len(), 40);
    assert_eq!(stack.events_counted("fanned_out").await, 40.0);
    assert_eq!(stack.events_counted("duplicate").await, 80.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_event_type_is_not_delivered() {
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["order.*"])).await;
    stack
        .expect(
            Method::PATCH,
            "/v1/events/order.cancelled",
            &stack.admin(),
            Some(json!({"active": false})),
            200,
        )
        .await;
    // The dispatcher re-reads the catalog every 2 s: wait for two re-reads.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    stack
        .publish("acme", "order.cancelled", "off-1", None)
        .await;
    stack.deliver(&id, "order.shipped", "on-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["on-1"]);
    assert_eq!(stack.events_counted("inactive_type").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_through_ingest_arrive() {
    let stack = Stack::start().await;
    let rx = Receiver::start().await;
    let id = stack.subscribe_at(&rx, "/a", json!(["shipment.*"])).await;
    stack.wait_indexed(1).await;
    let port = stack
        .run(waybill_ingest::Application::build, stack.settings.clone())
        .await;
    let base = format!("http://127.0.0.1:{port}");
    let token = stack.publisher();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .bearer_auth(token)
        .json(
            &json!({"type": "shipment.created", "id": "via-http", "client_id": "c9",
            "data": crate::helpers::example("shipment.created")}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    stack.wait_delivery(&id, "via-http", "succeeded").await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["id"], "via-http");
    assert_eq!(body["type"], "shipment.created");
    assert_eq!(body["client_id"], "c9");
    assert_eq!(
        serde_json::Value::Object(crate::helpers::example("shipment.created")),
        body["data"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_resync_repairs_a_change_the_feed_never_carried() {
    let stack = Stack::start_with(|s| s.delivery.resync_interval = "300ms".into(), 1).await;
    let rx = Receiver::start().await;
    let id = stack.subscribe_at(&rx, "/old", json!(["stock.*"])).await;
    stack.wait_indexed(1).await;
    // Changed behind the change feed's back (no outbox row): only a resync can see it.
    let mut conn = stack.sql().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE webhooks SET url = '{}', revision = revision + 1 WHERE id = '{id}'",
            rx.url("/new")
        )),
        &mut conn,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    stack
        .publish("acme", "stock.updated", "after-resync", None)
        .await;
    stack.wait_delivery(&id, "after-resync", "succeeded").await;
    assert_eq!(rx.received_on("/new").len(), 1);
    assert!(rx.received_on("/old").is_empty());
}
