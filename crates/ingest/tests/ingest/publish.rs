//! `POST /v1/events`: what is accepted reaches the dispatch queue exactly as documented; what
//! is not gets a precise error and is not published.

use serde_json::json;
use waybill_domain::Scope;

use crate::helpers::{TestIngest, example};

fn header(d: &lapin::message::Delivery, name: &str) -> Option<String> {
    match d.properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn an_accepted_event_is_on_the_dispatch_queue_with_its_envelope() {
    let app = TestIngest::spawn().await;
    let data = example("order.shipped");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = app
        .post_with(
            "/v1/events",
            &app.publisher(),
            &json!({"type": "order.shipped", "data": data, "client_id": "client-7", "id": "ord-1001:shipped", "occurred_at": "2026-01-10T10:30:00Z"}),
            |r| r.header("traceparent", tp),
        )
        .await;
    r.assert(202);
    let d = &r.body["data"];
    assert_eq!(
        (
            d["id"].as_str(),
            d["type"].as_str(),
            d["client_id"].as_str()
        ),
        (
            Some("ord-1001:shipped"),
            Some("order.shipped"),
            Some("client-7")
        )
    );
    assert_eq!(d["occurred_at"], "2026-01-10T10:30:00Z");
    assert!(d["received_at"].as_str().unwrap().ends_with('Z'));

    let m = app.next_message().await;
    assert_eq!(m.routing_key.as_str(), "order.shipped");
    assert_eq!(m.properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        m.properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .as_deref(),
        Some("ord-1001:shipped")
    );
    assert_eq!(header(&m, "traceparent").as_deref(), Some(tp));
    assert_eq!(header(&m, "waybill-tenant").as_deref(), Some("acme"));
    let envelope: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../proto-schemas/broker/event.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let violations: Vec<String> = validator
        .iter_errors(&envelope)
        .map(|e| e.to_string())
        .collect();
    assert!(
        violations.is_empty(),
        "violates proto-schemas/broker/event.schema.json: {violations:?}"
    );
    assert_eq!(envelope["tenant"], "acme");
    assert_eq!(envelope["data"], data);
    assert_eq!(envelope["received_at"], d["received_at"]);
    let parsed: waybill_domain::event::EventEnvelope =
        serde_json::from_value(envelope).expect("the documented envelope");
    assert_eq!(parsed.kind.as_str(), "order.shipped");

    // Without an id one is generated; occurred_at defaults to reception.
    let r = app
        .post(
            "/v1/events",
            &app.publisher(),
            &json!({"type": "stock.updated", "data": example("stock.updated")}),
        )
        .await;
    r.assert(202);
    assert!(!r.body["data"]["id"].as_str().unwrap().is_empty());
    assert_eq!(r.body["data"]["occurred_at"], r.body["data"]["received_at"]);
    assert!(r.body["data"]["client_id"].is_null());
}

#[tokio::test]
async fn schema_violations_are_listed_and_nothing_is_published() {
    let app = TestIngest::spawn().await;
    let t = app.publisher();
    let mut data = example("order.shipped");
    let obj = data.as_object_mut().unwrap();
    obj.remove("order_id");
    obj.insert("warehouse_id".into(), json!(42));
    let r = app
        .post(
            "/v1/events",
            &t,
            &json!({"type": "order.shipped", "data": data}),
        )
        .await;
    let msgs = r.errors_on("data");
    assert!(msgs.len() >= 2, "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("order_id")), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.starts_with("/warehouse_id")),
        "{msgs:?}"
    );

    app.post(
        "/v1/events",
        &t,
        &json!({"type": "order.teleported", "data": {}}),
    )
    .await
    .errors_on("type");
    app.post("/v1/events", &t, &json!({"data": {}}))
        .await
        .errors_on("type");
    app.post("/v1/events", &t, &json!({"type": "order.shipped"}))
        .await
        .errors_on("data");
    app.post(
        "/v1/events",
        &t,
        &json!({"type": "order.shipped", "data": example("order.shipped"), "tenant": "other"}),
    )
    .await
    .errors_on("tenant");
    app.post("/v1/events", &t, &json!({"type": "order.shipped", "data": example("order.shipped"), "id": "no spaces allowed"})).await.errors_on("id");
    app.post("/v1/events", &t, &json!({"type": "order.shipped", "data": example("order.shipped"), "client_id": "c".repeat(129)})).await.errors_on("client_id");
    app.post("/v1/events", &t, &json!({"type": "order.shipped", "data": example("order.shipped"), "occurred_at": "last tuesday"})).await.errors_on("occurred_at");
    app.post(
        "/v1/events",
        &t,
        &json!({"type": "order.shipped", "data": "not an object"}),
    )
    .await
    .assert(400);
    let big = json!({"type": "order.shipped", "data": {"blob": "x".repeat(256 * 1024)}});
    assert_eq!(app.post("/v1/events", &t, &big).await.status, 413);
    let r = app
        .post(
            "/v1/events",
            &app.token("acme", &[Scope::WebhooksWrite]),
            &json!({"type": "order.shipped", "data": example("order.shipped")}),
        )
        .await;
    r.assert(403);
    assert_eq!(app.queued().await, 0, "nothing invalid was published");
}

#[tokio::test]
async fn a_deactivated_type_is_refused_within_seconds() {
    let app = TestIngest::spawn().await;
    let t = app.publisher();
    let body = json!({"type": "stock.updated", "data": example("stock.updated")});
    app.post("/v1/events", &t, &body).await.assert(202);
    let mut conn = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(
        &app.settings.database.url,
    )
    .await
    .unwrap();
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE event_types SET active = false WHERE name = 'stock.updated'"),
        &mut conn,
    )
    .await
    .unwrap();
    let refused = waybill_testkit::eventually(std::time::Duration::from_secs(6), || async {
        let r = app.post("/v1/events", &t, &body).await;
        (r.status == 422).then_some(r)
    })
    .await
    .expect("refused within a few seconds");
    assert!(refused.errors_on("type")[0].contains("inactive"));
}

/// Ingest refuses every time the dispatcher would refuse: one that lands outside years 1 to
/// 9999 once in UTC is a 422 on `occurred_at` (single and batch), never a 202 for an event that
/// would not be delivered; the edges of the range are taken, in UTC and to the microsecond.
#[tokio::test]
async fn times_outside_years_1_to_9999_in_utc_are_refused_and_the_edges_taken() {
    let app = TestIngest::spawn().await;
    let t = app.publisher();
    let event = |occurred_at: &str| json!({"type": "order.shipped", "data": example("order.shipped"), "occurred_at": occurred_at});
    for raw in [
        "9999-12-31T23:30:00-01:00",
        "0000-06-01T00:00:00Z",
        "0001-01-01T00:59:59+01:00",
    ] {
        let msgs = app
            .post("/v1/events", &t, &event(raw))
            .await
            .errors_on("occurred_at");
        assert_eq!(msgs, ["must be within years 1 to 9999 (in UTC)"], "{raw}");
        let batch = json!({"events": [event("2026-01-10T10:30:00Z"), event(raw)]});
        let msgs = app
            .post("/v1/events/batch", &t, &batch)
            .await
            .errors_on("events[1].occurred_at");
        assert_eq!(msgs, ["must be within years 1 to 9999 (in UTC)"], "{raw}");
    }
    assert_eq!(app.queued().await, 0, "nothing refused was published");
    for (raw, kept) in [
        (
            "9999-12-31T22:30:00.9999999-01:00",
            "9999-12-31T23:30:00.999999Z",
        ),
        ("0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00Z"),
        ("2016-12-31T23:59:60.25Z", "2017-01-01T00:00:00.250Z"),
    ] {
        let r = app.post("/v1/events", &t, &event(raw)).await;
        r.assert(202);
        assert_eq!(r.body["data"]["occurred_at"], kept, "{raw}");
        let queued: serde_json::Value =
            serde_json::from_slice(&app.next_message().await.data).unwrap();
        assert_eq!(queued["occurred_at"], kept, "{raw}");
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_408_and_nothing_is_published() {
    use waybill_testkit::slow_client::{read_answer, start_request};
    let app = TestIngest::spawn_with(|s| s.http.body_read_timeout = "1s".into()).await;
    let t = app.publisher();
    for path in ["/v1/events", "/v1/events/batch"] {
        let mut stream = start_request(&app.addr, "POST", path, Some(&t)).await;
        let answer = read_answer(&mut stream).await;
        assert_eq!(answer.status, 408, "{path}: {answer:?}");
        assert_eq!(
            answer.body["error"]["code"], "request_timeout",
            "{answer:?}"
        );
    }
    assert_eq!(app.queued().await, 0);
    // The service goes on answering complete requests.
    let body = json!({"type": "order.shipped", "data": example("order.shipped")});
    app.post("/v1/events", &t, &body).await.assert(202);
}
