//! The request a receiver gets: every header of the contract but `user-agent` (the client's).

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use waybill_domain::{delivery::ATTEMPT_HEADER, signature::signature_header};

use crate::client::Attempt;

/// Every header of the request but `user-agent` (the client's).
///
/// `traceparent` is the W3C trace context of the request; it is not signed (the signature covers
/// the id, the timestamp and the body only), and a header of the same name the subscription
/// configures replaces it.
pub(crate) fn headers(
    a: &Attempt<'_>,
    now: DateTime<Utc>,
    traceparent: Option<&str>,
) -> Result<HeaderMap, String> {
    let timestamp = now.timestamp();
    let mut h = HeaderMap::new();
    let mut put = |name: &str, value: &str| -> Result<(), String> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("refused: invalid header name `{name}`"))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("refused: invalid value of header `{name}`"))?;
        h.insert(n, v);
        Ok(())
    };
    put("content-type", "application/json")?;
    put("webhook-id", &a.event.id)?;
    put("webhook-timestamp", &timestamp.to_string())?;
    put(
        "webhook-signature",
        &signature_header(a.endpoint.keys_at(now), &a.event.id, timestamp, &a.body),
    )?;
    put("waybill-delivery-id", &a.delivery_id.to_string())?;
    put(ATTEMPT_HEADER, &a.number.to_string())?;
    put("waybill-event-type", a.event.kind.as_str())?;
    // Normalised where it came in (`waybill_bus::traceparent`, the request middleware) or
    // written by `waybill_trace::format`, so it is parsed once, not per attempt; a value that is
    // still no header value is left out rather than cost the receiver its delivery.
    if let Some(tp) = traceparent {
        let _ = put(waybill_trace::TRACEPARENT, tp);
    }
    for (name, value) in &a.endpoint.headers {
        put(name, value)?;
    }
    if let Some((name, value)) = &a.endpoint.auth {
        put(name, value)?;
    }
    Ok(h)
}
