//! The retention job: every `retention.interval`, deletes events, deliveries, attempts and the
//! records of refused events older than `retention.period`, a batch at a time until a pass
//! finds nothing more. Replicas may run
//! it together; each batch deletes different rows or none.

use std::time::Duration;

use prometheus::IntCounterVec;
use tokio::sync::watch;
use waybill_store::{PgPool, StoreError, invalid_events, retention};

/// What the job needs.
pub struct Retention {
    pub pool: PgPool,
    pub period: Duration,
    pub interval: Duration,
    pub batch_size: i64,
    /// Rows deleted, by table.
    pub purged: IntCounterVec,
}

impl Retention {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.pass(&mut stop).await {
                tracing::warn!(error = %e, "retention pass failed; the next one continues");
            }
        }
    }

    async fn pass(&self, stop: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(self.period).unwrap_or(chrono::Duration::days(30));
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let mut conn = waybill_store::conn(&self.pool).await?;
            let purged = retention::purge_batch(&mut conn, cutoff, self.batch_size).await?;
            let invalid = invalid_events::purge_batch(&mut conn, cutoff, self.batch_size).await?;
            drop(conn);
            for (table, n) in [
                ("delivery_attempts", purged.attempts),
                ("deliveries", purged.deliveries),
                ("events", purged.events),
                ("invalid_events", invalid),
            ] {
                self.purged.with_label_values(&[table]).inc_by(n as u64);
            }
            let most = purged
                .attempts
                .max(purged.deliveries)
                .max(purged.events)
                .max(invalid);
            if most < self.batch_size as usize {
                if most > 0 || purged != Default::default() {
                    tracing::info!(?purged, invalid_events = invalid, "retention pass done");
                }
                return Ok(());
            }
            // Leave room for the hot path between batches.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
