//! The delivery message: one per (event, matching subscription), on `<prefix>.deliveries` and
//! its retry queues. The attempt number travels in the `waybill-attempt` header, not here, so
//! the body of a message never changes between attempts.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::EventEnvelope;

/// Header with the 1-based number of the attempt the message is for.
pub const ATTEMPT_HEADER: &str = "waybill-attempt";

/// A delivery owed to one subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryMessage {
    /// Stable for the (event, subscription) pair, so a repeated fan-out does not double it.
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub event: EventEnvelope,
}

/// The delivery id of `event_id` of `tenant` for `webhook_id`: a name-based UUID (v5), the same
/// every time the pair is fanned out.
pub fn delivery_id(tenant: &str, event_id: &str, webhook_id: Uuid) -> Uuid {
    Uuid::new_v5(&webhook_id, format!("{tenant}\u{1f}{event_id}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let w = Uuid::from_u128(7);
        assert_eq!(delivery_id("acme", "e1", w), delivery_id("acme", "e1", w));
        assert_ne!(delivery_id("acme", "e1", w), delivery_id("acme", "e2", w));
        assert_ne!(delivery_id("acme", "e1", w), delivery_id("globex", "e1", w));
        assert_ne!(
            delivery_id("acme", "e1", w),
            delivery_id("acme", "e1", Uuid::from_u128(8))
        );
    }
}
