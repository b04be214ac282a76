//! The delivery log (a subscription's deliveries, one delivery with its event and attempts) and
//! replays (one delivery, or every failed one of a window).

pub mod get;
pub mod list;
pub mod replay;
pub mod view;

use chrono::{DateTime, Utc};
use waybill_domain::ValidationErrors;

/// Reads an RFC 3339 time of a query or body field, recording a 422 on `field` when it is not.
pub fn parse_time(field: &str, raw: &str, errors: &mut ValidationErrors) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.add(
                field,
                "must be an RFC 3339 timestamp such as 2026-01-10T10:30:00Z",
            );
            None
        }
    }
}
