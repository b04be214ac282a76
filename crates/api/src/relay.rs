//! The change-feed relay: publishes outbox rows to the subscriptions exchange with publisher
//! confirms, oldest first, and marks them published in the same transaction that claimed them.
//! A broker outage only delays the feed; the rows wait in Postgres.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use diesel_async::AsyncConnection;
use prometheus::IntGauge;
use tokio::sync::{Notify, watch};
use waybill_bus::{Broker, BusError, Outgoing, TRACEPARENT_HEADER};
use waybill_store::{PgPool, StoreError, outbox};

const BATCH: i64 = 100;
const IDLE_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Published rows are kept this long for inspection, then pruned.
const KEEP_PUBLISHED: chrono::TimeDelta = chrono::TimeDelta::hours(24);

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<diesel::result::Error> for RelayError {
    fn from(e: diesel::result::Error) -> Self {
        RelayError::Store(e.into())
    }
}

/// Runs until `stop` turns true, finishing the batch in hand.
pub async fn run(
    pool: PgPool,
    broker: Broker,
    wakeup: Arc<Notify>,
    backlog: IntGauge,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut last_prune = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        let result = drain(&pool, &broker).await;
        // The backlog is what operators watch during a broker outage, so it is measured either way.
        if let Ok(mut conn) = waybill_store::conn(&pool).await {
            if let Ok(n) = outbox::backlog(&mut conn).await {
                backlog.set(n);
            }
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = std::time::Instant::now();
                if let Err(e) = outbox::prune(&mut conn, Utc::now() - KEEP_PUBLISHED, 1000).await {
                    tracing::warn!(error = %e, "pruning published changes failed");
                }
            }
        }
        let pause = match result {
            Ok(n) if n as i64 == BATCH && !*stop.borrow() => continue,
            Ok(_) => {
                backoff = Duration::from_millis(200);
                IDLE_POLL
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "change feed relay cannot publish yet");
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Publishes one batch; returns how many rows it published.
async fn drain(pool: &PgPool, broker: &Broker) -> Result<usize, RelayError> {
    let mut conn = waybill_store::conn(pool).await?;
    let exchange = broker.topology().subscriptions_exchange();
    conn.transaction::<_, RelayError, _>(async |conn| {
        let pending = outbox::claim(conn, BATCH).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        // One span per relayed batch; each change carries its context to the dispatchers.
        let span = waybill_trace::span!(
            "waybill.relay",
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.destination.name = exchange.as_str(),
            messaging.batch.message_count = i64::try_from(pending.len()).unwrap_or(i64::MAX),
        );
        let traceparent = waybill_trace::onward(&span, None);
        let mut done = Vec::with_capacity(pending.len());
        for change in &pending {
            let body = serde_json::to_vec(&change.payload)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let kind = change
                .payload
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            let id = change
                .payload
                .get("webhook_id")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            let revision = change
                .payload
                .get("revision")
                .and_then(|r| r.as_i64())
                .unwrap_or_default();
            let message_id = format!("{id}:{revision}");
            broker
                .publish(&Outgoing {
                    exchange: &exchange,
                    routing_key: "",
                    body: &body,
                    message_id: Some(&message_id),
                    headers: match &traceparent {
                        Some(tp) => vec![
                            ("waybill-change-kind", kind),
                            (TRACEPARENT_HEADER, tp.clone()),
                        ],
                        None => vec![("waybill-change-kind", kind)],
                    },
                    // No dispatcher bound yet is fine: each loads a snapshot when it starts.
                    mandatory: false,
                })
                .await?;
            done.push(change.seq);
        }
        outbox::mark_published(conn, &done, Utc::now()).await?;
        drop(span);
        Ok(done.len())
    })
    .await
}
