//! Replicas and crashes: nothing owed is lost.

use std::{
    collections::HashMap,
    process::{Child, Command},
    time::Duration,
};

use serde_json::json;

use crate::helpers::{Receiver, Reply, Stack, WAIT};

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

/// Publishes each id twice back to back, as a publisher retrying after a lost 202 does.
async fn publish_twice(stack: &Stack, ids: &[String]) {
    let exchange = stack.settings.topology().unwrap().events_exchange();
    let now = chrono::Utc::now();
    let bodies: Vec<(String, Vec<u8>)> = ids
        .iter()
        .flat_map(|id| [id, id])
        .map(|id| {
            let event = waybill_domain::event::EventEnvelope {
                id: id.clone(),
                tenant: waybill_domain::TenantId::parse("acme").unwrap(),
                kind: waybill_domain::EventTypeName::parse("stock.updated").unwrap(),
                client_id: None,
                occurred_at: now,
                received_at: now,
                data: crate::helpers::example("stock.updated"),
            };
            (id.clone(), serde_json::to_vec(&event).unwrap())
        })
        .collect();
    let outgoing: Vec<waybill_bus::Outgoing<'_>> = bodies
        .iter()
        .map(|(id, body)| waybill_bus::Outgoing {
            exchange: &exchange,
            routing_key: "stock.updated",
            body,
            message_id: Some(id),
            headers: vec![],
            mandatory: true,
        })
        .collect();
    stack.broker.publish_many(&outgoing).await.unwrap();
}

/// Events every dispatcher of `stack` counted with `outcome`, summed.
async fn events_on_all(stack: &Stack, outcome: &str) -> f64 {
    let labels = format!("outcome=\"{outcome}\"");
    let mut sum = 0.0;
    for port in &stack.dispatchers {
        sum += stack
            .metric(*port, "waybill_dispatcher_events_total", &labels)
            .await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_taking_copies_of_one_event_fan_it_out_once() {
    let stack = Stack::start_with(|_| {}, 2).await;
    let rx = Receiver::start().await;
    stack.subscribe_at(&rx, "/a", json!(["stock.*"])).await;
    stack.wait_indexed(1).await;
    let ids: Vec<String> = (0..100).map(|i| format!("twice-{i}")).collect();
    publish_twice(&stack, &ids).await;
    // Every copy handled: one fan-out per id in all, the other copy a duplicate.
    let settled = waybill_testkit::eventually(WAIT, || async {
        let (fanned, dup) = (
            events_on_all(&stack, "fanned_out").await,
            events_on_all(&stack, "duplicate").await,
        );
        (fanned + dup >= 200.0).then_some((fanned, dup))
    })
    .await;
    assert_eq!(settled, Some((100.0, 100.0)), "copies fanned out twice");
    rx.wait_for(100, WAIT).await;
    let seen = by_event(&rx);
    assert_eq!(seen.len(), 100);
    assert!(
        seen.values().all(|c| *c == 1),
        "a receiver got an event twice: {seen:?}"
    );
    // Both replicas took copies: the claim, not chance, kept the second fan-out away.
    for port in &stack.dispatchers {
        let took = stack
            .metric(
                *port,
                "waybill_dispatcher_events_total",
                "outcome=\"duplicate\"",
            )
            .await
            + stack
                .metric(
                    *port,
                    "waybill_dispatcher_events_total",
                    "outcome=\"fanned_out\"",
                )
                .await;
        assert!(took > 0.0, "replica {port} took no copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_claimed_by_a_replica_that_died_is_taken_over_when_its_claim_expires() {
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    // A replica took the event, claimed it for an hour and died before fanning it out.
    let mut conn = stack.sql().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "INSERT INTO events (tenant, id, event_type, occurred_at, received_at, data, \
               claimed_by, claimed_until) \
             VALUES ('acme', 'orphan', 'stock.updated', now(), now(), '{}', 'gone', \
               now() + interval '1 hour')",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    stack.publish("acme", "stock.updated", "orphan", None).await;
    stack.deliver(&id, "stock.updated", "after").await;
    // The later event went through while the claimed one waited.
    let got: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(got, ["after"]);
    // The claim runs out.
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE events SET claimed_until = now() WHERE tenant = 'acme' AND id = 'orphan'",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    stack.wait_delivery(&id, "orphan", "succeeded").await;
    assert_eq!(by_event(&rx).get("orphan"), Some(&1));
    #[derive(diesel::QueryableByName)]
    struct Owner {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        claimed_by: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        claims: i32,
    }
    let owner: Owner = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT claimed_by, claims FROM events WHERE tenant = 'acme' AND id = 'orphan'",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    assert_ne!(owner.claimed_by.as_deref(), Some("gone"));
    assert_eq!(owner.claims, 2, "taken over as an unfinished fan-out");
}
