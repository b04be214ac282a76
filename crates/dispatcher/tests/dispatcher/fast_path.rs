//! The delivery fast path: the fan-out stage makes first attempts itself, and a delivery that
//! succeeds at once is one row, written with its event's fan-out record.

use std::{collections::HashMap, time::Duration};

use diesel::{QueryableByName, sql_query, sql_types};
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::helpers::{Receiver, Reply, Stack, WAIT};

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = sql_types::Bool)]
    once: bool,
    #[diesel(sql_type = sql_types::Bool)]
    with_its_event: bool,
}

/// First attempts counted by `port`'s dispatcher on `path` (inline or queued).
async fn first_attempts(stack: &Stack, port: u16, path: &str) -> f64 {
    let labels = format!("path=\"{path}\"");
    stack
        .metric(port, "waybill_dispatcher_first_attempts_total", &labels)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_attempt_that_succeeds_is_one_row_written_with_its_events_fan_out() {
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    let delivery = stack.deliver(&id, "stock.updated", "ev-fast").await;
    assert_eq!(delivery.attempts, 1);
    assert_eq!(rx.count(), 1);
    assert_eq!(stack.attempts(&delivery.id).await.len(), 1);
    // Inserted once, final (never pending then updated), in the transaction that marked the
    // event fanned out.
    let mut conn = stack.sql().await;
    let written: Written = sql_query(
        "SELECT d.created_at = d.updated_at AS once, \
           d.xmin::text = e.xmin::text AS with_its_event \
         FROM deliveries d JOIN events e ON e.tenant = d.tenant AND e.id = d.event_id \
         WHERE d.id = $1::uuid",
    )
    .bind::<sql_types::Text, _>(&delivery.id)
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(
        written.once,
        "the delivery row was updated after its insert"
    );
    assert!(
        written.with_its_event,
        "the delivery was written apart from its event's fan-out record"
    );
    let port = stack.dispatchers[0];
    assert_eq!(first_attempts(&stack, port, "inline").await, 1.0);
    assert_eq!(first_attempts(&stack, port, "queued").await, 0.0);
    assert_eq!(stack.deliveries_counted(port, "succeeded").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_attempt_that_fails_goes_on_through_the_retry_queue() {
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    rx.script([Reply::status(503)]);
    let delivery = stack.deliver(&id, "stock.updated", "ev-retry").await;
    assert_eq!(delivery.attempts, 2);
    let numbers: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("waybill-attempt").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(numbers, ["1", "2"]);
    let attempts = stack.attempts(&delivery.id).await;
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.number, a.status_code))
            .collect::<Vec<_>>(),
        [(1, Some(503)), (2, Some(200))]
    );
    assert_eq!(
        first_attempts(&stack, stack.dispatchers[0], "inline").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_beyond_the_free_slots_go_through_the_deliveries_queue_and_arrive_once() {
    // 4 slots, one kept free by a lone tenant: 3 first attempts at a time in place.
    let stack = Stack::start_with(
        |s| {
            s.delivery.concurrency = 4;
            s.delivery.tenant_reserve_percent = 25;
            s.delivery.fairness_hold = "50ms".into();
            s.delivery.fairness_max_hold = "200ms".into();
        },
        1,
    )
    .await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::delayed(200, Duration::from_millis(300)));
    let subscriptions = 10;
    for i in 0..subscriptions {
        stack
            .subscribe_at(&rx, &format!("/s{i}"), json!(["stock.*"]))
            .await;
    }
    stack.wait_indexed(subscriptions).await;
    stack
        .publish("acme", "stock.updated", "ev-wide", None)
        .await;
    rx.wait_for(subscriptions, WAIT).await;
    // Nothing more comes: each subscription got the event once.
    let settled = waybill_testkit::eventually(WAIT, || async {
        let port = stack.dispatchers[0];
        let inline = first_attempts(&stack, port, "inline").await;
        let queued = first_attempts(&stack, port, "queued").await;
        (inline + queued == subscriptions as f64).then_some((inline, queued))
    })
    .await;
    let (inline, queued) = settled.expect("the fan-out was never recorded");
    assert!((1.0..=3.0).contains(&inline), "{inline} attempted in place");
    assert!(queued >= 7.0, "{queued} queued");
    let mut per_path: HashMap<String, usize> = HashMap::new();
    for r in rx.received() {
        *per_path.entry(r.path.clone()).or_default() += 1;
    }
    assert_eq!(per_path.len(), subscriptions);
    assert!(per_path.values().all(|n| *n == 1), "{per_path:?}");
}
