//! Events as upstream services publish them, and the envelope Waybill puts on the broker.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{catalog::EventTypeName, tenant::TenantId, validation::ValidationErrors};

/// Longest `client_id`.
pub const MAX_CLIENT_ID: usize = 128;

/// The envelope of an event on `<prefix>.events` (routing key = `type`, `message_id` = `id`).
/// Times are kept to the microsecond, the precision of the delivery log, so a receiver and the
/// log show the same `timestamp`. Reading one checks `tenant` and `type` against their rules;
/// on the wire both are plain strings.
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

/// An idempotency id: 1–128 of `[A-Za-z0-9._:-]`.
pub fn is_event_id(raw: &str) -> bool {
    (1..=128).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl EventInput {
    /// Checks the rules that need no catalog (`id`, `client_id`, `occurred_at`), recording
    /// failures under `<prefix><field>`, and builds the envelope. `new_id` supplies an id when
    /// the publisher gave none. `type` is the catalog check's to report, since only the catalog
    /// knows which names exist; one that is not even a name just gives no envelope.
    pub fn into_envelope(
        self,
        tenant: &TenantId,
        received_at: DateTime<Utc>,
        new_id: impl FnOnce() -> String,
        prefix: &str,
        errors: &mut ValidationErrors,
    ) -> Option<EventEnvelope> {
        let mut ok = true;
        let id = match self.id {
            Some(id) if is_event_id(&id) => id,
            Some(_) => {
                errors.add(
                    format!("{prefix}id"),
                    "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'",
                );
                ok = false;
                String::new()
            }
            None => new_id(),
        };
        if let Some(c) = &self.client_id
            && (c.chars().count() > MAX_CLIENT_ID
                || c.is_empty()
                || c.chars().any(char::is_control))
        {
            errors.add(
                format!("{prefix}client_id"),
                "must be 1 to 128 characters without control characters",
            );
            ok = false;
        }
        let occurred_at = match self
            .occurred_at
            .as_deref()
            .map(DateTime::parse_from_rfc3339)
        {
            None => received_at,
            Some(Ok(t)) => t.with_timezone(&Utc),
            Some(Err(_)) => {
                errors.add(
                    format!("{prefix}occurred_at"),
                    "must be an RFC 3339 timestamp such as 2026-01-10T10:30:00Z",
                );
                ok = false;
                received_at
            }
        };
        let kind = EventTypeName::parse(&self.kind).ok()?;
        ok.then(|| EventEnvelope {
            id,
            tenant: tenant.clone(),
            kind,
            client_id: self.client_id,
            occurred_at: occurred_at.trunc_subsecs(6),
            received_at: received_at.trunc_subsecs(6),
            data: self.data,
        })
    }
}

#[cfg(test)]
mod tests {
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
