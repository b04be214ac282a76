//! The operator endpoints over refused events: who may call them, what a missing or cut record
//! answers, paging, deletion, and a re-drive that puts the message back on the events exchange
//! as it was published.

use serde_json::{Value, json};
use waybill_domain::{Scope, invalid_event::InvalidEvent};

use crate::helpers::TestApp;

const LIST: &str = "/v1/admin/invalid-events";

/// Stores a refused message as the dispatcher does; returns its record id.
async fn refused(
    app: &TestApp,
    routing_key: &str,
    message_id: &str,
    body: &[u8],
    reason: &str,
) -> String {
    let record = InvalidEvent::new(
        routing_key,
        Some(message_id),
        body,
        reason,
        chrono::Utc::now(),
    );
    let mut conn = app.sql().await;
    waybill_store::invalid_events::record(&mut conn, &record)
        .await
        .unwrap();
    record.id.to_string()
}

#[tokio::test]
async fn only_admin_tokens_see_or_touch_refused_events() {
    let app = TestApp::spawn().await;
    let id = refused(
        &app,
        "order.teleported",
        "t-1",
        b"{}",
        "there is no event type `order.teleported`",
    )
    .await;
    let tokens = [
        app.acme(),
        app.token("acme", &[Scope::EventsPublish]),
        app.token(
            "ops",
            &[
                Scope::WebhooksRead,
                Scope::WebhooksWrite,
                Scope::EventsPublish,
            ],
        ),
    ];
    for t in &tokens {
        app.get(LIST, t).await.assert(403);
        app.post(&format!("{LIST}/{id}/redrive"), t, json!({}))
            .await
            .assert(403);
        app.delete(&format!("{LIST}/{id}"), t).await.assert(403);
        // Whatever the path names: the scope is checked first.
        app.delete(&format!("{LIST}/not-a-uuid"), t)
            .await
            .assert(403);
    }
    let r = app.get(LIST, &app.admin()).await;
    r.assert(200);
    assert_eq!(r.body["count"], 1);
}

#[tokio::test]
async fn list_pages_newest_first_filters_by_reason_and_cuts_bodies() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    for i in 0..3 {
        refused(
            &app,
            "order.teleported",
            &format!("t-{i}"),
            b"{}",
            "there is no event type `order.teleported`",
        )
        .await;
    }
    let big = format!("{{\"blob\": \"{}\"}}", "é".repeat(20 * 1024));
    refused(
        &app,
        "stock.updated",
        "big",
        big.as_bytes(),
        "data: \"sku\" is a required property",
    )
    .await;
    let r = app.get(&format!("{LIST}?limit=2"), &admin).await;
    r.assert(200);
    assert_eq!(r.body["count"], 4);
    assert_eq!(r.body["next"], format!("{LIST}?limit=2&page=2"));
    assert!(r.body["previous"].is_null());
    let newest = &r.body["data"][0];
    assert_eq!(newest["message_id"], "big");
    let shown = newest["body"].as_str().unwrap();
    assert!(
        shown.len() <= 16 * 1024 && shown.len() > 16 * 1024 - 4,
        "{}",
        shown.len()
    );
    assert!(big.starts_with(shown));
    assert_eq!(newest["body_truncated"], true);
    assert_eq!(newest["body_bytes"], big.len());
    // Kept whole (the list only shows its start), so it can be re-driven.
    assert_eq!(newest["redrivable"], true);
    let r = app.get(&format!("{LIST}?limit=2&page=2"), &admin).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    assert!(r.body["next"].is_null());

    let r = app
        .get(&format!("{LIST}?reason=Required%20PROPERTY"), &admin)
        .await;
    assert_eq!(r.body["count"], 1);
    // Wildcards of SQL match only themselves.
    assert_eq!(
        app.get(&format!("{LIST}?reason=%25"), &admin).await.body["count"],
        0
    );
    assert_eq!(
        app.get(&format!("{LIST}?reason=_"), &admin).await.body["count"],
        0
    );
    for (query, field) in [
        ("?reason=", "reason"),
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?page=0", "page"),
        ("?tenant=acme", "tenant"),
    ] {
        app.get(&format!("{LIST}{query}"), &admin)
            .await
            .assert_invalid(field);
    }
}

#[tokio::test]
async fn redrive_publishes_the_message_again_and_removes_the_record() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    let topology = app.settings.topology().unwrap();
    let body = json!({"id": "t-1", "tenant": "acme", "type": "order.teleported", "client_id": null,
        "occurred_at": "2026-01-10T10:30:00Z", "received_at": "2026-01-10T10:30:00Z", "data": {}})
    .to_string();
    let id = refused(
        &app,
        "order.teleported",
        "t-1",
        body.as_bytes(),
        "there is no event type `order.teleported`",
    )
    .await;
    let r = app
        .post(&format!("{LIST}/{id}/redrive"), &admin, json!({}))
        .await;
    r.assert(202);
    assert_eq!(r.body["data"]["id"], id.as_str());
    assert_eq!(r.body["data"]["routing_key"], "order.teleported");
    let message = app.next_message(&topology.dispatch_queue()).await;
    assert_eq!(message.data, body.as_bytes());
    assert_eq!(message.routing_key.as_str(), "order.teleported");
    assert_eq!(
        message.properties.message_id().as_ref().map(|m| m.as_str()),
        Some("t-1")
    );
    assert_eq!(app.get(LIST, &admin).await.body["count"], 0);
    app.post(&format!("{LIST}/{id}/redrive"), &admin, json!({}))
        .await
        .assert(404);
}

#[tokio::test]
async fn unknown_ids_are_404_a_cut_body_cannot_be_redriven_and_delete_removes() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    let huge = vec![b'x'; waybill_domain::event::MAX_ENVELOPE_BYTES + 1];
    let cut = refused(
        &app,
        "stock.updated",
        "huge",
        &huge,
        "not an event envelope: expected value",
    )
    .await;
    let listed: Value = app.get(LIST, &admin).await.body["data"][0].clone();
    assert_eq!(
        (&listed["redrivable"], &listed["body_truncated"]),
        (&json!(false), &json!(true))
    );
    assert_eq!(listed["body_bytes"], huge.len());
    let r = app
        .post(&format!("{LIST}/{cut}/redrive"), &admin, json!({}))
        .await;
    r.assert(409);
    assert_eq!(r.body["error"]["code"], "conflict");
    // Nothing was published and the record stays.
    assert_eq!(app.get(LIST, &admin).await.body["count"], 1);

    let missing = uuid::Uuid::new_v4();
    for path in [
        format!("{LIST}/{missing}/redrive"),
        format!("{LIST}/not-a-uuid/redrive"),
    ] {
        let r = app.post(&path, &admin, json!({})).await;
        r.assert(404);
        assert_eq!(r.body["error"]["code"], "not_found");
    }
    app.delete(&format!("{LIST}/{missing}"), &admin)
        .await
        .assert(404);
    app.delete(&format!("{LIST}/not-a-uuid"), &admin)
        .await
        .assert(404);

    app.delete(&format!("{LIST}/{cut}"), &admin)
        .await
        .assert(204);
    app.delete(&format!("{LIST}/{cut}"), &admin)
        .await
        .assert(404);
    assert_eq!(app.get(LIST, &admin).await.body["count"], 0);
}
