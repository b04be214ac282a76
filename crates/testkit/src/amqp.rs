//! Looks at the test broker the way the suites check it: queue depths and message headers.

use lapin::{
    Channel,
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};

/// What a passive declare of `queue` answers (a missing queue fails the test).
async fn passive_declare(channel: &Channel, queue: &str) -> lapin::Queue {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
}

/// How many messages wait in `queue` (a passive declare: a missing queue fails the test).
pub async fn queue_depth(channel: &Channel, queue: &str) -> u32 {
    passive_declare(channel, queue).await.message_count()
}

/// How many consumers take from `queue` (a passive declare: a missing queue fails the test).
pub async fn queue_consumers(channel: &Channel, queue: &str) -> u32 {
    passive_declare(channel, queue).await.consumer_count()
}

/// An AMQP header value as a test compares it: strings as text, the rest in debug form.
pub fn header_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    }
}
