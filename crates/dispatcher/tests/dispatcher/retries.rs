//! Failures, retries on the delay tiers, and the attempt log.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Receiver, Reply, Stack, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_every_attempt_then_the_delivery_fails() {
    // Schedule 50ms, 100ms, 200ms: four attempts.
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    rx.set_default(Reply::status(500).with_body("database is down"));
    stack.publish("acme", "stock.updated", "ev-f", None).await;
    let d = stack.wait_delivery(&id, "ev-f", "failed").await;
    let seen = rx.received();
    assert_eq!(seen.len(), 4);
    let numbers: Vec<&str> = seen
        .iter()
        .map(|r| r.header("waybill-attempt").unwrap())
        .collect();
    assert_eq!(numbers, ["1", "2", "3", "4"]);
    assert!(seen.iter().all(|r| r.header("webhook-id") == Some("ev-f")));
    assert!(
        seen.iter()
            .all(|r| r.header("waybill-delivery-id") == Some(d.id.as_str()))
    );
    // Each gap is at least its tier.
    for (i, min) in [50u64, 100, 200].iter().enumerate() {
        let gap = seen[i + 1].at - seen[i].at;
        assert!(gap >= Duration::from_millis(*min), "gap {i} was {gap:?}");
    }
    assert_eq!((d.attempts, d.last_status_code), (4, Some(500)));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
    let attempts = stack.attempts(&d.id).await;
    assert_eq!(
        attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(
        attempts.iter().all(|a| a.status_code == Some(500)
            && a.response_body.as_deref() == Some("database is down"))
    );
    // Parked on the dead queue.
    let dead = stack.settings.topology().unwrap().dead_queue();
    let parked = stack.drain(&dead).await;
    assert_eq!(parked.len(), 1);
    let msg: serde_json::Value = serde_json::from_slice(&parked[0].0).unwrap();
    assert_eq!(msg["delivery_id"], d.id.as_str());
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_succeeds_after_an_error_a_dropped_connection_and_a_timeout() {
    let stack = Stack::start_with(|s| s.delivery.timeout = "300ms".into(), 1).await;
    let rx = Receiver::start().await;
    rx.script([
        // A binary body: Postgres text cannot hold NUL, the excerpt must still be recorded.
        Reply::status(503).with_body("bin\0ary"),
        Reply::Drop,
        Reply::delayed(200, Duration::from_secs(2)),
        Reply::status(204),
    ]);
    let id = stack.subscribe_at(&rx, "/a", json!(["stock.*"])).await;
    stack.wait_indexed(1).await;
    let d = stack.deliver(&id, "stock.updated", "ev-s").await;
    assert_eq!(
        (d.attempts, d.last_status_code, d.last_error),
        (4, Some(204), None)
    );
    let a = stack.attempts(&d.id).await;
    assert_eq!(a.len(), 4);
    assert_eq!(a[0].status_code, Some(503));
    assert_eq!(a[0].response_body.as_deref(), Some("bin\u{fffd}ary"));
    assert_eq!((a[1].status_code, a[1].error.is_some()), (None, true));
    assert_eq!(a[2].status_code, None);
    assert!(
        a[2].error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        a[2].error
    );
    assert!(
        a[2].duration_ms >= 300 && a[2].duration_ms < 2_000,
        "{:?}",
        a[2]
    );
    assert_eq!(a[3].status_code, Some(204));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pushes_the_next_attempt_to_a_longer_tier() {
    let stack = Stack::start_with(
        |s| s.delivery.retry_schedule = vec!["50ms".into(), "50ms".into(), "1500ms".into()],
        1,
    )
    .await;
    let rx = Receiver::start().await;
    rx.script([
        Reply::status(429).with_header("Retry-After", "1"),
        Reply::status(500),
    ]);
    let id = stack.subscribe_at(&rx, "/a", json!(["stock.*"])).await;
    stack.wait_indexed(1).await;
    let d = stack.deliver(&id, "stock.updated", "ev-r").await;
    let seen = rx.received();
    assert_eq!(seen.len(), 3);
    // Retry-After: 1 s → the 1500 ms tier, not the scheduled 50 ms.
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(1_500));
    // Without Retry-After the schedule applies again.
    assert!(seen[2].at - seen[1].at < Duration::from_millis(1_500));
    assert_eq!(d.attempts, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_failures_and_not_followed() {
    let stack = Stack::start_with(|s| s.delivery.retry_schedule = vec![], 1).await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    rx.set_default(Reply::status(200));
    rx.script([Reply::status(302).with_header("Location", &rx.url("/moved"))]);
    stack.publish("acme", "stock.updated", "ev-3xx", None).await;
    let d = stack.wait_delivery(&id, "ev-3xx", "failed").await;
    assert_eq!((d.attempts, d.last_status_code), (1, Some(302)));
    assert!(d.error().contains("redirects are not followed"), "{d:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.received_on("/moved").is_empty());
    assert_eq!(rx.count(), 1);
    let _ = WAIT;
}
