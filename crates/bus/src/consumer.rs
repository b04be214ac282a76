//! The consumer loop every Waybill consumer runs: manual acks, a bounded prefetch, a limit on
//! concurrent handlers, reconnection with exponential backoff (also when the broker cancels the
//! consumer, e.g. because its queue was deleted), and a graceful drain on shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
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

use crate::Topology;

/// How long to wait between attempts to reach the broker: 100 ms doubling to 5 s, jittered,
/// for as long as it takes.
pub fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// What becomes of a message once its handler is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done with: remove it from the queue.
    Ack,
    /// Not done: put it back for another attempt.
    Requeue,
    /// Remove it without processing (the handler has already parked it elsewhere, such as the
    /// invalid queue).
    Drop,
}

/// Processes one message. Runs concurrently, up to the consumer's limit.
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

enum Ended {
    Stopped,
    Lost(String),
}

/// A consumer of one queue, reconnecting until told to stop.
pub struct Consumer {
    url: String,
    topology: Topology,
    spec: ConsumerSpec,
}

impl Consumer {
    pub fn new(url: impl Into<String>, topology: Topology, spec: ConsumerSpec) -> Self {
        Self {
            url: url.into(),
            topology,
            spec,
        }
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
                tokio::select! {
                    next = consumer.next() => match next {
                        None => break 'session Ended::Lost("the broker cancelled the consumer".into()),
                        Some(Err(e)) => break 'session Ended::Lost(e.to_string()),
                        Some(Ok(d)) => break d,
                    },
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    _ = stop.changed() => {
                        cancel().await;
                        break 'session Ended::Stopped;
                    }
                }
            };
            let handler = handler.clone();
            running.spawn(async move {
                let outcome = handler.handle(&delivery).await;
                settle(&delivery, outcome).await;
                drop(permit);
            });
        };
        // Handlers in progress finish and settle their messages before the channel closes.
        while running.join_next().await.is_some() {}
        ended
    }
}

async fn settle(delivery: &Delivery, outcome: Outcome) {
    let result = match outcome {
        Outcome::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Outcome::Requeue => {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
        Outcome::Drop => {
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
        }
    };
    if let Err(e) = result {
        // The connection went away: the broker redelivers the message (at least once).
        tracing::warn!(error = %e, ?outcome, "could not settle a message; it will be redelivered");
    }
}
