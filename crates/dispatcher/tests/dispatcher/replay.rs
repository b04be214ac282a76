//! Replays a tenant asks for: one delivery, or every failed one of a window.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Receiver, Reply, Stack, verify_with_standardwebhooks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_uses_the_subscription_as_it_is_now_whatever_the_status() {
    let stack = Stack::start_with(|s| s.delivery.retry_schedule = vec![], 1).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(500)]);
    let id = stack.subscribe_at(&rx, "/old", json!(["stock.*"])).await;
    stack.wait_indexed(1).await;
    stack.publish("acme", "stock.updated", "r1", None).await;
    let failed = stack.wait_delivery(&id, "r1", "failed").await;
    let token = stack.token("acme");

    // Since then the subscription moved and its key was replaced outright.
    stack
        .patch_webhook(
            &id,
            json!({"url": rx.url("/new"), "headers": {"X-Moved": "yes"}}),
        )
        .await;
    stack
        .expect(
            Method::POST,
            &format!("/v1/webhooks/{id}/secret/rotate"),
            &token,
            Some(json!({"grace_period_seconds": 0})),
            200,
        )
        .await;
    let secret = stack.secret("acme", &id).await;
    // The changes reach the dispatcher through the feed within milliseconds; leave it a second.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let body = stack.retry(&failed.id, &token, 202).await;
    assert_eq!(body["data"]["status"], "pending");
    let done = stack.wait_delivery(&id, "r1", "succeeded").await;
    assert_eq!((done.attempts, done.last_status_code), (2, Some(200)));
    let at_new = rx.received_on("/new");
    assert_eq!(at_new.len(), 1);
    let r = &at_new[0];
    assert_eq!(r.header("waybill-attempt"), Some("2"));
    assert_eq!(r.header("webhook-id"), Some("r1"));
    assert_eq!(r.header("x-moved"), Some("yes"));
    assert_eq!(verify_with_standardwebhooks(&[(secret, r)]), [true]);

    // A succeeded delivery can be retried too: one more attempt.
    stack.retry(&failed.id, &token, 202).await;
    let again = crate::helpers::WAIT;
    let third = waybill_testkit::eventually(again, || async {
        stack
            .deliveries(&id)
            .await
            .into_iter()
            .find(|d| d.attempts == 3 && d.status == "succeeded")
    })
    .await;
    assert!(third.is_some());
    assert_eq!(stack.attempts(&failed.id).await.len(), 3);

    // Another tenant's delivery, or none, is a 404.
    stack.retry(&failed.id, &stack.token("globex"), 404).await;
    stack
        .expect(
            Method::POST,
            &format!("/v1/deliveries/{}/retry", uuid::Uuid::new_v4()),
            &token,
            None,
            404,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_retries_the_failed_deliveries_of_a_window_once() {
    let stack = Stack::start_with(|s| s.delivery.retry_schedule = vec![], 1).await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    rx.set_default(Reply::status(503));
    stack.publish("acme", "stock.updated", "old", None).await;
    stack.wait_delivery(&id, "old", "failed").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now();
    for e in ["w1", "w2", "w3"] {
        stack.publish("acme", "stock.updated", e, None).await;
        stack.wait_delivery(&id, e, "failed").await;
    }
    // One more failed delivery whose event record is gone: it cannot be replayed, and must not
    // keep the others from being recovered.
    stack.publish("acme", "stock.updated", "gone", None).await;
    stack.wait_delivery(&id, "gone", "failed").await;
    let mut conn = stack.sql().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("DELETE FROM events WHERE id = 'gone'"),
        &mut conn,
    )
    .await
    .unwrap();
    rx.set_default(Reply::status(200));
    let token = stack.token("acme");
    let path = format!("/v1/webhooks/{id}/recover");
    let window = json!({"since": since.to_rfc3339()});
    let body = stack
        .expect(Method::POST, &path, &token, Some(window.clone()), 202)
        .await;
    assert_eq!(body["data"]["queued"], 3);
    // Called again at once: the three are pending now, nothing more is queued.
    let (s, body) = stack
        .call(Method::POST, &path, &token, Some(window.clone()))
        .await;
    assert_eq!((s, body["data"]["queued"].as_i64()), (202, Some(0)));
    for e in ["w1", "w2", "w3"] {
        stack.wait_delivery(&id, e, "succeeded").await;
    }
    let old = stack.wait_delivery(&id, "old", "failed").await;
    assert_eq!(old.attempts, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.wait_delivery(&id, "gone", "failed").await;
    // Each of the three was sent once more, nothing else.
    assert_eq!(rx.count(), 5 + 3);

    for (body, field) in [
        (json!({}), "since"),
        (json!({"since": "yesterday"}), "since"),
        (
            json!({"since": since.to_rfc3339(), "until": since.to_rfc3339()}),
            "until",
        ),
        (json!({"since": since.to_rfc3339(), "limit": 5}), "limit"),
    ] {
        let (s, reply) = stack.call(Method::POST, &path, &token, Some(body)).await;
        assert_eq!(s, 422, "{reply}");
        assert!(reply["error"]["errors"][field].is_array(), "{reply}");
    }
    stack
        .expect(
            Method::POST,
            &path,
            &stack.token("globex"),
            Some(window),
            404,
        )
        .await;
}
