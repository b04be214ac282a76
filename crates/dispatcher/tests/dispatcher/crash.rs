//! Replicas and crashes: nothing owed is lost.

use std::{
    collections::HashMap,
    process::{Child, Command},
    time::Duration,
};

use serde_json::json;

use crate::helpers::{Receiver, Reply, Stack};

/// How many requests carried each `webhook-id`.
fn by_event(rx: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in rx.received() {
        *seen
            .entry(r.header("webhook-id").unwrap().to_owned())
            .or_insert(0) += 1;
    }
    seen
}

/// Publishes probe events until one reaches all `subscriptions`: the process's index has them.
async fn wait_for_a_probe(stack: &Stack, rx: &Receiver, subscriptions: usize) -> Option<()> {
    let mut n = 0;
    waybill_testkit::eventually(Duration::from_secs(20), || {
        n += 1;
        let id = format!("probe-{n}");
        async move {
            stack.publish("acme", "order.created", &id, None).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            by_event(rx)
                .iter()
                .any(|(k, c)| k.starts_with("probe-") && *c == subscriptions)
                .then_some(())
        }
    })
    .await
}

/// Waits (at most 30 s) for a process to exit.
async fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    panic!("the dispatcher did not exit within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_load_and_lose_nothing() {
    let stack = Stack::start_with(|_| {}, 2).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::delayed(200, Duration::from_millis(5)));
    stack.subscribe_at(&rx, "/a", json!(["stock.*"])).await;
    stack.wait_indexed(1).await;
    let n = 300;
    stack.publish_numbered("stock.updated", "load", n).await;
    rx.wait_for(n, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = by_event(&rx);
    assert_eq!(seen.len(), n);
    assert!(seen.values().all(|c| *c == 1), "duplicates without a crash");
    for port in &stack.dispatchers {
        let done = stack.deliveries_counted(*port, "succeeded").await;
        assert!(done > 0.0, "replica {port} delivered nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_load_loses_no_delivery() {
    let stack = Stack::start_with(|_| {}, 0).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::delayed(200, Duration::from_millis(200)));
    let (mut child, _) = stack
        .start_process(&[("WAYBILL_DELIVERY__CONCURRENCY", "16")])
        .await;
    for path in ["/a", "/b"] {
        stack
            .subscribe("acme", json!({"url": rx.url(path), "events": ["order.*"]}))
            .await;
    }
    // The process's index is fed by the change feed.
    let ready = wait_for_a_probe(&stack, &rx, 2).await;
    assert!(ready.is_some());
    let n = 400;
    // Publish from another task, so the kill does not wait for the publishing to end.
    let publisher = {
        let broker = stack.broker.clone();
        let exchange = stack.settings.topology().unwrap().events_exchange();
        tokio::spawn(async move {
            for i in 0..n {
                let id = format!("k-{i}");
                let now = chrono::Utc::now();
                let event = waybill_domain::event::EventEnvelope {
                    id: id.clone(),
                    tenant: waybill_domain::TenantId::parse("acme").unwrap(),
                    kind: waybill_domain::EventTypeName::parse("order.created").unwrap(),
                    client_id: None,
                    occurred_at: now,
                    received_at: now,
                    data: crate::helpers::example("order.created"),
                };
                let body = serde_json::to_vec(&event).unwrap();
                broker
                    .publish(&waybill_bus::Outgoing {
                        exchange: &exchange,
                        routing_key: "order.created",
                        body: &body,
                        message_id: Some(&id),
                        headers: vec![],
                        mandatory: true,
                    })
                    .await
                    .unwrap();
            }
        })
    };
    // Kill it while deliveries are in flight.
    rx.wait_for(150, Duration::from_secs(30)).await;
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    exit_of(&mut child).await;
    let at_kill = rx.count();
    assert!(at_kill < 2 * n, "the load finished before the kill");
    publisher.await.unwrap();
    let (mut again, _) = stack.start_process(&[]).await;
    let all = waybill_testkit::eventually(Duration::from_secs(60), || async {
        let seen = by_event(&rx);
        ((0..n).all(|i| seen.get(&format!("k-{i}")).copied().unwrap_or(0) >= 2)).then_some(seen)
    })
    .await;
    let _ = again.kill();
    let _ = again.wait();
    let seen = all.expect("some owed deliveries never arrived");
    // Two subscriptions: each event is owed twice; duplicates only around the crash.
    let extra: usize = seen.values().map(|c| c.saturating_sub(2)).sum();
    // At most what the killed process held unacked: 16 deliveries, and the deliveries of the
    // events it was fanning out (32 at once, two subscriptions each).
    assert!(extra <= 16 + 2 * 32, "{extra} duplicates");
    for path in ["/a", "/b"] {
        let ids: std::collections::HashSet<String> = rx
            .received_on(path)
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_owned())
            .filter(|id| id.starts_with("k-"))
            .collect();
        assert_eq!(ids.len(), n, "{path} is missing events");
    }
    eprintln!(
        "kill test: {at_kill} requests before the kill, {} in all, {extra} duplicates",
        rx.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_exits_cleanly() {
    let stack = Stack::start_with(|_| {}, 0).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::delayed(200, Duration::from_millis(300)));
    let (mut child, _) = stack.start_process(&[]).await;
    stack.subscribe_at(&rx, "/a", json!(["order.*"])).await;
    let ready = wait_for_a_probe(&stack, &rx, 1).await;
    assert!(ready.is_some());
    stack.publish_numbered("order.created", "t", 20).await;
    rx.wait_for(3, Duration::from_secs(10)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = exit_of(&mut child).await;
    assert!(status.success(), "exit: {status:?}");
    // Whatever it did not finish was handed back, and a new replica delivers it.
    let (mut again, _) = stack.start_process(&[]).await;
    let all = waybill_testkit::eventually(Duration::from_secs(30), || async {
        let seen = by_event(&rx);
        (0..20)
            .all(|i| seen.contains_key(&format!("t-{i}")))
            .then_some(())
    })
    .await;
    let _ = again.kill();
    let _ = again.wait();
    assert!(all.is_some(), "deliveries lost across a graceful stop");
}
