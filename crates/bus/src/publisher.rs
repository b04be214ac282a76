//! A broker handle that connects lazily, reconnects after any failure, and publishes persistent
//! messages that count as sent only once the broker confirmed them.

use std::{sync::Arc, time::Duration};

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    message::Delivery,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use tokio::sync::Mutex;

use crate::Topology;

/// Why a publish did not count as done.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the broker is unreachable: {0}")]
    Unreachable(String),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker could not route the message to any queue")]
    Unroutable,
    #[error("no confirm from the broker within {0:?}")]
    Timeout(Duration),
    #[error("broker error: {0}")]
    Protocol(#[from] lapin::Error),
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub message_id: Option<&'a str>,
    pub headers: Vec<(&'a str, String)>,
    /// Ask the broker to return the message when no queue takes it.
    pub mandatory: bool,
}

/// Header of every message Waybill publishes: when (milliseconds since the Unix epoch) it
/// reaches a work queue: its publish time, or for a message published to a delay queue the
/// time its delay ends, or for a message sent back from limbo the time it was sent back.
pub const QUEUED_AT_HEADER: &str = "waybill-queued-at";

/// Headers the broker adds when it dead-letters or redelivers a message; a message published
/// again leaves them behind, so its history starts afresh.
const BROKER_HEADERS: [&str; 7] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// Milliseconds since the Unix epoch, now plus `ahead`.
pub(crate) fn epoch_ms(ahead: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from((now + ahead).as_millis()).unwrap_or(i64::MAX)
}

/// One message ready to go on the wire.
struct Raw<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    body: &'a [u8],
    mandatory: bool,
    properties: BasicProperties,
}

struct Live {
    // Kept so the connection lives as long as its channel.
    _connection: Connection,
    channel: Channel,
}

/// The process's connection to RabbitMQ.
#[derive(Clone)]
pub struct Broker {
    url: String,
    topology: Topology,
    live: Arc<Mutex<Option<Live>>>,
    confirm_timeout: Duration,
}

impl Broker {
    /// A handle; nothing connects until first use.
    pub fn new(url: impl Into<String>, topology: Topology) -> Self {
        Self {
            url: url.into(),
            topology,
            live: Arc::new(Mutex::new(None)),
            confirm_timeout: Duration::from_secs(10),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A confirming channel, connecting (and declaring the topology) when there is none.
    async fn channel(&self) -> Result<Channel, BusError> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref()
            && l.channel.status().connected()
        {
            return Ok(l.channel.clone());
        }
        *live = None;
        let props = ConnectionProperties::default().with_connection_name("waybill".into());
        let connection =
            tokio::time::timeout(Duration::from_secs(5), crate::connect(&self.url, props))
                .await
                .map_err(|_| BusError::Unreachable("timed out connecting".into()))?
                .map_err(|e| BusError::Unreachable(e.to_string()))?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.topology.declare(&channel).await?;
        tracing::info!("connected to the broker");
        *live = Some(Live {
            _connection: connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    /// Forgets the current connection so the next use opens a new one.
    async fn reset(&self) {
        if let Some(l) = self.live.lock().await.take() {
            let _ = l.channel.close(200, "reset".into()).await;
        }
    }

    /// Whether a connection is open or can be opened now.
    pub async fn ping(&self) -> Result<(), BusError> {
        self.channel().await.map(|_| ())
    }

    /// Publishes one persistent JSON message and waits for the broker's confirm.
    pub async fn publish(&self, msg: &Outgoing<'_>) -> Result<(), BusError> {
        self.publish_many(std::slice::from_ref(msg)).await
    }

    /// Publishes persistent JSON messages back to back on one channel, then waits for every
    /// confirm. `Ok` only when the broker confirmed them all. On an error some may have been
    /// queued already: callers retry with the same message ids, and consumers drop duplicates.
    pub async fn publish_many(&self, msgs: &[Outgoing<'_>]) -> Result<(), BusError> {
        let result = self.publish_many_once(msgs).await;
        self.reset_after(&result).await;
        result
    }

    /// Drops the channel after an error a new one may not meet. A nack too: after a cluster
    /// node is lost, a channel opened meanwhile can go on nacking every publish to a quorum
    /// queue whose leader moved; a new one does not.
    async fn reset_after(&self, result: &Result<(), BusError>) {
        if matches!(
            result,
            Err(BusError::Unreachable(_)
                | BusError::Protocol(_)
                | BusError::Timeout(_)
                | BusError::Nacked)
        ) {
            self.reset().await;
        }
    }

    /// Publishes a copy of a consumed message to `queue` (through the default exchange) and
    /// waits for the confirm: same body and properties (its `traceparent` included, so the copy
    /// stays in its trace), without the broker's dead-letter headers.
    pub async fn republish(&self, queue: &str, delivery: &Delivery) -> Result<(), BusError> {
        let mut properties = delivery.properties.clone();
        let mut headers = FieldTable::default();
        if let Some(old) = properties.headers() {
            for (k, v) in old.inner() {
                if !BROKER_HEADERS.contains(&k.as_str()) {
                    headers.insert(k.clone(), v.clone());
                }
            }
        }
        // Stamped afresh: back on its work queue it is behind whatever is there now, and the
        // queue's age estimate reads stamps in the order messages are taken.
        headers.insert(
            QUEUED_AT_HEADER.into(),
            AMQPValue::LongLongInt(epoch_ms(Duration::ZERO)),
        );
        properties = properties.with_headers(headers).with_delivery_mode(2);
        let raw = Raw {
            exchange: "",
            routing_key: queue,
            body: &delivery.data,
            mandatory: true,
            properties,
        };
        let result = self.send(std::slice::from_ref(&raw)).await;
        self.reset_after(&result).await;
        result
    }

    async fn publish_many_once(&self, msgs: &[Outgoing<'_>]) -> Result<(), BusError> {
        let raws: Vec<Raw<'_>> = msgs
            .iter()
            .map(|msg| {
                let mut headers = FieldTable::default();
                for (k, v) in &msg.headers {
                    headers.insert((*k).into(), AMQPValue::LongString(v.as_str().into()));
                }
                if !headers.contains_key(QUEUED_AT_HEADER) {
                    // A message for a delay queue reaches its work queue when the delay ends.
                    let ahead = if msg.exchange.is_empty() {
                        self.topology
                            .delay_of(msg.routing_key)
                            .unwrap_or(Duration::ZERO)
                    } else {
                        Duration::ZERO
                    };
                    headers.insert(
                        QUEUED_AT_HEADER.into(),
                        AMQPValue::LongLongInt(epoch_ms(ahead)),
                    );
                }
                let mut properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(headers);
                if let Some(id) = msg.message_id {
                    properties = properties.with_message_id(ShortString::from(id));
                }
                Raw {
                    exchange: msg.exchange,
                    routing_key: msg.routing_key,
                    body: msg.body,
                    mandatory: msg.mandatory,
                    properties,
                }
            })
            .collect();
        self.send(&raws).await
    }

    async fn send(&self, msgs: &[Raw<'_>]) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let confirm = channel
                .basic_publish(
                    msg.exchange.into(),
                    msg.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: msg.mandatory,
                        ..Default::default()
                    },
                    msg.body,
                    msg.properties.clone(),
                )
                .await?;
            confirms.push(confirm);
        }
        let confirmations = tokio::time::timeout(
            self.confirm_timeout,
            futures_util::future::join_all(confirms),
        )
        .await
        .map_err(|_| BusError::Timeout(self.confirm_timeout))?;
        for confirmation in confirmations {
            let confirmation = confirmation?;
            if confirmation.is_nack() {
                return Err(BusError::Nacked);
            }
            if confirmation.take_message().is_some() {
                return Err(BusError::Unroutable);
            }
        }
        Ok(())
    }
}
