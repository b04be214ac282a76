//! Outages of Postgres and redelivery limits: nothing accepted is lost. The database is taken
//! away from the dispatcher alone (through a proxy), while events keep coming in.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use lapin::{
    Connection,
    options::{BasicGetOptions, BasicNackOptions},
};
use serde_json::json;
use waybill_bus::Topology;
use waybill_testkit::{Proxy, broker_url, eventually};

use crate::helpers::{Receiver, Stack, example};

/// A delivery limit on the test's own work queues, set by policy on the shared broker and
/// removed when dropped. The pattern is anchored on the test's prefix, so no other test's
/// queues are touched (the limit only applies to quorum queues).
struct DeliveryLimit(String);

impl DeliveryLimit {
    fn set(prefix: &str, limit: u32) -> DeliveryLimit {
        let name = format!("{prefix}-delivery-limit");
        let pattern = format!(r"^{prefix}\.(dispatch|deliveries)$");
        let definition = format!(r#"{{"delivery-limit":{limit}}}"#);
        let status = std::process::Command::new("rabbitmqctl")
            .args(["set_policy", &name, &pattern, &definition])
            .args(["--apply-to", "queues", "--priority", "10"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("rabbitmqctl");
        assert!(status.success(), "cannot set the delivery limit policy");
        DeliveryLimit(name)
    }
}

impl Drop for DeliveryLimit {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", &self.0])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// Settings of every service of these tests: the queue type, and a short stay in limbo.
fn stack_settings(queue_type: &'static str) -> impl FnOnce(&mut waybill_runtime::Settings) {
    move |s| {
        s.broker.queue_type = queue_type.to_owned();
        s.broker.limbo_ttl = "1s".to_owned();
    }
}

/// Posts events to the ingest until `until` passes; returns the ids answered 202.
async fn keep_publishing(ingest: String, token: String, until: Instant) -> Vec<String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut accepted = Vec::new();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let id = format!("out-{n}");
        let body = json!({"type": "order.created", "id": id, "data": example("order.created")});
        let sent = client
            .post(format!("{ingest}/v1/events"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        if sent.is_ok_and(|r| r.status() == 202) {
            accepted.push(id);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    accepted
}

/// Event ids `rx` received.
fn received_ids(rx: &Receiver) -> HashSet<String> {
    rx.received()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect()
}

/// The whole scenario on `queue_type` queues: events flow, the dispatcher's database goes
/// away for a while and comes back; every accepted event is delivered and recorded.
async fn a_database_outage_loses_nothing(queue_type: &'static str) {
    let mut stack = Stack::start_with(stack_settings(queue_type), 0).await;
    let _limit = (queue_type == "quorum").then(|| DeliveryLimit::set(&stack.prefix, 2));
    let ingest = stack
        .run(waybill_ingest::Application::build, stack.settings.clone())
        .await;
    stack.wait_ready(ingest).await;
    let proxy = Proxy::to_database().await;
    let mut settings = stack.settings.clone();
    settings.database.url = proxy.through(&settings.database.url);
    let dispatcher = stack.spawn_dispatcher(settings).await;
    let (rx, webhook) = stack.receiver_for(json!(["order.*"])).await;

    let publishing = tokio::spawn(keep_publishing(
        format!("http://127.0.0.1:{ingest}"),
        stack.publisher(),
        Instant::now() + Duration::from_secs(18),
    ));
    // Some deliveries first, then the outage, while events keep being accepted.
    rx.wait_for(10, Duration::from_secs(20)).await;
    proxy.cut();
    let outage = Instant::now();
    let work = stack.settings.topology().unwrap().dispatch_queue();
    let labels = format!("queue=\"{work}\"");
    let backlog = eventually(Duration::from_secs(12), || async {
        let depth = stack
            .metric(dispatcher, "waybill_queue_messages", &labels)
            .await;
        let age = stack
            .metric(
                dispatcher,
                "waybill_queue_oldest_message_age_seconds",
                &labels,
            )
            .await;
        (depth > 0.0 && age >= 1.0).then_some((depth, age))
    })
    .await;
    assert!(
        backlog.is_some(),
        "the dispatch queue's depth and age show the backlog on /metrics"
    );
    // The outage lasts 12 s in all.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(outage.elapsed())).await;
    let during = received_ids(&rx).len();
    proxy.restore();
    let accepted = publishing.await.unwrap();
    assert!(
        accepted.len() > during + 20,
        "{} accepted, {during} delivered before the database came back",
        accepted.len()
    );

    let all = eventually(Duration::from_secs(90), || async {
        let got = received_ids(&rx);
        accepted.iter().all(|id| got.contains(id)).then_some(())
    })
    .await;
    if all.is_none() {
        let got = received_ids(&rx);
        let missing: Vec<&String> = accepted.iter().filter(|id| !got.contains(*id)).collect();
        panic!(
            "{} of {} accepted events never delivered: {:?}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(20)]
        );
    }
    // Every delivery is recorded as succeeded; none is left pending.
    let settled = eventually(Duration::from_secs(30), || async {
        let rows = stack.deliveries(&webhook).await;
        let ids: HashSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        (accepted.iter().all(|id| ids.contains(id.as_str()))
            && rows.iter().all(|r| r.status == "succeeded"))
        .then_some(())
    })
    .await;
    if settled.is_none() {
        let pending: Vec<_> = stack
            .deliveries(&webhook)
            .await
            .into_iter()
            .filter(|r| r.status != "succeeded")
            .collect();
        panic!("deliveries not settled: {pending:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_nothing_on_quorum_queues_with_a_delivery_limit() {
    a_database_outage_loses_nothing("quorum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_nothing_on_classic_queues() {
    a_database_outage_loses_nothing("classic").await;
}

/// Takes the next message of `queue` and hands it back to the queue, `times` times over.
async fn bounce(queue: &str, times: usize) {
    let conn = Connection::connect(&broker_url(), Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    for _ in 0..times {
        let got = eventually(Duration::from_secs(10), || async {
            channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .unwrap()
        })
        .await
        .unwrap_or_else(|| panic!("nothing on {queue}"));
        got.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_delivery_limit_comes_back_through_limbo_and_is_delivered() {
    let mut stack = Stack::start_with(stack_settings("quorum"), 0).await;
    let _limit = DeliveryLimit::set(&stack.prefix, 2);
    let rx = Receiver::start().await;
    stack
        .subscribe("acme", json!({"url": rx.url("/a"), "events": ["order.*"]}))
        .await;
    let topology = stack.settings.topology().unwrap();
    let work = topology.dispatch_queue();
    // No dispatcher yet: the event is handed back until the broker's limit removes it.
    stack
        .publish("acme", "order.created", "limited-1", None)
        .await;
    bounce(&work, 3).await;
    let parked = eventually(Duration::from_secs(10), || async {
        (stack.queue_len(&work).await == 0
            && stack.queue_len(&Topology::return_queue(&work)).await == 1)
            .then_some(())
    })
    .await;
    assert!(
        parked.is_some(),
        "over the limit, the event went through limbo to the return queue"
    );
    let settings = stack.settings.clone();
    stack.spawn_dispatcher(settings).await;
    rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        received_ids(&rx),
        HashSet::from(["limited-1".to_owned()]),
        "delivered once it came back"
    );
    let queued = eventually(Duration::from_secs(10), || async {
        let mut left = 0;
        for (queue, _) in topology.queues() {
            left += stack.queue_len(&queue).await;
        }
        (left == 0).then_some(())
    })
    .await;
    assert!(queued.is_some(), "nothing left on any queue");
}
