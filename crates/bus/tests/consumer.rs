//! The consumer loop against the real RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lapin::{
    Connection,
    message::Delivery,
    options::{QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use tokio::{sync::watch, task::JoinHandle};
use waybill_bus::{
    Broker, Consumer, ConsumerSpec, Handler, Outcome, Outgoing, Returner, Topology,
    topology::QueueType,
};
use waybill_testkit::{BrokerProxy, TopologyGuard, broker_url, eventually, queue_depth};

/// Records what it saw; each message id's outcomes are scripted, then `Ack`.
#[derive(Default)]
struct Recorder {
    running: AtomicUsize,
    most: AtomicUsize,
    seen: Mutex<HashMap<String, usize>>,
    acked: AtomicUsize,
    work: Duration,
    script: HashMap<String, Vec<Outcome>>,
    /// Message ids in the order their handling ended.
    log: Mutex<Vec<String>>,
}

impl Recorder {
    /// A recorder whose every handling takes `ms` milliseconds.
    fn working(ms: u64) -> Arc<Recorder> {
        Arc::new(Recorder {
            work: Duration::from_millis(ms),
            ..Default::default()
        })
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }
}

/// Message ids `{prefix}0`, `{prefix}1`, ... up to `n` of them.
fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Stops a consumer [`Fixture::consume`] started and waits for it to return.
async fn halt(stop: watch::Sender<bool>, task: JoinHandle<()>) {
    stop.send(true).unwrap();
    task.await.unwrap();
}

impl Handler for Recorder {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.work).await;
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let n = {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.log.lock().unwrap().push(id.clone());
        let outcome = self
            .script
            .get(&id)
            .and_then(|s| s.get(n - 1))
            .copied()
            .unwrap_or(Outcome::Ack);
        if outcome == Outcome::Ack {
            self.acked.fetch_add(1, Ordering::SeqCst);
        }
        outcome
    }
}

struct Fixture {
    topology: Topology,
    broker: Broker,
    _guard: TopologyGuard,
}

impl Fixture {
    async fn new() -> Fixture {
        let prefix = format!("wbcon{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let topology = Topology::new(prefix, QueueType::Classic, &[Duration::from_secs(300)])
            .with_limbo_ttl(Duration::from_millis(300));
        let broker = Broker::new(broker_url(), topology.clone());
        broker.ping().await.unwrap();
        Fixture {
            _guard: TopologyGuard(topology.clone()),
            topology,
            broker,
        }
    }

    fn spec(&self, concurrency: usize) -> ConsumerSpec {
        ConsumerSpec {
            queue: self.topology.dispatch_queue(),
            prefetch: 10,
            concurrency,
            tag: "test".into(),
        }
    }

    async fn publish(&self, ids: impl IntoIterator<Item = String>) {
        let exchange = self.topology.events_exchange();
        let ids: Vec<String> = ids.into_iter().collect();
        let msgs: Vec<Outgoing> = ids
            .iter()
            .map(|id| Outgoing {
                exchange: &exchange,
                routing_key: "order.shipped",
                body: b"{}",
                message_id: Some(id),
                headers: vec![],
                mandatory: true,
            })
            .collect();
        self.broker.publish_many(&msgs).await.unwrap();
    }

    /// Starts a consumer of the dispatch queue on `url` with `rec` as its handler; returns the
    /// switch that stops it and its task.
    fn consume(
        &self,
        url: String,
        concurrency: usize,
        rec: &Arc<Recorder>,
    ) -> (watch::Sender<bool>, JoinHandle<()>) {
        let (stop, stopped) = watch::channel(false);
        let consumer = Consumer::new(url, self.topology.clone(), self.spec(concurrency));
        let rec = rec.clone();
        let task = tokio::spawn(async move { consumer.run(rec, stopped).await });
        (stop, task)
    }

    async fn depth(&self) -> u32 {
        let conn = Connection::connect(&broker_url(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        queue_depth(&ch, &self.topology.dispatch_queue()).await
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let ok = eventually(Duration::from_secs(15), || {
        let r = check();
        async move { r.then_some(()) }
    })
    .await;
    assert!(ok.is_some(), "timed out waiting until {what}");
}

#[tokio::test]
async fn handlers_run_at_most_the_limit_at_once_and_every_message_is_acked() {
    let f = Fixture::new().await;
    f.publish(numbered("m", 40)).await;
    let rec = Recorder::working(20);
    let (stop, task) = f.consume(broker_url(), 3, &rec);
    until("40 acked", || rec.acked() == 40).await;
    let most = rec.most.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&most),
        "ran {most} at once with a limit of 3"
    );
    halt(stop, task).await;
    assert_eq!(f.depth().await, 0);
}

#[tokio::test]
async fn outcomes_retry_in_place_or_drop_the_message() {
    let f = Fixture::new().await;
    let script = HashMap::from([
        (
            "again".to_string(),
            vec![Outcome::Retry, Outcome::Retry, Outcome::Ack],
        ),
        ("parked".to_string(), vec![Outcome::Drop]),
    ]);
    let rec = Arc::new(Recorder {
        script,
        ..Default::default()
    });
    f.publish([
        "again".to_string(),
        "parked".to_string(),
        "plain".to_string(),
    ])
    .await;
    let (stop, task) = f.consume(broker_url(), 2, &rec);
    until("both acks", || rec.acked() == 2).await;
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(seen["again"], 3, "retried twice in place, then acked");
    assert_eq!(seen["parked"], 1, "dropped once, never seen again");
    halt(stop, task).await;
    assert_eq!(f.depth().await, 0);
}

#[tokio::test]
async fn the_consumer_comes_back_after_the_connection_drops_and_after_its_queue_is_deleted() {
    let f = Fixture::new().await;
    let proxy = BrokerProxy::start().await;
    let rec = Arc::new(Recorder::default());
    let (stop, task) = f.consume(proxy.url(), 2, &rec);
    f.publish(numbered("a", 5)).await;
    until("first 5", || rec.acked() == 5).await;

    proxy.cut();
    f.publish(numbered("b", 5)).await; // published directly while the consumer is cut off
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    until("10 after the connection came back", || rec.acked() == 10).await;

    // The queue vanishes under the consumer: the broker cancels it; it redeclares and goes on.
    let conn = Connection::connect(&broker_url(), Default::default())
        .await
        .unwrap();
    conn.create_channel()
        .await
        .unwrap()
        .queue_delete(
            f.topology.dispatch_queue().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let redeclared = eventually(Duration::from_secs(15), || async {
        let ch = conn.create_channel().await.ok()?;
        ch.queue_declare(
            f.topology.dispatch_queue().as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
        // Consuming again means the whole topology, bindings included, is declared again.
        .filter(|q| q.consumer_count() > 0)
    })
    .await;
    assert!(redeclared.is_some(), "the consumer redeclared its queue");
    f.publish(numbered("c", 3)).await;
    until("13 after the queue was deleted", || rec.acked() == 13).await;
    halt(stop, task).await;
}

#[tokio::test]
async fn stopping_lets_running_handlers_finish_and_leaves_the_rest_queued() {
    let f = Fixture::new().await;
    f.publish(numbered("s", 10)).await;
    let rec = Recorder::working(400);
    let (stop, task) = f.consume(broker_url(), 2, &rec);
    until("two handlers running", || {
        rec.running.load(Ordering::SeqCst) == 2
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops after the running handlers")
        .unwrap();
    assert_eq!(
        rec.acked(),
        2,
        "the two in progress finished and were acked"
    );
    assert_eq!(
        f.depth().await,
        8,
        "the others are back on the queue, untouched"
    );
}

#[tokio::test]
async fn a_dead_lettered_message_comes_back_through_limbo() {
    let f = Fixture::new().await;
    let script = HashMap::from([(
        "poison".to_string(),
        vec![Outcome::DeadLetter, Outcome::DeadLetter, Outcome::Ack],
    )]);
    let rec = Arc::new(Recorder {
        script,
        ..Default::default()
    });
    let (stop, task) = f.consume(broker_url(), 2, &rec);
    let work = f.topology.dispatch_queue();
    let back = Consumer::new(
        broker_url(),
        f.topology.clone(),
        ConsumerSpec {
            queue: Topology::return_queue(&work),
            prefetch: 10,
            concurrency: 4,
            tag: "test-return".into(),
        },
    )
    .retrying_without_limit();
    let returner = Arc::new(Returner {
        broker: f.broker.clone(),
        work_queue: work.clone(),
    });
    let (stop_back, stopped_back) = watch::channel(false);
    let back_task = tokio::spawn(async move { back.run(returner, stopped_back).await });
    f.publish(["poison".to_string(), "fine".to_string()]).await;
    until("both acked", || rec.acked() == 2).await;
    assert_eq!(
        rec.seen.lock().unwrap()["poison"],
        3,
        "rejected twice into limbo, back each time"
    );
    halt(stop, task).await;
    halt(stop_back, back_task).await;
    assert_eq!(f.depth().await, 0);
}

#[tokio::test]
async fn while_a_handler_retries_nothing_new_is_taken_and_shutdown_hands_it_back() {
    let f = Fixture::new().await;
    let mut script = HashMap::from([(
        "stuck".to_string(),
        vec![Outcome::Retry, Outcome::Retry, Outcome::Retry, Outcome::Ack],
    )]);
    script.insert("held".to_string(), vec![Outcome::Retry; 10_000]);
    let rec = Arc::new(Recorder {
        script,
        ..Default::default()
    });
    let (stop, task) = f.consume(broker_url(), 4, &rec);
    let tries = |id: &'static str| {
        let rec = rec.clone();
        move || rec.seen.lock().unwrap().get(id).copied().unwrap_or(0)
    };
    f.publish(["stuck".to_string()]).await;
    let stuck = tries("stuck");
    until("stuck failed once", || stuck() >= 2).await;
    f.publish(["later".to_string()]).await;
    until("both acked", || rec.acked() == 2).await;
    let log = rec.log.lock().unwrap().clone();
    let last_stuck = log.iter().rposition(|id| id == "stuck").unwrap();
    let first_later = log.iter().position(|id| id == "later").unwrap();
    assert!(
        first_later > last_stuck,
        "`later` was taken only once `stuck` got through: {log:?}"
    );

    // A handler that never gets through holds the consumer until shutdown, which hands its
    // message back at once.
    f.publish(["held".to_string()]).await;
    let held = tries("held");
    until("held tried twice", || held() >= 2).await;
    tokio::time::timeout(Duration::from_secs(5), halt(stop, task))
        .await
        .expect("shutdown is not blocked by the waiting handler");
    assert_eq!(f.depth().await, 1, "the held message is back on the queue");
}
