//! Group commit for the fan-out: the events arriving together share their Postgres round trips.
//! One task per kind of write takes whatever is queued when it is free (up to a bound), runs one
//! batched statement for all of it, and answers each caller. Under light load a batch is one
//! event and nothing waits; under heavy load the cost per event falls.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};
use waybill_store::StoreError;

type Job<T, R, E> = (T, oneshot::Sender<Result<R, BatchError<E>>>);

/// Why a batched call has no result of its own.
#[derive(Debug, thiserror::Error)]
pub enum BatchError<E> {
    /// The task is gone (the process is shutting down).
    #[error("the batch writer has stopped")]
    Stopped,
    /// The batch's run panicked or answered for fewer items than it was given.
    #[error("a batch of {0} was not written")]
    Lost(usize),
    /// The run's own error for this item.
    #[error(transparent)]
    Item(E),
}

impl BatchError<Arc<StoreError>> {
    /// Whether calling again may succeed: not when Postgres refused the item itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            BatchError::Item(e) => e.is_retryable(),
            BatchError::Stopped | BatchError::Lost(_) => true,
        }
    }
}

impl<T, R, E> Clone for Batcher<T, R, E> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

/// A handle to one batching task.
pub struct Batcher<T, R, E> {
    tx: mpsc::Sender<Job<T, R, E>>,
}

impl<T: Send + 'static, R: Send + 'static, E: Send + 'static> Batcher<T, R, E> {
    /// Starts the task. `run` gets a batch and answers with one result per item, in order. The
    /// task ends once every handle is dropped.
    pub fn start<F, Fut>(max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, E>>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Job<T, R, E>>(max_batch * 4);
        let run = Arc::new(run);
        tokio::spawn(async move {
            let mut jobs: Vec<Job<T, R, E>> = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut jobs, max_batch).await > 0 {
                let (items, replies): (Vec<T>, Vec<_>) = jobs.drain(..).unzip();
                let n = items.len();
                // Its own task, so a panic in one batch fails that batch's callers only, and
                // the writer carries on with the next.
                let mut results = match tokio::spawn(run(items)).await {
                    Ok(results) => results.into_iter(),
                    Err(e) => {
                        tracing::error!(error = %e, "a batch write failed unexpectedly");
                        Vec::new().into_iter()
                    }
                };
                for reply in replies {
                    let r = match results.next() {
                        Some(r) => r.map_err(BatchError::Item),
                        None => Err(BatchError::Lost(n)),
                    };
                    let _ = reply.send(r);
                }
            }
        });
        Self { tx }
    }

    /// Queues `item` and waits for its batch's result.
    pub async fn call(&self, item: T) -> Result<R, BatchError<E>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| BatchError::Stopped)?;
        answer.await.map_err(|_| BatchError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("postgres is away")]
    struct Away;

    #[tokio::test]
    async fn every_caller_gets_its_own_result_and_batches_form_under_load() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let doubler = Batcher::start(8, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(items.len());
                tokio::task::yield_now().await;
                items.into_iter().map(|i| Ok::<_, Away>(i * 2)).collect()
            }
        });
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let d = doubler.clone();
                tokio::spawn(async move { (i, d.call(i).await) })
            })
            .collect();
        for c in calls {
            let (i, r) = c.await.unwrap();
            assert_eq!(r.ok(), Some(i * 2));
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|n| *n <= 8));
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_the_writer_goes_on() {
        let picky: Batcher<u32, u32, Away> = Batcher::start(1, |items: Vec<u32>| async move {
            assert!(items[0] != 13, "unlucky");
            items.into_iter().map(Ok).collect()
        });
        assert!(matches!(picky.call(13).await, Err(BatchError::Lost(1))));
        assert_eq!(picky.call(7).await.ok(), Some(7));
    }

    #[tokio::test]
    async fn a_failed_item_fails_its_caller() {
        let failing: Batcher<u32, u32, Away> = Batcher::start(4, |items: Vec<u32>| async move {
            items.iter().map(|_| Err(Away)).collect()
        });
        assert!(matches!(failing.call(1).await, Err(BatchError::Item(Away))));
    }
}
