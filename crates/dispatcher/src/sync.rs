//! Keeps the index current: binds this replica's exclusive queue on the subscription change feed
//! first, then loads every subscription from Postgres, then applies the changes that arrive; a
//! periodic full resync repairs anything missed. After a lost broker connection it binds again
//! and resyncs, since changes published meanwhile went nowhere.

use std::{sync::Arc, time::Duration};

use backon::Retryable;
use futures_util::StreamExt;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tokio::sync::watch;
use tracing::Instrument;
use waybill_bus::{Topology, reconnect_backoff};
use waybill_domain::{WebhookId, change::SubscriptionChange};
use waybill_store::{Cipher, PgPool, StoreError, webhooks};

use crate::{
    index::{Index, Target, TargetError},
    metrics::DispatchMetrics,
};

/// Why the change feed stopped delivering.
#[derive(Debug, thiserror::Error)]
enum FeedLost {
    #[error("the change consumer failed")]
    Consumer(#[source] lapin::Error),
    #[error("the broker cancelled the change consumer")]
    Cancelled,
}

/// Why one subscription could not be read into the index.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("cannot read the subscription")]
    Store(#[from] StoreError),
    /// What Postgres holds cannot be delivered with (it does not decrypt, or a pattern is bad).
    #[error("the stored subscription is unusable: {0}")]
    Unusable(#[source] TargetError),
}

impl RefreshError {
    /// Whether reading again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            RefreshError::Store(e) => e.is_retryable(),
            RefreshError::Unusable(_) => false,
        }
    }
}

/// Subscriptions read per query while resyncing.
const PAGE: i64 = 1_000;

/// What the index sync needs.
pub struct IndexSync {
    pub index: Index,
    pub pool: PgPool,
    pub cipher: Arc<Cipher>,
    pub broker_url: String,
    pub topology: Topology,
    pub resync_every: Duration,
    pub metrics: DispatchMetrics,
    /// Turns true once the first full load is done.
    pub loaded: watch::Sender<bool>,
}

impl IndexSync {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let backoff = reconnect_backoff();
        loop {
            let opened = tokio::select! {
                o = (|| self.bind()).retry(backoff).notify(|e, wait| {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot bind the change feed yet");
                }) => o,
                _ = stop.changed() => return,
            };
            let Ok((connection, _channel, mut changes)) = opened else {
                continue;
            };
            tokio::select! {
                _ = self.resync_until_done() => {}
                _ = stop.changed() => return,
            }
            let _ = self.loaded.send(true);
            let mut timer = tokio::time::interval(self.resync_every);
            timer.reset();
            let why = loop {
                tokio::select! {
                    next = changes.next() => match next {
                        Some(Ok(message)) => {
                            // The change continues the trace of the relay batch that sent it.
                            let span = waybill_trace::span!(
                                "waybill.sync",
                                otel.kind = "consumer",
                                messaging.system = "rabbitmq",
                                messaging.operation.type = "process",
                                messaging.destination.name = self.topology.subscriptions_exchange(),
                            );
                            if waybill_trace::on() {
                                waybill_trace::set_parent(&span, waybill_bus::traceparent(&message).as_deref());
                            }
                            self.apply(&message.data).instrument(span).await
                        }
                        Some(Err(e)) => break FeedLost::Consumer(e),
                        None => break FeedLost::Cancelled,
                    },
                    _ = timer.tick() => self.resync_until_done().await,
                    _ = stop.changed() => {
                        let _ = connection.close(200, "stopping".into()).await;
                        return;
                    }
                }
            };
            tracing::warn!(
                reason = &why as &dyn std::error::Error,
                "change feed lost; binding again"
            );
            let _ = connection.close(200, "reconnecting".into()).await;
        }
    }

    /// A connection with an exclusive, server-named queue bound to the change feed, consuming.
    async fn bind(&self) -> Result<(Connection, Channel, lapin::Consumer), lapin::Error> {
        let props = ConnectionProperties::default().with_connection_name("waybill-index".into());
        let connection = waybill_bus::connect(&self.broker_url, props).await?;
        let channel = connection.create_channel().await?;
        // Only the exchange matters here; the work queues are declared by their consumers.
        channel
            .exchange_declare(
                self.topology.subscriptions_exchange().as_str().into(),
                ExchangeKind::Fanout,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().as_str().into(),
                self.topology.subscriptions_exchange().as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "waybill-index".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel, consumer))
    }

    async fn apply(&self, body: &[u8]) {
        let change: SubscriptionChange = match serde_json::from_slice(body) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed subscription change");
                return;
            }
        };
        match &change.subscription {
            // Ids are never reused: a deletion is final, whatever revision arrives later.
            None => {
                self.index.remove(change.webhook_id, i64::MAX);
            }
            Some(snapshot) => match Target::from_snapshot(snapshot, &self.cipher) {
                Ok(t) => {
                    self.index.upsert(t);
                }
                Err(e) => {
                    // Cannot deliver with what the message carries: read it from Postgres.
                    tracing::warn!(webhook_id = %change.webhook_id, error = %e, "change unusable; reading the subscription");
                    if let Err(e) =
                        refresh_one(&self.index, &self.pool, &self.cipher, change.webhook_id).await
                    {
                        tracing::warn!(webhook_id = %change.webhook_id, error = &e as &dyn std::error::Error, "could not read the subscription; the next resync will");
                    }
                }
            },
        }
        self.metrics.index_size.set(self.index.len() as i64);
    }

    async fn resync_until_done(&self) {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.resync().await {
                Ok(n) => {
                    tracing::info!(subscriptions = n, "subscription index loaded from Postgres");
                    self.metrics.index_size.set(self.index.len() as i64);
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        retry_in_ms = wait.as_millis() as u64,
                        "index resync failed"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn resync(&self) -> Result<usize, StoreError> {
        let before = self.index.ids();
        let mut fresh = Vec::new();
        let mut after: Option<WebhookId> = None;
        let mut conn = waybill_store::conn(&self.pool).await?;
        loop {
            let page = webhooks::snapshots(&mut conn, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() as i64 == PAGE;
            for s in &page {
                match Target::from_snapshot(s, &self.cipher) {
                    Ok(t) => fresh.push(t),
                    Err(e) => {
                        tracing::error!(webhook_id = %s.id, error = %e, "subscription cannot be indexed; it receives nothing")
                    }
                }
            }
            if !full {
                break;
            }
        }
        let n = fresh.len();
        self.index.resync(fresh, &before);
        Ok(n)
    }
}

/// Reads one subscription from Postgres into the index (or removes it when it is gone);
/// returns what the index now holds for it.
pub async fn refresh_one(
    index: &Index,
    pool: &PgPool,
    cipher: &Cipher,
    id: WebhookId,
) -> Result<Option<Arc<Target>>, RefreshError> {
    let mut conn = waybill_store::conn(pool).await?;
    match webhooks::snapshot(&mut conn, id)
        .await
        .map_err(StoreError::from)?
    {
        None => {
            index.remove(id, i64::MAX);
        }
        Some(s) => match Target::from_snapshot(&s, cipher) {
            Ok(t) => {
                index.upsert(t);
            }
            Err(e) => return Err(RefreshError::Unusable(e)),
        },
    }
    Ok(index.get(id))
}
