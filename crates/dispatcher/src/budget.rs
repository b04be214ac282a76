//! A byte budget in front of a consumer's handler: a message is processed once its size fits
//! in what the messages in progress leave of the budget. The broker's prefetch bounds how many
//! messages a replica holds, not how big they are; a handler's copies of a message (parsed,
//! re-encoded for the receiver, in the HTTP request) take several times its size, so without
//! this a burst of big messages would take memory in proportion to the prefetch.

use lapin::message::Delivery;
use tokio::sync::Semaphore;
use waybill_bus::{Handler, Outcome};

/// Wraps a handler with a budget of `kib` KiB of message bodies in progress at once.
pub struct Budgeted<H> {
    inner: std::sync::Arc<H>,
    budget: Semaphore,
    kib: usize,
}

impl<H> Budgeted<H> {
    pub fn new(inner: std::sync::Arc<H>, kib: usize) -> Self {
        let kib = kib.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner,
            budget: Semaphore::new(kib),
            kib,
        }
    }
}

/// Messages up to this size go ahead without the budget: the delivery concurrency bounds what
/// they take (128 of them, copies included, stay within tens of MiB), and they never queue
/// behind big ones of another tenant on the budget's first-come-first-served semaphore.
const SMALL: usize = 64 * 1024;

impl<H: Handler> Handler for Budgeted<H> {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        if delivery.data.len() <= SMALL {
            return self.inner.handle(delivery).await;
        }
        // A message bigger than the whole budget waits for all of it, so it runs alone.
        let kib = delivery.data.len().div_ceil(1024).clamp(1, self.kib);
        // The semaphore is never closed; were it, the message would go ahead unbudgeted.
        let _permit = self
            .budget
            .acquire_many(u32::try_from(kib).unwrap_or(u32::MAX))
            .await
            .ok();
        self.inner.handle(delivery).await
    }
}
