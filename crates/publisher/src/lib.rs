//! Publishing events to the broker: persistent, mandatory, routed by type, and counted as done
//! only once the broker confirmed every one. Embeddable by Rust services that publish directly.

use waybill_bus::{Broker, BusError, Outgoing, TRACEPARENT_HEADER};
use waybill_domain::event::EventEnvelope;

/// Why events were not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("an event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Publishes event envelopes on `<prefix>.events`.
#[derive(Clone)]
pub struct EventPublisher {
    broker: Broker,
}

impl EventPublisher {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Publishes all of `events` back to back and returns once the broker confirmed every one
    /// (routing key = type, `message_id` = event id). On an error some may be queued already;
    /// publishing them again with the same ids is safe.
    pub async fn publish(
        &self,
        events: &[EventEnvelope],
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let exchange = self.broker.topology().events_exchange();
        let bodies = events
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()?;
        let messages: Vec<Outgoing> = events
            .iter()
            .zip(&bodies)
            .map(|(e, body)| {
                let mut headers = vec![("waybill-tenant", e.tenant.to_string())];
                if let Some(tp) = traceparent {
                    headers.push((TRACEPARENT_HEADER, tp.to_owned()));
                }
                Outgoing {
                    exchange: &exchange,
                    routing_key: e.kind.as_str(),
                    body,
                    message_id: Some(&e.id),
                    headers,
                    mandatory: true,
                }
            })
            .collect();
        Ok(self.broker.publish_many(&messages).await?)
    }
}
