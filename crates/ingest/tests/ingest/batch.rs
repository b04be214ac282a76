//! `POST /v1/events/batch`: all validated first, all or nothing.

use serde_json::{Value, json};

use crate::helpers::{TestIngest, example};

fn ev(kind: &str, id: &str) -> Value {
    json!({"type": kind, "data": example(kind), "id": id})
}

#[tokio::test]
async fn a_valid_batch_is_published_whole() {
    let app = TestIngest::spawn().await;
    let events: Vec<Value> = (0..50)
        .map(|i| {
            ev(
                if i % 2 == 0 {
                    "order.shipped"
                } else {
                    "inbound.received"
                },
                &format!("b-{i}"),
            )
        })
        .collect();
    let r = app
        .post(
            "/v1/events/batch",
            &app.publisher(),
            &json!({"events": events}),
        )
        .await;
    r.assert(202);
    let ids = r.pluck("id");
    assert_eq!(ids.len(), 50);
    assert_eq!(ids[7], "b-7");
    assert_eq!(app.queued().await, 50);
}

#[tokio::test]
async fn one_invalid_event_publishes_nothing_and_errors_name_each_event() {
    let app = TestIngest::spawn().await;
    let t = app.publisher();
    let mut broken = ev("order.shipped", "x-1");
    broken["data"].as_object_mut().unwrap().remove("order_id");
    let r = app
        .post("/v1/events/batch", &t, &json!({"events": [ev("order.shipped", "x-0"), broken, {"type": "nope.nope", "data": {}}, 7, {"type": "order.shipped", "data": 5}, {"type": "order.shipped", "data": {}, "extra": 1}]}))
        .await;
    r.assert(422);
    let fields: Vec<&String> = r.body["error"]["errors"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    for f in [
        "events[1].data",
        "events[2].type",
        "events[3]",
        "events[4].data",
        "events[5].extra",
    ] {
        assert!(fields.iter().any(|x| *x == f), "{f} missing in {fields:?}");
    }
    assert!(!fields.iter().any(|x| x.starts_with("events[0]")));
    assert_eq!(app.queued().await, 0, "all or nothing");

    app.post("/v1/events/batch", &t, &json!({"events": []}))
        .await
        .errors_on("events");
    let many: Vec<Value> = (0..501)
        .map(|i| ev("order.shipped", &format!("m-{i}")))
        .collect();
    app.post("/v1/events/batch", &t, &json!({"events": many}))
        .await
        .errors_on("events");
    app.post("/v1/events/batch", &t, &json!({"evnts": []}))
        .await
        .errors_on("evnts");
    let huge = json!({"events": [ev("order.shipped", "ok"), {"type": "order.shipped", "data": {"blob": "x".repeat(256 * 1024)}}]});
    let r = app.post("/v1/events/batch", &t, &huge).await;
    r.assert_message(413, "events[1]");
    assert_eq!(app.queued().await, 0);
}
