//! Group commit for the fan-out: the events arriving together share their Postgres round trips.
//! One task per kind of write takes whatever is queued when it is free (up to a bound), runs one
//! batched statement for all of it, and answers each caller. Under light load a batch is one
//! event and nothing waits; under heavy load the cost per event falls.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};

type Job<T, R> = (T, oneshot::Sender<Result<R, String>>);

/// A handle to one batching task.
pub struct Batcher<T, R> {
    tx: mpsc::Sender<Job<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the task. `run` gets a batch and answers with one result per item, in order. The
    /// task ends once every handle is dropped.
    pub fn start<F, Fut>(max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, String>>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Job<T, R>>(max_batch * 4);
        let run = Arc::new(run);
        tokio::spawn(async move {
            let mut jobs: Vec<Job<T, R>> = Vec::with_capacity(max_batch);
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
                    let r = results
                        .next()
                        .unwrap_or_else(|| Err(format!("a batch of {n} was not written")));
                    let _ = reply.send(r);
                }
            }
        });
        Self { tx }
    }

    /// Queues `item` and waits for its batch's result.
    pub async fn call(&self, item: T) -> Result<R, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| "the batch writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the batch writer has stopped".to_owned())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_caller_gets_its_own_result_and_batches_form_under_load() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let doubler = Batcher::start(8, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(items.len());
                tokio::task::yield_now().await;
                items.into_iter().map(|i| Ok(i * 2)).collect()
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
            assert_eq!(r, Ok(i * 2));
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|n| *n <= 8));
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_the_writer_goes_on() {
        let picky: Batcher<u32, u32> = Batcher::start(1, |items: Vec<u32>| async move {
            assert!(items[0] != 13, "unlucky");
            items.into_iter().map(Ok).collect()
        });
        assert!(picky.call(13).await.is_err());
        assert_eq!(picky.call(7).await, Ok(7));
    }

    #[tokio::test]
    async fn a_failed_item_fails_its_caller() {
        let failing: Batcher<u32, u32> = Batcher::start(4, |items: Vec<u32>| async move {
            items
                .iter()
                .map(|_| Err("postgres is away".to_owned()))
                .collect()
        });
        assert_eq!(failing.call(1).await, Err("postgres is away".to_owned()));
    }
}
