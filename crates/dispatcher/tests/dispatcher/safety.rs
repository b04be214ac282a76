//! Outbound safety, and subscriptions that must no longer receive anything.

use std::time::Duration;

use diesel::sql_query;
use diesel_async::RunQueryDsl;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Receiver, Reply, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_public_addresses_are_refused_after_resolution() {
    // The api accepts loopback receivers; this dispatcher's operator allows no private range.
    let mut stack = Stack::start_with(|_| {}, 0).await;
    let rx = Receiver::start().await;
    let literal = stack
        .subscribe_at(&rx, "/literal", json!(["stock.*"]))
        .await;
    let named = stack.subscribe_at(&rx, "/named", json!(["order.*"])).await;
    // A host name that resolves to loopback (the api refuses `localhost` itself, so the row is
    // changed behind its back; the dispatcher reads it from Postgres at start).
    let mut conn = stack.sql().await;
    sql_query(format!(
        "UPDATE webhooks SET url = 'http://localhost:{}/named', revision = revision + 1 WHERE id = '{named}'",
        rx.port()
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut strict = stack.settings.clone();
    strict.security.allowed_private_ranges = vec![];
    strict.delivery.retry_schedule = vec![];
    stack.spawn_dispatcher(strict).await;
    stack.wait_indexed(2).await;
    stack.publish("acme", "stock.updated", "ssrf-1", None).await;
    stack.publish("acme", "order.shipped", "ssrf-2", None).await;
    let a = stack.wait_delivery(&literal, "ssrf-1", "failed").await;
    let b = stack.wait_delivery(&named, "ssrf-2", "failed").await;
    assert!(
        a.error().contains("127.0.0.1 is not a public address"),
        "{a:?}"
    );
    assert!(
        b.error()
            .contains("localhost resolves only to non-public addresses"),
        "{b:?}"
    );
    // The tenant learns which host was refused, never which internal addresses it resolved to.
    let attempts = stack.attempts(&b.id).await;
    let told = attempts
        .iter()
        .filter_map(|a| a.error.as_deref())
        .chain([b.error()]);
    for text in told {
        assert!(
            !text.contains("127.0.0.1") && !text.contains("::1"),
            "{text}"
        );
    }
    assert_eq!(rx.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_refused_unless_allowed() {
    let mut stack = Stack::start_with(|_| {}, 0).await;
    let rx = Receiver::start().await;
    let id = stack.subscribe_at(&rx, "/a", json!(["stock.*"])).await;
    let mut strict = stack.settings.clone();
    strict.security.allow_http = false;
    strict.delivery.retry_schedule = vec![];
    stack.spawn_dispatcher(strict).await;
    stack.wait_indexed(1).await;
    stack.publish("acme", "stock.updated", "plain", None).await;
    let d = stack.wait_delivery(&id, "plain", "failed").await;
    assert!(d.error().contains("scheme `http` is not allowed"), "{d:?}");
    assert_eq!(rx.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_deactivated_subscriptions_receive_nothing_more() {
    let stack = Stack::start_with(
        // Long enough for the deletion and the PATCH to reach the index before the retries.
        |s| s.delivery.retry_schedule = vec!["2s".into(), "2s".into()],
        1,
    )
    .await;
    let rx = Receiver::start().await;
    let keep = stack.subscribe_at(&rx, "/keep", json!(["stock.*"])).await;
    let gone = stack.subscribe_at(&rx, "/gone", json!(["stock.*"])).await;
    let paused = stack.subscribe_at(&rx, "/paused", json!(["stock.*"])).await;
    stack.wait_indexed(3).await;
    // A first event fails at /gone and /paused, so a retry of each is waiting in a delay tier.
    rx.set_default(Reply::status(200));
    rx.script([Reply::status(500), Reply::status(500), Reply::status(500)]);
    stack.publish("acme", "stock.updated", "before", None).await;
    rx.wait_for(3, Duration::from_secs(10)).await;
    let token = stack.token("acme");
    stack
        .expect(
            Method::DELETE,
            &format!("/v1/webhooks/{gone}"),
            &token,
            None,
            204,
        )
        .await;
    stack.patch_webhook(&paused, json!({"active": false})).await;
    // Deletion leaves 2 in the index; the paused one stays indexed but inactive.
    stack.wait_indexed(2).await;
    stack.deliver(&keep, "stock.updated", "after").await;
    // The retries waiting for the two are cancelled, not sent.
    let g = stack.wait_delivery(&gone, "before", "failed").await;
    let p = stack.wait_delivery(&paused, "before", "failed").await;
    assert!(
        g.error()
            .starts_with("cancelled: the subscription was deleted"),
        "{g:?}"
    );
    assert!(
        p.error()
            .starts_with("cancelled: the subscription is inactive"),
        "{p:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_change: Vec<String> = rx.received()[3..].iter().map(|r| r.path.clone()).collect();
    assert!(
        after_change.iter().all(|p| p == "/keep"),
        "{after_change:?}"
    );
    for id in [&gone, &paused] {
        let rows = stack.deliveries(id).await;
        assert!(rows.iter().all(|d| d.event_id == "before"), "{rows:?}");
    }
}
