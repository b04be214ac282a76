//! Writes delivery states and attempts to Postgres in batches (group commit): whatever is queued
//! when the writer is free goes out in one transaction, so the cost per delivery falls as the
//! load rises. A caller waits for its batch to commit before acking its message, so no final
//! status is lost if the process dies: at worst the attempt is made again.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use waybill_store::{PgPool, StoreError, deliveries::DeliveryRecord};

/// Most records written in one transaction.
const MAX_BATCH: usize = 500;

type Job = (DeliveryRecord, oneshot::Sender<()>);

/// A handle to the writer task.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
}

/// The writer task stopped (the process is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the delivery recorder has stopped")]
pub struct RecorderStopped;

impl Recorder {
    /// Starts the writer; it ends once every handle is dropped and the queue is written.
    pub fn start(pool: PgPool) -> Recorder {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_loop(pool, rx));
        Recorder { tx }
    }

    /// Queues `record` and waits until it is committed.
    pub async fn record(&self, record: DeliveryRecord) -> Result<(), RecorderStopped> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send((record, done))
            .await
            .map_err(|_| RecorderStopped)?;
        committed.await.map_err(|_| RecorderStopped)
    }
}

async fn write_loop(pool: PgPool, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let records: Vec<DeliveryRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
        write_until_done(&pool, &records).await;
        for (_, done) in batch.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes `records`, waiting out Postgres being away. A batch Postgres refuses for its content
/// is written record by record, so one bad record cannot hold the others (or every later
/// batch) back; a record refused on its own is logged and let go, since writing it again would
/// never succeed.
async fn write_until_done(pool: &PgPool, records: &[DeliveryRecord]) {
    let mut wait = Duration::from_millis(100);
    loop {
        match write(pool, records).await {
            Ok(()) => return,
            Err(e) if e.is_retryable() => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    records = records.len(),
                    retry_in_ms = wait.as_millis() as u64,
                    "cannot record deliveries yet"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) if records.len() > 1 => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    records = records.len(),
                    "batch refused; recording one by one"
                );
                for r in records {
                    Box::pin(write_until_done(pool, std::slice::from_ref(r))).await;
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, delivery_id = %records.first().map(|r| r.id).unwrap_or_default(), "delivery record refused by Postgres; not recorded");
                return;
            }
        }
    }
}

async fn write(pool: &PgPool, records: &[DeliveryRecord]) -> Result<(), StoreError> {
    let mut conn = waybill_store::conn(pool).await?;
    waybill_store::deliveries::record(&mut conn, records).await?;
    Ok(())
}
