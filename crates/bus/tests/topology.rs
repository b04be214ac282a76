//! The topology against the real RabbitMQ: redeclaring is harmless, events reach the dispatch
//! queue, and a retry tier hands its messages back to the deliveries queue after its delay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicGetOptions, BasicPublishOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use waybill_bus::{
    Topology,
    topology::{DELIVERY_KEY, QueueType},
};

use waybill_testkit::broker_url;

/// A topology under a prefix of its own, deleted when the test ends.
struct Scratch {
    topology: Topology,
    _guard: waybill_testkit::TopologyGuard,
    channel: Channel,
    _conn: Connection,
}

impl Scratch {
    async fn new(queue_type: QueueType, delays: &[Duration]) -> Scratch {
        let prefix = format!("wbbus{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let conn = Connection::connect(&broker_url(), Default::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let topology = Topology::new(prefix, queue_type, delays);
        topology.declare(&channel).await.unwrap();
        Scratch {
            _guard: waybill_testkit::TopologyGuard(topology.clone()),
            topology,
            channel,
            _conn: conn,
        }
    }

    async fn get(&self, queue: &str, within: Duration) -> Option<lapin::message::BasicGetMessage> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return Some(m);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes a persistent, mandatory message and waits for the broker's confirmation.
    async fn publish(&self, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
        self.channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn teardown(self) {
        self.topology.delete(&self.channel).await.unwrap();
    }
}

fn header(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn declaring_twice_changes_nothing_and_new_tiers_are_added() {
    for queue_type in [QueueType::Classic, QueueType::Quorum] {
        let s = Scratch::new(
            queue_type,
            &[Duration::from_secs(300), Duration::from_secs(3600)],
        )
        .await;
        s.topology
            .declare(&s.channel)
            .await
            .expect("a second declaration is accepted");
        // A new schedule adds its tiers beside the old ones.
        let wider = Topology::new(
            s.topology.prefix(),
            queue_type,
            &[Duration::from_secs(300), Duration::from_secs(7200)],
        );
        wider.declare(&s.channel).await.expect("a tier is added");
        // Same name, other type: the broker refuses, so a misconfiguration is loud.
        let other = if queue_type == QueueType::Classic {
            QueueType::Quorum
        } else {
            QueueType::Classic
        };
        let conn = Connection::connect(&broker_url(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        assert!(
            Topology::new(s.topology.prefix(), other, &[])
                .declare(&ch)
                .await
                .is_err(),
            "{queue_type:?}"
        );
        wider.delete(&s.channel).await.unwrap();
        s.teardown().await;
    }
}

#[tokio::test]
async fn events_reach_the_dispatch_queue_under_any_type() {
    let s = Scratch::new(QueueType::Classic, &[Duration::from_secs(300)]).await;
    for key in ["order.shipped", "tracking_parcel.status_changed"] {
        let exchange = s.topology.events_exchange();
        s.publish(
            &exchange,
            key,
            br#"{"id":"e1"}"#,
            BasicProperties::default(),
        )
        .await;
        let m = s
            .get(&s.topology.dispatch_queue(), Duration::from_secs(5))
            .await
            .expect("routed to dispatch");
        assert_eq!(m.delivery.routing_key.as_str(), key);
    }
    s.teardown().await;
}

#[tokio::test]
async fn a_retry_tier_returns_its_message_to_the_deliveries_queue_after_the_delay() {
    let delay = Duration::from_millis(300);
    let s = Scratch::new(QueueType::Classic, &[delay, Duration::from_secs(3600)]).await;
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("waybill-attempt"),
        AMQPValue::LongString("3".into()),
    );
    let sent = Instant::now();
    let props = BasicProperties::default().with_headers(headers);
    s.publish(
        "",
        &s.topology.retry_queue(delay),
        br#"{"delivery":"d1"}"#,
        props,
    )
    .await;
    let back = s
        .get(&s.topology.deliveries_queue(), Duration::from_secs(10))
        .await
        .expect("dead-lettered back");
    let waited = sent.elapsed();
    assert!(
        waited >= delay,
        "came back after {waited:?}, before the {delay:?} tier"
    );
    assert_eq!(back.delivery.data, br#"{"delivery":"d1"}"#);
    assert_eq!(back.delivery.routing_key.as_str(), DELIVERY_KEY);
    assert_eq!(
        header(&back.delivery.properties, "waybill-attempt").as_deref(),
        Some("3"),
        "our own attempt header survives"
    );
    assert!(
        s.get(&s.topology.retry_queue(delay), Duration::from_millis(50))
            .await
            .is_none()
    );
    s.teardown().await;
}

#[tokio::test]
async fn a_work_queue_declared_without_a_dead_letter_target_is_refused_as_such() {
    let prefix = format!("wbbus{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let topology = Topology::new(prefix, QueueType::Classic, &[]);
    let _guard = waybill_testkit::TopologyGuard(topology.clone());
    let conn = Connection::connect(&broker_url(), Default::default())
        .await
        .unwrap();
    // As an older version declared it: durable, no arguments.
    conn.create_channel()
        .await
        .unwrap()
        .queue_declare(
            topology.dispatch_queue().as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let err = topology
        .declare(&conn.create_channel().await.unwrap())
        .await
        .expect_err("the arguments differ");
    assert!(waybill_bus::topology::is_precondition_failed(&err), "{err}");
}

#[tokio::test]
async fn the_dead_and_invalid_queues_keep_at_most_their_length() {
    let prefix = format!("wbbus{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let topology = Topology::new(prefix, QueueType::Classic, &[]).with_parked_max_length(3);
    let _guard = waybill_testkit::TopologyGuard(topology.clone());
    let conn = Connection::connect(&broker_url(), Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    topology.declare(&channel).await.unwrap();
    for queue in [topology.dead_queue(), topology.invalid_queue()] {
        for i in 0..5u8 {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &[i],
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }
        let depth = waybill_testkit::eventually(Duration::from_secs(5), || async {
            let d = waybill_testkit::queue_depth(&channel, &queue).await;
            (d == 3).then_some(d)
        })
        .await;
        assert_eq!(depth, Some(3), "{queue} keeps the newest 3");
    }
}

#[tokio::test]
async fn published_messages_carry_when_they_reach_a_work_queue() {
    let hour = Duration::from_secs(3600);
    let s = Scratch::new(QueueType::Classic, &[hour]).await;
    let broker = waybill_bus::Broker::new(broker_url(), s.topology.clone());
    let now = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let before = now();
    let events = s.topology.events_exchange();
    let retry = s.topology.retry_queue(hour);
    for (exchange, key) in [(events.as_str(), "order.created"), ("", retry.as_str())] {
        broker
            .publish(&waybill_bus::Outgoing {
                exchange,
                routing_key: key,
                body: b"{}",
                message_id: None,
                headers: vec![],
                mandatory: true,
            })
            .await
            .unwrap();
    }
    let after = now();
    let fresh = s
        .get(&s.topology.dispatch_queue(), Duration::from_secs(5))
        .await
        .unwrap();
    let stamp = waybill_bus::queued_at(&fresh.delivery).unwrap();
    assert!((before..=after).contains(&stamp), "published now");
    let delayed = s.get(&retry, Duration::from_secs(5)).await.unwrap();
    let stamp = waybill_bus::queued_at(&delayed.delivery).unwrap();
    assert!(
        (before + 3_600_000..=after + 3_600_000).contains(&stamp),
        "reaches the deliveries queue when its delay ends"
    );
}
