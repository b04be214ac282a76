//! The consumer loop every Waybill consumer runs: manual acks, a bounded prefetch, a limit on
//! concurrent handlers, reconnection with exponential backoff (also when the broker cancels the
//! consumer, e.g. because its queue was deleted), and a graceful drain on shutdown.
//!
//! A message is never handed back to its queue to be tried again: on RabbitMQ quorum queues
//! every requeue counts toward the queue's delivery limit. A handler whose dependency is down
//! ([`Outcome::Retry`]) keeps its message and is called again in place, with backoff, while the
//! consumer takes no new messages (its handlers share one "down" state; the first retry that
//! gets through resumes consumption). Only shutdown hands such a message back, once. A message
//! that can never succeed as it is ([`Outcome::DeadLetter`]) is rejected into the work queue's
//! limbo queue (see [`crate::topology`]), from where it comes back later.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::{
    Channel, Connection, ConnectionProperties,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::FieldTable,
};
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};

use crate::{Broker, Topology, publisher::QUEUED_AT_HEADER};

/// How long to wait between attempts to reach the broker: 100 ms doubling to 5 s, jittered,
/// for as long as it takes.
pub fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// How long a message may be retried in place before it is dead-lettered instead: a limbo round
/// trip loses nothing, and a message whose error only looks passing cannot hold its consumer
/// forever.
pub const IN_PLACE_LIMIT: Duration = Duration::from_secs(300);

/// The shortest wait between two tries of one message, even when another handler's success
/// says the dependency is back.
const RETRY_FLOOR: Duration = Duration::from_millis(100);

/// What becomes of a message once its handler is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done with: remove it from the queue.
    Ack,
    /// Remove it without processing (the handler has already parked it elsewhere, such as the
    /// dead queue): acked.
    Drop,
    /// A dependency is away: keep the message and call the handler again after a backoff; the
    /// consumer takes no new messages meanwhile.
    Retry,
    /// It will fail again as it is: reject it into the limbo queue, from where it comes back
    /// after the limbo TTL.
    DeadLetter,
}

/// Processes one message. Runs concurrently, up to the consumer's limit. A message tried again
/// in place after [`Outcome::Retry`] is shown with `redelivered` set.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;
}

/// Which queue to consume, and how much at once.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub queue: String,
    /// Messages the broker sends ahead of acks.
    pub prefetch: u16,
    /// Handlers running at once (at most `prefetch`).
    pub concurrency: usize,
    pub tag: String,
}

/// The "down" state a consumer's handlers share: set by a handler that must retry, cleared by
/// any handler that got through.
#[derive(Clone)]
pub struct Pause {
    down: watch::Sender<bool>,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            down: watch::channel(false).0,
        }
    }
}

impl Pause {
    /// A dependency is away; `true` when that is news.
    pub fn failing(&self) -> bool {
        self.down.send_if_modified(|d| !std::mem::replace(d, true))
    }

    /// The dependency answered; `true` when that is news.
    pub fn recovered(&self) -> bool {
        self.down.send_if_modified(|d| std::mem::replace(d, false))
    }

    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    fn watch(&self) -> watch::Receiver<bool> {
        self.down.subscribe()
    }
}

/// What the consumer does with a message once its handling is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    /// Reject without requeue: into limbo.
    Reject,
    /// Shutdown while waiting to retry: back to the queue, once.
    GiveBack,
    /// The channel is gone: the broker has put the message back already.
    Abandon,
}

/// Runs `attempt` until it is done with the message: again after each [`Outcome::Retry`], once
/// `backoff`'s next delay has passed or, no sooner than [`RETRY_FLOOR`], another handler's
/// success cleared `pause`. Gives up waiting when `stop` turns true or `alive` turns false, and
/// dead-letters a message still retried after `limit`.
async fn work<F, Fut>(
    mut attempt: F,
    pause: &Pause,
    backoff: ExponentialBuilder,
    limit: Duration,
    mut stop: watch::Receiver<bool>,
    alive: impl Fn() -> bool,
) -> Settle
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let started = tokio::time::Instant::now();
    let mut delays = backoff.build();
    loop {
        match attempt().await {
            Outcome::Ack | Outcome::Drop => {
                pause.recovered();
                return Settle::Ack;
            }
            Outcome::DeadLetter => {
                pause.recovered();
                return Settle::Reject;
            }
            Outcome::Retry if started.elapsed() >= limit => return Settle::Reject,
            Outcome::Retry => {}
        }
        pause.failing();
        let wait = delays.next().unwrap_or(Duration::from_secs(5));
        let mut down = pause.watch();
        down.borrow_and_update();
        let waited = async {
            tokio::time::sleep(wait.min(RETRY_FLOOR)).await;
            // Back sooner when another handler got through meanwhile (or does while we wait).
            if *down.borrow() {
                tokio::select! {
                    _ = tokio::time::sleep(wait.saturating_sub(RETRY_FLOOR)) => {}
                    _ = down.wait_for(|d| !*d) => {}
                }
            }
        };
        tokio::select! {
            _ = waited => {}
            _ = stop.wait_for(|s| *s) => return Settle::GiveBack,
        }
        if *stop.borrow() {
            return Settle::GiveBack;
        }
        if !alive() {
            return Settle::Abandon;
        }
    }
}

/// When a message reached its work queue (milliseconds since the Unix epoch): the
/// [`QUEUED_AT_HEADER`] Waybill's publishers stamp, else the AMQP `timestamp` property.
pub fn queued_at(delivery: &Delivery) -> Option<i64> {
    let stamped = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(QUEUED_AT_HEADER).cloned());
    let from_header = match stamped {
        Some(lapin::types::AMQPValue::LongLongInt(ms)) => Some(ms),
        Some(lapin::types::AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes())
            .ok()
            .and_then(|s| s.parse::<i64>().ok()),
        _ => None,
    };
    from_header.or_else(|| {
        delivery
            .properties
            .timestamp()
            .and_then(|s| i64::try_from(s).ok())
            .map(|s| s.saturating_mul(1000))
    })
}

/// Header of a message carrying the W3C trace context it was published in.
pub use waybill_trace::TRACEPARENT as TRACEPARENT_HEADER;

/// The W3C trace context a message carries in its [`TRACEPARENT_HEADER`], normalised
/// ([`waybill_trace::normalize`]); `None` when it is absent or not a well-formed `traceparent` (a
/// publisher writing to the broker directly may put anything there, and what is passed on ends
/// up in HTTP headers).
pub fn traceparent(delivery: &Delivery) -> Option<String> {
    raw_traceparent(delivery).and_then(|v| waybill_trace::normalize(&v))
}

fn raw_traceparent(delivery: &Delivery) -> Option<String> {
    let value = delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(TRACEPARENT_HEADER)?;
    match value {
        lapin::types::AMQPValue::LongString(s) => {
            std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
        }
        lapin::types::AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The stamp of the last message a consumer took from the head of its queue.
#[derive(Debug)]
pub struct Head {
    stamp: AtomicI64,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            stamp: AtomicI64::new(i64::MIN),
        }
    }
}

impl Head {
    fn saw(&self, delivery: &Delivery) {
        if let Some(ms) = queued_at(delivery) {
            self.stamp.store(ms, Ordering::Relaxed);
        }
    }

    /// When the last message taken had reached the queue (ms since the epoch), if known.
    pub fn last_taken(&self) -> Option<i64> {
        Some(self.stamp.load(Ordering::Relaxed)).filter(|s| *s != i64::MIN)
    }
}

/// Sends the messages of a return queue back to their work queue (see [`crate::topology`]).
pub struct Returner {
    pub broker: Broker,
    /// The work queue the messages go back to.
    pub work_queue: String,
}

impl Handler for Returner {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        match self.broker.republish(&self.work_queue, delivery).await {
            Ok(()) => Outcome::Ack,
            Err(e) => {
                tracing::warn!(queue = %self.work_queue, error = %e, "cannot send a message back from limbo yet");
                Outcome::Retry
            }
        }
    }
}

enum Ended {
    Stopped,
    Lost(String),
}

/// A consumer of one queue, reconnecting until told to stop.
pub struct Consumer {
    url: String,
    topology: Topology,
    spec: ConsumerSpec,
    head: Arc<Head>,
    retry: ExponentialBuilder,
    in_place_limit: Duration,
}

impl Consumer {
    pub fn new(url: impl Into<String>, topology: Topology, spec: ConsumerSpec) -> Self {
        Self {
            url: url.into(),
            topology,
            spec,
            head: Arc::default(),
            retry: reconnect_backoff(),
            in_place_limit: IN_PLACE_LIMIT,
        }
    }

    /// Retries in place for as long as it takes, never dead-lettering a message for it: for a
    /// queue whose dead letters would have nowhere to go (the return queues).
    #[must_use]
    pub fn retrying_without_limit(mut self) -> Self {
        self.in_place_limit = Duration::MAX;
        self
    }

    /// The stamp of the last message this consumer took (for the queue's age estimate).
    pub fn head(&self) -> Arc<Head> {
        self.head.clone()
    }

    /// Consumes until `stop` turns true: then stops taking messages, lets the handlers in
    /// progress finish and settle theirs, and returns. Messages received but not started go
    /// back to the queue when the channel closes.
    pub async fn run<H: Handler>(&self, handler: Arc<H>, mut stop: watch::Receiver<bool>) {
        let backoff = reconnect_backoff();
        loop {
            if *stop.borrow() {
                return;
            }
            let opened = tokio::select! {
                s = (|| self.open()).retry(backoff).notify(|e, wait| {
                    tracing::warn!(queue = %self.spec.queue, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot consume yet");
                }) => s,
                _ = stop.changed() => return,
            };
            let Ok((connection, channel, consumer)) = opened else {
                continue;
            };
            tracing::info!(queue = %self.spec.queue, "consuming");
            match self
                .consume(&channel, consumer, handler.clone(), &mut stop)
                .await
            {
                Ended::Stopped => {
                    let _ = channel.close(200, "stopping".into()).await;
                    let _ = connection.close(200, "stopping".into()).await;
                    return;
                }
                Ended::Lost(why) => {
                    tracing::warn!(queue = %self.spec.queue, reason = %why, "consumer lost; reconnecting");
                    let _ = connection.close(200, "reconnecting".into()).await;
                }
            }
        }
    }

    async fn open(&self) -> Result<(Connection, Channel, lapin::Consumer), lapin::Error> {
        let props =
            ConnectionProperties::default().with_connection_name(self.spec.tag.as_str().into());
        let connection = crate::connect(&self.url, props).await?;
        let channel = connection.create_channel().await?;
        self.topology.declare(&channel).await?;
        channel
            .basic_qos(self.spec.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.spec.queue.as_str().into(),
                self.spec.tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel, consumer))
    }

    async fn consume<H: Handler>(
        &self,
        channel: &Channel,
        mut consumer: lapin::Consumer,
        handler: Arc<H>,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let permits = Arc::new(Semaphore::new(self.spec.concurrency.max(1)));
        let mut running = JoinSet::new();
        let pause = Pause::default();
        let mut down = pause.watch();
        let cancel = || async {
            let _ = channel
                .basic_cancel(self.spec.tag.as_str().into(), BasicCancelOptions::default())
                .await;
        };
        let ended = 'session: loop {
            // A free handler slot first, so nothing is taken that could not start at once.
            let permit = loop {
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => break p,
                        Err(_) => break 'session Ended::Lost("handler limit closed".into()),
                    },
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    _ = stop.changed() => {
                        cancel().await;
                        break 'session Ended::Stopped;
                    }
                }
            };
            let delivery = loop {
                // While a dependency is away, take nothing new: the handlers holding messages
                // retry, and the first that gets through resumes consumption. With none left
                // holding one, the next message is the probe.
                if pause.is_down() && !running.is_empty() {
                    tracing::warn!(queue = %self.spec.queue, "a dependency is away: holding the messages in hand and taking no new ones");
                    while pause.is_down() && !running.is_empty() {
                        tokio::select! {
                            _ = down.changed() => {}
                            Some(_) = running.join_next() => {}
                            _ = stop.changed() => {
                                cancel().await;
                                break 'session Ended::Stopped;
                            }
                        }
                    }
                    tracing::info!(queue = %self.spec.queue, "taking messages again");
                }
                down.borrow_and_update();
                tokio::select! {
                    next = consumer.next() => match next {
                        None => break 'session Ended::Lost("the broker cancelled the consumer".into()),
                        Some(Err(e)) => break 'session Ended::Lost(e.to_string()),
                        Some(Ok(d)) => break d,
                    },
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    // A handler found its dependency away meanwhile: look at the pause again.
                    _ = down.changed() => {}
                    _ = stop.changed() => {
                        cancel().await;
                        break 'session Ended::Stopped;
                    }
                }
            };
            self.head.saw(&delivery);
            let handler = handler.clone();
            let pause = pause.clone();
            let stop = stop.clone();
            let retry = self.retry;
            let limit = self.in_place_limit;
            let queue = self.spec.queue.clone();
            let live = channel.clone();
            running.spawn(async move {
                // From the second try on, the handler sees the message as a redelivery: its
                // work may have been done in part already.
                let again = Delivery {
                    delivery_tag: delivery.delivery_tag,
                    exchange: delivery.exchange.clone(),
                    routing_key: delivery.routing_key.clone(),
                    redelivered: true,
                    properties: delivery.properties.clone(),
                    data: delivery.data.clone(),
                    acker: delivery.acker.clone(),
                };
                let mut tries = 0u32;
                let settled = work(
                    || {
                        tries += 1;
                        handler.handle(if tries == 1 { &delivery } else { &again })
                    },
                    &pause,
                    retry,
                    limit,
                    stop,
                    || live.status().connected(),
                )
                .await;
                settle(&queue, &delivery, settled).await;
                drop(permit);
            });
        };
        // Handlers in progress finish and settle their messages before the channel closes.
        while running.join_next().await.is_some() {}
        ended
    }
}

async fn settle(queue: &str, delivery: &Delivery, settled: Settle) {
    let result = match settled {
        Settle::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Settle::Reject => {
            tracing::error!(
                queue,
                "a message could not be processed; it waits in limbo and comes back"
            );
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
        }
        Settle::GiveBack => {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
        Settle::Abandon => return,
    };
    if let Err(e) = result {
        // The connection went away: the broker redelivers the message (at least once).
        tracing::warn!(queue, error = %e, ?settled, "could not settle a message; it will be redelivered");
    }
}

/// An estimate of the age in seconds of the oldest message in a queue holding `depth` ready
/// messages, at `now` (all times in milliseconds since the Unix epoch). Messages leave a queue
/// from its head, in the order they reached it, so the head reached the queue no earlier than
/// the last message a consumer took (`last_taken`) nor than the last time the queue was seen
/// empty (`last_empty`): the estimate is the time since the later of the two, an upper bound
/// that is close while a consumer takes messages and keeps growing while nothing takes any.
/// Knowing neither, it counts from when the queue was first seen (`first_seen`).
pub fn oldest_age(
    depth: u32,
    last_taken: Option<i64>,
    last_empty: Option<i64>,
    first_seen: i64,
    now: i64,
) -> f64 {
    if depth == 0 {
        return 0.0;
    }
    let from = match (last_taken, last_empty) {
        (None, None) => first_seen,
        (a, b) => a.max(b).unwrap_or(first_seen),
    };
    // Stamps come from other hosts' clocks: a stamp a little ahead is read as "just now".
    (now.saturating_sub(from).max(0) as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn fast() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(1))
            .with_max_delay(Duration::from_millis(4))
            .without_max_times()
    }

    /// An attempt function that answers `script` in turn, then `Ack`; counts its calls.
    fn scripted(script: Vec<Outcome>) -> (Arc<Mutex<Vec<Outcome>>>, Arc<AtomicI64>) {
        let mut s = script;
        s.reverse();
        (Arc::new(Mutex::new(s)), Arc::new(AtomicI64::new(0)))
    }

    async fn run_script(
        script: Vec<Outcome>,
        pause: &Pause,
        backoff: ExponentialBuilder,
        stop: watch::Receiver<bool>,
        alive: impl Fn() -> bool,
    ) -> (Settle, i64) {
        let (left, calls) = scripted(script);
        let settled = work(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                let next = left.lock().ok().and_then(|mut l| l.pop());
                async move { next.unwrap_or(Outcome::Ack) }
            },
            pause,
            backoff,
            IN_PLACE_LIMIT,
            stop,
            alive,
        )
        .await;
        (settled, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_retry_is_made_in_place_until_it_gets_through() {
        let pause = Pause::default();
        let (_stop, stopped) = watch::channel(false);
        let script = vec![Outcome::Retry, Outcome::Retry, Outcome::Ack];
        let (settled, calls) = run_script(script, &pause, fast(), stopped, || true).await;
        assert_eq!(settled, Settle::Ack);
        assert_eq!(calls, 3);
        assert!(!pause.is_down(), "the success cleared the shared state");
    }

    #[tokio::test]
    async fn outcomes_map_to_settlements() {
        let (_stop, stopped) = watch::channel(false);
        for (outcome, want) in [
            (Outcome::Ack, Settle::Ack),
            (Outcome::Drop, Settle::Ack),
            (Outcome::DeadLetter, Settle::Reject),
        ] {
            let pause = Pause::default();
            pause.failing();
            let (settled, calls) =
                run_script(vec![outcome], &pause, fast(), stopped.clone(), || true).await;
            assert_eq!((settled, calls), (want, 1), "{outcome:?}");
            assert!(
                !pause.is_down(),
                "{outcome:?} means the dependency answered"
            );
        }
    }

    #[tokio::test]
    async fn shutdown_hands_a_waiting_message_back_at_once() {
        let pause = Pause::default();
        let (stop, stopped) = watch::channel(false);
        let slow = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(60))
            .without_max_times();
        let waiting = run_script(vec![Outcome::Retry; 100], &pause, slow, stopped, || true);
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(pause.is_down(), "the retry marked the dependency down");
            let _ = stop.send(true);
        };
        let ((settled, calls), ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(waiting, stopper)
        })
        .await
        .expect("not blocked by the backoff");
        assert_eq!((settled, calls), (Settle::GiveBack, 1));
    }

    #[tokio::test]
    async fn a_lost_channel_ends_the_wait_without_settling() {
        let pause = Pause::default();
        let (_stop, stopped) = watch::channel(false);
        let (settled, calls) =
            run_script(vec![Outcome::Retry; 100], &pause, fast(), stopped, || false).await;
        assert_eq!((settled, calls), (Settle::Abandon, 1));
    }

    #[tokio::test]
    async fn another_handlers_success_wakes_a_waiting_retry() {
        let pause = Pause::default();
        let (_stop, stopped) = watch::channel(false);
        let slow = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(60))
            .without_max_times();
        let waiting = run_script(vec![Outcome::Retry], &pause, slow, stopped, || true);
        let other = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(pause.recovered(), "the waiting handler had marked it down");
        };
        let ((settled, calls), ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(waiting, other)
        })
        .await
        .expect("woken before its 60 s backoff");
        assert_eq!((settled, calls), (Settle::Ack, 2));
    }

    #[tokio::test]
    async fn a_message_retried_past_the_limit_is_dead_lettered() {
        let pause = Pause::default();
        let (_stop, stopped) = watch::channel(false);
        let (left, calls) = scripted(vec![Outcome::Retry; 1000]);
        let settled = work(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                let next = left.lock().ok().and_then(|mut l| l.pop());
                async move { next.unwrap_or(Outcome::Ack) }
            },
            &pause,
            fast(),
            Duration::from_millis(30),
            stopped,
            || true,
        )
        .await;
        assert_eq!(settled, Settle::Reject);
        assert!(calls.load(Ordering::SeqCst) > 1);
    }

    #[test]
    fn the_pause_reports_changes_only() {
        let pause = Pause::default();
        assert!(!pause.is_down());
        assert!(pause.failing());
        assert!(!pause.failing(), "already down");
        assert!(pause.recovered());
        assert!(!pause.recovered(), "already up");
    }

    #[test]
    fn the_oldest_age_is_bounded_by_the_last_taken_or_the_last_empty_look() {
        let s = 1_000;
        assert_eq!(oldest_age(0, Some(0), None, 0, 100 * s), 0.0, "empty");
        assert_eq!(oldest_age(5, Some(90 * s), None, 0, 100 * s), 10.0);
        assert_eq!(
            oldest_age(5, Some(10 * s), Some(95 * s), 0, 100 * s),
            5.0,
            "seen empty after the last take"
        );
        assert_eq!(
            oldest_age(5, None, None, 40 * s, 100 * s),
            60.0,
            "first seen"
        );
        assert_eq!(
            oldest_age(5, Some(101 * s), None, 0, 100 * s),
            0.0,
            "clock skew"
        );
    }
}
