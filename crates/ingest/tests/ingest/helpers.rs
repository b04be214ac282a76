//! `TestIngest`: the ingest on a testkit stack, and a look at its dispatch queue.

use waybill_ingest::Application;
use waybill_runtime::Settings;
use waybill_testkit::Stack;
pub use waybill_testkit::example;

waybill_testkit::suite_stack! {
    /// A running ingest with its own database and broker prefix, its queues declared.
    pub struct TestIngest;
}

impl TestIngest {
    pub async fn spawn() -> TestIngest {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestIngest {
        TestIngest(
            Stack::builder()
                .settings(tweak)
                .with_ingest(Application::build)
                .start()
                .await,
        )
    }

    fn dispatch_queue(&self) -> String {
        self.settings.topology().unwrap().dispatch_queue()
    }

    /// How many messages wait on the dispatch queue.
    pub async fn queued(&self) -> u32 {
        self.queue_len(&self.dispatch_queue()).await
    }

    /// Takes every message waiting on the dispatch queue; returns their message ids in order.
    pub async fn take_queued_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..self.queued().await {
            let message = self.next_message().await;
            ids.push(
                message
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .to_string(),
            );
        }
        ids
    }

    /// The next message on the dispatch queue.
    pub async fn next_message(&self) -> lapin::message::Delivery {
        self.0.next_message(&self.dispatch_queue()).await
    }
}
