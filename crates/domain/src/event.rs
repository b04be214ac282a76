//! Events as upstream services publish them, and the envelope Waybill puts on the broker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    catalog::EventTypeName,
    envelope::{self, Fields},
    tenant::TenantId,
    validation::ValidationErrors,
};

/// Longest `client_id`.
pub const MAX_CLIENT_ID: usize = 128;

/// The envelope of an event on `<prefix>.events` (routing key = `type`, `message_id` = `id`).
/// Deserializing one checks only `tenant` and `type` (on the wire both are plain strings); a
/// message from the broker is read with [`EventEnvelope::from_wire`], which applies every rule
/// of [`crate::envelope`] (times kept to the microsecond in UTC, and so on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope {
    pub id: String,
    pub tenant: TenantId,
    #[serde(rename = "type")]
    pub kind: EventTypeName,
    pub client_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub data: Map<String, Value>,
}

/// An event as a publisher sends it over HTTP, before any rule is checked.
#[derive(Debug, Clone, Deserialize)]
pub struct EventInput {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Map<String, Value>,
    pub client_id: Option<String>,
    pub id: Option<String>,
    pub occurred_at: Option<String>,
}

/// The fields an [`EventInput`] may have.
pub const EVENT_FIELDS: &[&str] = &["type", "data", "client_id", "id", "occurred_at"];

pub use crate::envelope::is_event_id;

/// Largest event a publisher may send, as its JSON (`{type, data, client_id?, id?,
/// occurred_at?}`, written compactly).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Largest envelope an event of at most [`MAX_EVENT_BYTES`] becomes on the broker: the envelope
/// adds `tenant`, `received_at` and, where the publisher left them out, `id`, `client_id` and
/// `occurred_at`, far less than this margin.
pub const MAX_ENVELOPE_BYTES: usize = MAX_EVENT_BYTES + 4 * 1024;

impl EventInput {
    /// Checks the rules that need no catalog (those of [`crate::envelope`], the ones the
    /// dispatcher applies to every message), recording failures under `<prefix><field>`, and
    /// builds the envelope. `new_id` supplies an id when the publisher gave none. `type` is the
    /// catalog check's to report, since only the catalog knows which names exist; one that is
    /// not even a name just gives no envelope.
    pub fn into_envelope(
        self,
        tenant: &TenantId,
        received_at: DateTime<Utc>,
        new_id: impl FnOnce() -> String,
        prefix: &str,
        errors: &mut ValidationErrors,
    ) -> Option<EventEnvelope> {
        let id = self.id.unwrap_or_else(new_id);
        let occurred_at = match self
            .occurred_at
            .as_deref()
            .map(DateTime::parse_from_rfc3339)
        {
            None => Some(received_at),
            Some(Ok(t)) => Some(t.with_timezone(&Utc)),
            Some(Err(_)) => {
                errors.add(
                    format!("{prefix}occurred_at"),
                    "must be an RFC 3339 timestamp such as 2026-01-10T10:30:00Z",
                );
                None
            }
        };
        let checked = envelope::apply(Fields {
            id: &id,
            client_id: self.client_id.as_deref(),
            // An unreadable time is reported above; the other rules are still checked.
            occurred_at: occurred_at.unwrap_or(received_at),
            received_at,
            data: &self.data,
        });
        let times = match checked {
            Ok(times) => occurred_at.map(|_| times),
            Err(broken) => {
                for e in broken {
                    errors.add(format!("{prefix}{}", e.field), e.message);
                }
                None
            }
        };
        let kind = EventTypeName::parse(&self.kind).ok()?;
        let (occurred_at, received_at) = times?;
        Some(EventEnvelope {
            id,
            tenant: tenant.clone(),
            kind,
            client_id: self.client_id,
            occurred_at,
            received_at,
            data: self.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::SubsecRound;

    use super::*;

    fn input(v: Value) -> EventInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rules_and_defaults() {
        let now = Utc::now();
        let acme = TenantId::parse("acme").unwrap();
        let mut e = ValidationErrors::new();
        let env = input(serde_json::json!({"type": "order.shipped", "data": {"a": 1}}))
            .into_envelope(&acme, now, || "gen-1".into(), "", &mut e)
            .unwrap();
        assert_eq!(
            (env.id.as_str(), env.occurred_at, env.client_id),
            ("gen-1", now.trunc_subsecs(6), None)
        );
        let env = input(serde_json::json!({"type": "t.a", "data": {}, "id": "ord:42.v1_x-y", "occurred_at": "2026-01-10T10:30:00+01:00"}))
            .into_envelope(&acme, now, || unreachable!(), "", &mut e)
            .unwrap();
        assert_eq!(env.occurred_at.to_rfc3339(), "2026-01-10T09:30:00+00:00");
        assert!(e.is_empty());
        let bad = input(serde_json::json!({"type": "t.a", "data": {}, "id": "has space", "client_id": "c".repeat(129), "occurred_at": "yesterday"}))
            .into_envelope(&acme, now, || "x".into(), "events[3].", &mut e);
        assert!(bad.is_none());
        let fields: Vec<&String> = e.fields().keys().collect();
        assert_eq!(
            fields,
            [
                "events[3].client_id",
                "events[3].id",
                "events[3].occurred_at"
            ]
        );
        assert!(!is_event_id(&"a".repeat(129)));
    }
}
