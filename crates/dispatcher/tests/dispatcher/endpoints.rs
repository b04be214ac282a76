//! Receivers that misbehave: the per-subscription rate limit over two replicas, the circuit
//! breaker, and auto-disable with its `webhook.disabled` notice.

use std::{collections::HashMap, time::Duration};

use diesel::{QueryableByName, sql_query, sql_types};
use diesel_async::RunQueryDsl;
use reqwest::Method;
use serde_json::json;

use waybill_runtime::Settings;
use waybill_testkit::eventually;

use crate::helpers::{Receiver, Reply, Stack, WAIT};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Open {
    #[diesel(sql_type = sql_types::Bool)]
    open: bool,
}

/// Whether a subscription's circuit is open.
async fn circuit_open(stack: &Stack, webhook_id: &str) -> bool {
    let mut conn = stack.sql().await;
    let rows: Vec<Open> = sql_query(
        "SELECT open_until IS NOT NULL AS open FROM endpoint_health WHERE webhook_id = $1::uuid",
    )
    .bind::<sql_types::Text, _>(webhook_id)
    .load(&mut conn)
    .await
    .unwrap();
    rows.iter().any(|r| r.open)
}

/// A circuit breaker that opens after `threshold` failures and stays open from `cooldown`,
/// doubling up to `max_cooldown`.
fn breaker(s: &mut Settings, threshold: u32, cooldown: &str, max_cooldown: &str) {
    s.breaker.failure_threshold = threshold;
    s.breaker.cooldown = cooldown.into();
    s.breaker.max_cooldown = max_cooldown.into();
}

/// Rows of `endpoint_health` for a subscription (0: its circuit is closed and nothing failed).
async fn health_rows(stack: &Stack, webhook_id: &str) -> i64 {
    let mut conn = stack.sql().await;
    let c: Count =
        sql_query("SELECT count(*) AS n FROM endpoint_health WHERE webhook_id = $1::uuid")
            .bind::<sql_types::Text, _>(webhook_id)
            .get_result(&mut conn)
            .await
            .unwrap();
    c.n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_over_two_replicas_and_nothing_is_dropped() {
    let stack = Stack::start_with(|_| {}, 2).await;
    let rx = Receiver::start().await;
    let id = stack
        .subscribe(
            "acme",
            json!({"url": rx.url("/limited"), "events": ["stock.*"], "rate_limit": 5}),
        )
        .await;
    stack.wait_indexed(1).await;
    let total = 25;
    stack.publish_numbered("stock.updated", "rl", total).await;
    let seen = rx.wait_for(total, WAIT).await;
    assert_eq!(seen.len(), total, "every delivery arrives, none dropped");
    let mut at: Vec<_> = seen.iter().map(|r| r.at).collect();
    at.sort();
    // 5 per second, one slot every 200 ms: 7 requests span 1.2 s (0.9 s allows for the
    // receiver's and the scheduler's jitter; without the limit they take a few milliseconds).
    for w in at.windows(7) {
        let span = w[6] - w[0];
        assert!(
            span >= Duration::from_millis(900),
            "7 requests within {span:?}"
        );
    }
    let span = at[total - 1] - at[0];
    assert!(
        span >= Duration::from_millis(4_300),
        "25 requests at 5/s take about 4.8 s, took {span:?}"
    );
    // Both replicas delivered and both held messages back.
    for port in &stack.dispatchers {
        let sent = stack.deliveries_counted(*port, "succeeded").await;
        let held = stack.deliveries_counted(*port, "throttled").await;
        assert!(
            sent > 0.0 && held > 0.0,
            "replica {port}: sent {sent}, held {held}"
        );
    }
    // Waiting is not an attempt. The receiver sees a request before its record commits, so
    // wait for the last records.
    let rows = eventually(WAIT, || async {
        let rows = stack.deliveries(&id).await;
        rows.iter().all(|d| d.status != "pending").then_some(rows)
    })
    .await
    .expect("every delivery is settled");
    assert_eq!(rows.len(), total);
    assert!(
        rows.iter()
            .all(|d| d.status == "succeeded" && d.attempts == 1)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), total, "no duplicates");

    // The limit can be lifted.
    let body = stack.patch_webhook(&id, json!({"rate_limit": null})).await;
    assert!(body["data"]["rate_limit"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_sends_nothing_but_probes_and_a_good_probe_closes_it() {
    // Opens after 3 failures; first cooldown 1 s, then 2 s.
    let stack = Stack::start_with(
        |s| {
            breaker(s, 3, "1s", "2s");
            s.delivery.retry_schedule = vec!["50ms".into(); 9];
        },
        1,
    )
    .await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    rx.set_default(Reply::status(503));
    let events = 12;
    // 3 failed requests open the circuit.
    stack.publish_numbered("stock.updated", "cb", 3).await;
    let opened = eventually(WAIT, || async {
        circuit_open(&stack, &id).await.then_some(())
    })
    .await;
    assert!(opened.is_some(), "the circuit opened");
    // The rest, and the retries of the first 3, wait without a request.
    for i in 3..events {
        stack
            .publish("acme", "stock.updated", &format!("cb-{i}"), None)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // In 2.5 s: the 3 that opened it, the probe after 1 s, at most one more.
    let down = rx.count();
    assert!(
        (4..=5).contains(&down),
        "{down} requests while the circuit was open"
    );
    let port = stack.dispatchers[0];
    let deferred = stack.deliveries_counted(port, "deferred").await;
    assert!(deferred >= (events - 3) as f64, "deferred {deferred}");
    assert_eq!(health_rows(&stack, &id).await, 1);
    // A tenant's retry is not held back by the open circuit, and the copy of that delivery
    // waiting on a hold queue is not sent again when it comes back (checked at the end).
    let held = stack
        .deliveries(&id)
        .await
        .into_iter()
        .find(|d| d.event_id == "cb-7")
        .expect("cb-7 is recorded");
    assert_eq!(held.attempts, 0, "held back without an attempt");
    let before = rx.count();
    stack.retry(&held.id, &stack.token("acme"), 202).await;
    rx.wait_for(before + 1, WAIT).await;

    // The receiver recovers: the next probe closes the circuit and everything flows.
    rx.set_default(Reply::status(200));
    // Held deliveries come back from their hold queues (up to 10 s here) and flow.
    let count_done = || async {
        stack
            .deliveries(&id)
            .await
            .iter()
            .filter(|d| d.status == "succeeded")
            .count()
    };
    eventually(Duration::from_secs(40), || async {
        (count_done().await == events).then_some(())
    })
    .await;
    let done = count_done().await;
    assert_eq!(
        done, events,
        "every delivery succeeded after the circuit closed"
    );
    assert_eq!(health_rows(&stack, &id).await, 0, "the circuit is closed");
    // An attempt was counted only for a request really sent.
    let mut requests: HashMap<String, i32> = HashMap::new();
    for r in rx.received() {
        *requests
            .entry(r.header("waybill-delivery-id").unwrap().to_owned())
            .or_default() += 1;
    }
    for d in stack.deliveries(&id).await {
        assert_eq!(
            requests.get(&d.id).copied().unwrap_or(0),
            d.attempts,
            "delivery {} ({})",
            d.id,
            d.event_id
        );
        assert_eq!(stack.attempts(&d.id).await.len() as i32, d.attempts);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_a_circuit_is_open_sends_nothing_to_it() {
    let mut stack = Stack::start_with(|s| breaker(s, 3, "30s", "1m"), 1).await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    rx.set_default(Reply::status(503));
    stack.publish_numbered("stock.updated", "rs", 3).await;
    let opened = eventually(WAIT, || async {
        circuit_open(&stack, &id).await.then_some(())
    })
    .await;
    assert!(opened.is_some(), "the circuit opened");
    // The requests that opened it: three first attempts, and on a slow machine maybe a retry
    // that went out before the third failure was counted. Counted once none is in flight and
    // every one the receiver saw is recorded.
    let first = stack.dispatchers[0];
    let settled = eventually(WAIT, || async {
        let in_flight = stack
            .metric(first, "waybill_dispatcher_requests_in_flight", "")
            .await;
        let recorded: i32 = stack.deliveries(&id).await.iter().map(|d| d.attempts).sum();
        (in_flight == 0.0 && usize::try_from(recorded).ok() == Some(rx.count())).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "the requests that opened the circuit settled"
    );
    let before = rx.count();
    assert!(
        (3..=5).contains(&before),
        "{before} requests opened the circuit"
    );
    // A new replica (a restart, or a scale-up) reads the open circuit from Postgres before its
    // first delivery: the deliveries it takes wait without a request.
    let settings = stack.settings.clone();
    let newcomer = stack.spawn_dispatcher(settings).await;
    // Ready means its index is loaded; its consumers register a moment later, and until then
    // the first replica would take every delivery.
    let work = stack.settings.topology().unwrap().work_queues();
    let consuming = eventually(WAIT, || async {
        for queue in &work {
            if stack.queue_consumers(queue).await < 2 {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(consuming.is_some(), "the new replica consumes");
    for i in 3..13 {
        stack
            .publish("acme", "stock.updated", &format!("rs-{i}"), None)
            .await;
    }
    let held = eventually(WAIT, || async {
        (stack.deliveries_counted(newcomer, "deferred").await > 0.0).then_some(())
    })
    .await;
    assert!(held.is_some(), "the new replica held deliveries back");
    // A window in which any request would show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.count(),
        before,
        "nothing was sent once the circuit was open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_past_the_window_is_disabled_and_its_tenant_told() {
    let stack = Stack::start_with(
        |s| {
            breaker(s, 2, "300ms", "500ms");
            s.breaker.disable_after = "2s".into();
            s.delivery.retry_schedule = vec!["50ms".into(); 30];
        },
        1,
    )
    .await;
    let broken = Receiver::start().await;
    broken.set_default(Reply::status(500).with_body("down for maintenance"));
    let ops = Receiver::start().await;
    let other_tenant = Receiver::start().await;
    // The failing one takes every type, `webhook.disabled` included: it is not told about itself.
    let failing = stack.subscribe_at(&broken, "/x", json!(["*"])).await;
    let watcher = stack
        .subscribe_at(&ops, "/ops", json!(["webhook.disabled"]))
        .await;
    stack
        .subscribe(
            "globex",
            json!({"url": other_tenant.url("/g"), "events": ["webhook.disabled"]}),
        )
        .await;
    stack.wait_indexed(3).await;
    stack.publish_numbered("stock.updated", "ad", 3).await;
    let notices = ops.wait_for(1, WAIT).await;
    assert_eq!(notices.len(), 1, "the tenant's other subscription is told");
    let notice = notices[0].json();
    assert_eq!(notice["type"], "webhook.disabled");
    assert_eq!(notice["data"]["webhook_id"], failing.as_str());
    assert_eq!(notice["data"]["url"], broken.url("/x"));
    assert!(notice["data"]["consecutive_failures"].as_i64().unwrap() >= 2);
    assert_eq!(notice["data"]["last_status_code"], 500);
    let reason = notice["data"]["disabled_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("failed continuously"), "{reason}");

    // The notice is published just before the change commits, so it may arrive first.
    let token = stack.token("acme");
    let got = eventually(WAIT, || async {
        let (_, got) = stack
            .call(
                Method::GET,
                &format!("/v1/webhooks/{failing}"),
                &token,
                None,
            )
            .await;
        (got["data"]["active"] == false).then_some(got)
    })
    .await
    .expect("the subscription is disabled");
    assert_eq!(got["data"]["disabled_reason"], reason.as_str());
    // Its pending deliveries are cancelled; it gets no more requests.
    for i in 0..3 {
        let d = stack
            .wait_delivery(&failing, &format!("ad-{i}"), "failed")
            .await;
        assert!(d.last_error.is_some());
    }
    let calls = broken.count();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(broken.count(), calls);
    assert!(
        broken
            .received()
            .iter()
            .all(|r| r.json()["type"] == "stock.updated"),
        "the disabled subscription was not sent its own notice"
    );
    assert_eq!(other_tenant.count(), 0, "another tenant hears nothing");
    assert_eq!(ops.count(), 1, "told once");
    assert_eq!(
        stack.deliveries(&watcher).await[0].event_id,
        format!("webhook.disabled:{failing}:2")
    );

    // Turned back on by the tenant: the reason is cleared and deliveries flow again.
    broken.set_default(Reply::status(204));
    let body = stack.patch_webhook(&failing, json!({"active": true})).await;
    assert!(body["data"]["disabled_reason"].is_null());
    assert_eq!(health_rows(&stack, &failing).await, 0);
    stack
        .publish("acme", "stock.updated", "ad-back", None)
        .await;
    stack.wait_delivery(&failing, "ad-back", "succeeded").await;
}
