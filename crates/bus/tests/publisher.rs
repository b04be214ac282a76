//! Confirmed publishing against the real RabbitMQ: `Ok` means queued, whatever happens to the
//! connection, and the same `Broker` carries on once the broker is reachable again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use lapin::{Connection, options::BasicGetOptions};
use waybill_bus::{Broker, BusError, Outgoing, Topology, topology::QueueType};
use waybill_testkit::{BrokerProxy, TopologyGuard, broker_url, queue_depth};

fn topology() -> Topology {
    let prefix = format!("wbpub{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    Topology::new(prefix, QueueType::Classic, &[Duration::from_secs(300)])
}

async fn admin() -> (Connection, lapin::Channel) {
    let conn = Connection::connect(&broker_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// Takes every message of `queue` and returns their message ids.
async fn drain_ids(ch: &lapin::Channel, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        ids.push(
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        );
    }
    ids
}

fn event<'a>(exchange: &'a str, id: &'a str, body: &'a [u8]) -> Outgoing<'a> {
    Outgoing {
        exchange,
        routing_key: "order.shipped",
        body,
        message_id: Some(id),
        headers: vec![],
        mandatory: true,
    }
}

#[tokio::test]
async fn a_pipelined_batch_is_confirmed_only_when_all_of_it_is_queued() {
    let t = topology();
    let _guard = TopologyGuard(t.clone());
    let broker = Broker::new(broker_url(), t.clone());
    let exchange = t.events_exchange();
    let ids: Vec<String> = (0..2000).map(|i| format!("evt-{i}")).collect();
    let body = br#"{"data":{}}"#;
    let batch: Vec<Outgoing> = ids.iter().map(|id| event(&exchange, id, body)).collect();
    let started = Instant::now();
    broker.publish_many(&batch).await.expect("confirmed");
    eprintln!(
        "2000 persistent messages confirmed in {:?}",
        started.elapsed()
    );
    let (_c, ch) = admin().await;
    assert_eq!(queue_depth(&ch, &t.dispatch_queue()).await, 2000);
    let got: HashSet<String> = drain_ids(&ch, &t.dispatch_queue())
        .await
        .into_iter()
        .collect();
    assert_eq!(got, ids.into_iter().collect::<HashSet<_>>());

    // A message no queue takes is an error, not a silent success.
    let deliveries = t.deliveries_exchange();
    let lost = Outgoing {
        exchange: &deliveries,
        routing_key: "nowhere",
        body,
        message_id: None,
        headers: vec![],
        mandatory: true,
    };
    assert!(matches!(
        broker.publish(&lost).await,
        Err(BusError::Unroutable)
    ));
}

#[tokio::test]
async fn nothing_confirmed_is_lost_while_the_connection_drops_and_returns() {
    let t = topology();
    let _guard = TopologyGuard(t.clone());
    let proxy = BrokerProxy::start().await;
    let broker = Broker::new(proxy.url(), t.clone());
    let exchange = t.events_exchange();
    let body = br#"{"data":{}}"#;
    let (mut confirmed, mut refused) = (Vec::new(), 0u32);
    let started = Instant::now();
    let mut n = 0u32;
    let mut restored_at = None;
    // Publish continuously for 3 s; the broker connection is gone between 1 s and 2 s.
    while started.elapsed() < Duration::from_secs(3) {
        let elapsed = started.elapsed();
        if elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(2) {
            proxy.cut();
        } else if elapsed >= Duration::from_secs(2) {
            proxy.restore();
            restored_at.get_or_insert(n);
        }
        let id = format!("evt-{n}");
        n += 1;
        match broker.publish(&event(&exchange, &id, body)).await {
            Ok(()) => confirmed.push(id),
            Err(_) => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    proxy.restore();
    let (_c, ch) = admin().await;
    let queued: HashSet<String> = drain_ids(&ch, &t.dispatch_queue())
        .await
        .into_iter()
        .collect();
    let missing: Vec<&String> = confirmed
        .iter()
        .filter(|id| !queued.contains(*id))
        .collect();
    assert!(missing.is_empty(), "confirmed but not queued: {missing:?}");
    assert!(refused > 0, "the outage was noticed");
    let restored_at = restored_at.expect("the loop ran past the outage");
    let after_outage = confirmed
        .iter()
        .filter(|id| id.trim_start_matches("evt-").parse::<u32>().unwrap() >= restored_at)
        .count();
    assert!(
        after_outage > 0,
        "the same Broker published again after the connection came back"
    );
    eprintln!(
        "{} confirmed, {refused} refused, {} queued",
        confirmed.len(),
        queued.len()
    );
}
