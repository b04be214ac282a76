//! An event the dispatcher refused, as it is kept for an operator to read, re-drive or delete
//! (`GET /v1/admin/invalid-events`), instead of a broker queue nobody sees.
//!
//! The record's id is derived from the message (routing key, message id, body), so a message
//! that comes back after a crash between recording it and acking it is the same record, and the
//! same message refused again after a re-drive takes its old id back. The body is kept whole
//! when it is no larger than any envelope ingest publishes ([`MAX_ENVELOPE_BYTES`]): larger ones
//! keep their first [`EXCERPT_BYTES`] and cannot be re-driven.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{TenantId, event::MAX_ENVELOPE_BYTES};

/// How much of a body the operator's list shows, and how much of an oversized one is kept.
pub const EXCERPT_BYTES: usize = 16 * 1024;

/// Namespace of the records' v5 ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x5d1b_6a0e_3f0c_4e57_9a6b_2c47_8e10_d3a9);

/// A refused event as it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEvent {
    pub id: Uuid,
    /// The envelope's `tenant`, when the body is JSON with a valid one.
    pub tenant: Option<TenantId>,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    /// The whole body, or its first [`EXCERPT_BYTES`] when `body_truncated`.
    pub body: Vec<u8>,
    pub body_truncated: bool,
    /// Size of the whole body.
    pub body_bytes: usize,
}

/// Postgres text holds no NUL; a routing key, message id or reason may (they quote what was
/// published), so each is shown escaped, as JSON would write it.
fn storable(text: &str) -> String {
    text.replace('\0', "\\u0000")
}

impl InvalidEvent {
    /// The record of a message refused at `received_at` for `reason`.
    pub fn new(
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
        reason: &str,
        received_at: DateTime<Utc>,
    ) -> Self {
        let mut name = Vec::with_capacity(routing_key.len() + body.len() + 64);
        name.extend_from_slice(routing_key.as_bytes());
        name.push(0);
        if let Some(m) = message_id {
            name.push(1);
            name.extend_from_slice(m.as_bytes());
        }
        name.push(0);
        name.extend_from_slice(body);
        let whole = body.len() <= MAX_ENVELOPE_BYTES;
        let kept = if whole { body } else { &body[..EXCERPT_BYTES] };
        Self {
            id: Uuid::new_v5(&NAMESPACE, &name),
            tenant: tenant_of(body),
            routing_key: storable(routing_key),
            message_id: message_id.map(storable),
            reason: storable(reason),
            received_at,
            body: kept.to_vec(),
            body_truncated: !whole,
            body_bytes: body.len(),
        }
    }
}

/// The `tenant` of a JSON object body, when it is a valid tenant id.
fn tenant_of(body: &[u8]) -> Option<TenantId> {
    #[derive(serde::Deserialize)]
    struct Tenant {
        tenant: String,
    }
    let t: Tenant = serde_json::from_slice(body).ok()?;
    TenantId::parse(&t.tenant).ok()
}

/// At most `max` bytes of `body` as text (bytes that are not UTF-8 shown as U+FFFD, a character
/// cut at the end dropped), and whether anything was left out.
pub fn excerpt(body: &[u8], max: usize) -> (String, bool) {
    if body.len() <= max {
        return (String::from_utf8_lossy(body).into_owned(), false);
    }
    let mut head = &body[..max];
    // A multi-byte character cut by the limit is dropped rather than shown as U+FFFD.
    if let Err(e) = std::str::from_utf8(head)
        && e.error_len().is_none()
    {
        head = &head[..e.valid_up_to()];
    }
    (String::from_utf8_lossy(head).into_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_message_is_the_same_record() {
        let now = Utc::now();
        let body = br#"{"id": "x", "tenant": "acme", "type": "order.teleported"}"#;
        let a = InvalidEvent::new("order.teleported", Some("x"), body, "no type", now);
        let b = InvalidEvent::new("order.teleported", Some("x"), body, "other", now);
        assert_eq!(a.id, b.id);
        assert_eq!(a.tenant.as_ref().map(|t| t.as_str()), Some("acme"));
        assert!(!a.body_truncated);
        for other in [
            InvalidEvent::new("order.shipped", Some("x"), body, "", now),
            InvalidEvent::new("order.teleported", None, body, "", now),
            InvalidEvent::new("order.teleported", Some(""), body, "", now),
            InvalidEvent::new("order.teleported", Some("x"), b"{}", "", now),
        ] {
            assert_ne!(other.id, a.id);
        }
        let odd = InvalidEvent::new("a\0b", None, b"{\"tenant\": \"no spaces\"}", "r\0", now);
        assert_eq!(
            (odd.routing_key.as_str(), odd.reason.as_str()),
            ("a\\u0000b", "r\\u0000")
        );
        assert_eq!(odd.tenant, None);
    }

    #[test]
    fn an_oversized_body_keeps_an_excerpt() {
        let body = vec![b'x'; MAX_ENVELOPE_BYTES + 1];
        let e = InvalidEvent::new("k", None, &body, "too big", Utc::now());
        assert!(e.body_truncated);
        assert_eq!((e.body.len(), e.body_bytes), (EXCERPT_BYTES, body.len()));
        let fits = InvalidEvent::new("k", None, &body[1..], "", Utc::now());
        assert!(!fits.body_truncated && fits.body.len() == MAX_ENVELOPE_BYTES);
    }

    #[test]
    fn excerpts_cut_on_a_character() {
        assert_eq!(excerpt(b"abc", 3), ("abc".to_owned(), false));
        assert_eq!(excerpt("aé".as_bytes(), 2), ("a".to_owned(), true));
        assert_eq!(excerpt(b"a\xffb", 2), ("a\u{fffd}".to_owned(), true));
    }
}
