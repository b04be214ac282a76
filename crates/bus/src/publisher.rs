//! A broker handle that connects lazily, reconnects after any failure, and publishes persistent
//! messages that count as sent only once the broker confirmed them.

use std::{sync::Arc, time::Duration};

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
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
        // A nack too: after a cluster node is lost, a channel opened meanwhile can go on
        // nacking every publish to a quorum queue whose leader moved; a new one does not.
        if matches!(
            result,
            Err(BusError::Unreachable(_)
                | BusError::Protocol(_)
                | BusError::Timeout(_)
                | BusError::Nacked)
        ) {
            self.reset().await;
        }
        result
    }

    async fn publish_many_once(&self, msgs: &[Outgoing<'_>]) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let mut headers = FieldTable::default();
            for (k, v) in &msg.headers {
                headers.insert((*k).into(), AMQPValue::LongString(v.as_str().into()));
            }
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_headers(headers);
            if let Some(id) = msg.message_id {
                props = props.with_message_id(ShortString::from(id));
            }
            let confirm = channel
                .basic_publish(
                    msg.exchange.into(),
                    msg.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: msg.mandatory,
                        ..Default::default()
                    },
                    msg.body,
                    props,
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
