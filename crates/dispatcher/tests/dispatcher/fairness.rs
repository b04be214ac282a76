//! Fairness between tenants: one tenant's backlog at a slow receiver does not hold the others'
//! deliveries back.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Receiver, Reply, Stack, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_a_slow_receiver_and_a_backlog_does_not_starve_another() {
    let stack = Stack::start_with(
        |s| {
            s.delivery.concurrency = 8;
            s.delivery.tenant_reserve_percent = 50;
            s.delivery.fairness_max_hold = "1s".into();
        },
        1,
    )
    .await;
    let slow = Receiver::start().await;
    slow.set_default(Reply::delayed(200, Duration::from_secs(1)));
    let fast = Receiver::start().await;
    stack
        .subscribe(
            "acme",
            json!({"url": slow.url("/a"), "events": ["stock.*"]}),
        )
        .await;
    stack
        .subscribe(
            "globex",
            json!({"url": fast.url("/b"), "events": ["stock.*"]}),
        )
        .await;
    stack.wait_indexed(2).await;
    // Ten times the concurrency for acme, queued ahead of globex's few.
    let backlog = 80;
    for i in 0..backlog {
        stack
            .publish("acme", "stock.updated", &format!("a-{i}"), None)
            .await;
    }
    for i in 0..5 {
        stack
            .publish("globex", "stock.updated", &format!("b-{i}"), None)
            .await;
    }
    fast.wait_for(5, WAIT).await;
    let acme_so_far = slow.count();
    assert!(
        acme_so_far < backlog / 2,
        "globex waited for {acme_so_far} of acme's {backlog} deliveries"
    );
    // Held back, not dropped: acme's backlog arrives in full, each delivery once.
    let all = slow.wait_for(backlog, Duration::from_secs(60)).await;
    let mut ids: Vec<String> = all
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), backlog);
    assert!(stack.deliveries_counted(stack.dispatchers[0], "held").await > 0.0);
}
