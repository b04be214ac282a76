//! The rules of an event envelope, in one place: ingest applies them to what a publisher sends
//! over HTTP ([`crate::event::EventInput::into_envelope`]) and the dispatcher to every message it
//! takes from the events exchange ([`EventEnvelope::from_wire`]), whoever published it. So an
//! event ingest answers 202 for is one the dispatcher accepts, and the dispatcher refuses a
//! directly published message for the same reasons ingest would answer 422.
//!
//! - `id`: 1–128 of `[A-Za-z0-9._:-]`.
//! - `client_id`: absent, or 1–128 characters without control characters (NUL included).
//! - `occurred_at`, `received_at`: normalised to UTC, a leap second (`23:59:60`) folded into the
//!   next second as Postgres stores it, cut to the microsecond (the delivery log's precision, so a
//!   receiver and the log show the same `timestamp`), and then within years 1 to 9999, which
//!   every RFC 3339 reader and Postgres can hold.
//! - `data`: no NUL character in any key or string (Postgres `jsonb` cannot store it).
//! - `tenant` and `type` are checked by their types ([`TenantId`], [`EventTypeName`]) when read.
//!
//! Whether `type` exists, is active and `data` fits its schema is the catalog's to say; both
//! services ask it the same way once these rules passed.
//!
//! [`TenantId`]: crate::TenantId
//! [`EventTypeName`]: crate::EventTypeName

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde_json::{Map, Value};

use crate::event::{EventEnvelope, MAX_CLIENT_ID};

/// Years a time of an envelope may fall in, once in UTC.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// One broken rule: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct EnvelopeError {
    pub field: &'static str,
    pub message: &'static str,
}

const ID_RULE: &str = "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'";
const CLIENT_ID_RULE: &str = "must be 1 to 128 characters without control characters";
const YEARS_RULE: &str = "must be within years 1 to 9999 (in UTC)";
const NUL_RULE: &str = "must not contain the NUL character (\\u0000)";

/// An idempotency id: 1–128 of `[A-Za-z0-9._:-]`.
pub fn is_event_id(raw: &str) -> bool {
    (1..=128).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Checks `id`.
pub fn check_id(id: &str) -> Result<(), EnvelopeError> {
    if is_event_id(id) {
        Ok(())
    } else {
        Err(EnvelopeError {
            field: "id",
            message: ID_RULE,
        })
    }
}

/// Checks `client_id`.
pub fn check_client_id(client_id: Option<&str>) -> Result<(), EnvelopeError> {
    match client_id {
        Some(c)
            if c.is_empty()
                || c.chars().count() > MAX_CLIENT_ID
                || c.chars().any(char::is_control) =>
        {
            Err(EnvelopeError {
                field: "client_id",
                message: CLIENT_ID_RULE,
            })
        }
        _ => Ok(()),
    }
}

/// The time `field` holds as the envelope keeps it: a leap second folded into the next second,
/// cut to the microsecond, and refused outside [`YEARS`].
pub fn normalize_time(
    field: &'static str,
    t: DateTime<Utc>,
) -> Result<DateTime<Utc>, EnvelopeError> {
    let out_of_range = EnvelopeError {
        field,
        message: YEARS_RULE,
    };
    // chrono keeps a leap second as the 59th second with a nanosecond count past one second;
    // Postgres stores `23:59:60.5` as the next minute's `00.5`, and so does the envelope.
    let t = match t.timestamp_subsec_nanos().checked_sub(1_000_000_000) {
        Some(nanos) => t
            .timestamp()
            .checked_add(1)
            .and_then(|secs| DateTime::from_timestamp(secs, nanos))
            .ok_or(out_of_range.clone())?,
        None => t,
    };
    let t = t.trunc_subsecs(6);
    if YEARS.contains(&t.year()) {
        Ok(t)
    } else {
        Err(out_of_range)
    }
}

/// Whether a JSON value holds a NUL character in any key or string.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Checks `data`.
pub fn check_data(data: &Map<String, Value>) -> Result<(), EnvelopeError> {
    if data.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        Err(EnvelopeError {
            field: "data",
            message: NUL_RULE,
        })
    } else {
        Ok(())
    }
}

/// The fields the rules look at, as either side has them before the envelope exists.
pub(crate) struct Fields<'a> {
    pub id: &'a str,
    pub client_id: Option<&'a str>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub data: &'a Map<String, Value>,
}

/// Every rule over `fields`: the normalised `(occurred_at, received_at)`, or each broken rule
/// in field order.
pub(crate) fn apply(
    fields: Fields<'_>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Vec<EnvelopeError>> {
    let mut errors = Vec::new();
    let mut keep = |r: Result<(), EnvelopeError>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    keep(check_id(fields.id));
    keep(check_client_id(fields.client_id));
    keep(check_data(fields.data));
    let occurred_at = normalize_time("occurred_at", fields.occurred_at);
    let received_at = normalize_time("received_at", fields.received_at);
    match (occurred_at, received_at) {
        (Ok(o), Ok(r)) if errors.is_empty() => Ok((o, r)),
        (o, r) => {
            errors.extend(o.err());
            errors.extend(r.err());
            errors.sort_by_key(|e| e.field);
            Err(errors)
        }
    }
}

/// Why a message from the events exchange is not an event Waybill can take.
#[derive(Debug, thiserror::Error)]
pub enum InvalidEnvelope {
    /// Not JSON, not the envelope's shape, or a `tenant` or `type` that breaks its rule.
    #[error("not an event envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    /// An envelope, but one that breaks these rules.
    #[error("{}", join(.0))]
    Broken(Vec<EnvelopeError>),
}

fn join(errors: &[EnvelopeError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl EventEnvelope {
    /// The envelope with its times normalised, or every rule it breaks.
    pub fn checked(mut self) -> Result<EventEnvelope, Vec<EnvelopeError>> {
        let (occurred_at, received_at) = apply(Fields {
            id: &self.id,
            client_id: self.client_id.as_deref(),
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            data: &self.data,
        })?;
        self.occurred_at = occurred_at;
        self.received_at = received_at;
        Ok(self)
    }

    /// Reads a message body of the events exchange (ingest's or an upstream service's) and
    /// applies the rules.
    pub fn from_wire(body: &[u8]) -> Result<EventEnvelope, InvalidEnvelope> {
        let envelope: EventEnvelope =
            serde_json::from_slice(body).map_err(InvalidEnvelope::Malformed)?;
        envelope.checked().map_err(InvalidEnvelope::Broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn times_are_normalised_then_bounded() {
        let t = normalize_time("occurred_at", time("2026-01-10T10:30:00.1234567+01:00")).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-10T09:30:00.123456+00:00");
        let leap = normalize_time("occurred_at", time("2016-12-31T23:59:60.5Z")).unwrap();
        assert_eq!(leap, time("2017-01-01T00:00:00.5Z"));
        for raw in [
            "9999-12-31T23:30:00-01:00",
            "0000-06-01T00:00:00Z",
            "0001-01-01T00:30:00+01:00",
        ] {
            let e = normalize_time("occurred_at", time(raw)).unwrap_err();
            assert_eq!(
                e.to_string(),
                "occurred_at must be within years 1 to 9999 (in UTC)"
            );
        }
        for raw in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z"] {
            assert!(normalize_time("occurred_at", time(raw)).is_ok(), "{raw}");
        }
    }

    #[test]
    fn the_wire_reader_names_every_broken_rule() {
        let body = serde_json::json!({"id": "has space", "tenant": "acme", "type": "order.shipped",
            "client_id": "", "occurred_at": "+10000-01-01T00:00:00Z",
            "received_at": "2026-01-10T10:30:00Z", "data": {"a": ["x\u{0}"]}});
        let e = EventEnvelope::from_wire(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "client_id must be 1 to 128 characters without control characters; \
             data must not contain the NUL character (\\u0000); \
             id must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'; \
             occurred_at must be within years 1 to 9999 (in UTC)"
        );
        let e = EventEnvelope::from_wire(b"{not json").unwrap_err();
        assert!(e.to_string().starts_with("not an event envelope: "), "{e}");
        let e = EventEnvelope::from_wire(br#"{"id": "a", "tenant": "no spaces"}"#).unwrap_err();
        assert!(e.to_string().contains("tenant"), "{e}");
    }
}
