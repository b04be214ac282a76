//! W3C trace context across Waybill's hops (HTTP in, AMQP between stages, HTTP out to the
//! receiver).
//!
//! Tracing is off until the process installs the OpenTelemetry layer and calls [`switch_on`]
//! (`waybill_runtime::telemetry` does when an OTLP endpoint is configured). While it is off no
//! span of the pipeline is made ([`span!`] yields [`tracing::Span::none`]) and a `traceparent`
//! that came in goes on unchanged, so a caller's trace still reaches the receiver; once it is
//! on, each hop sends its own span's context instead, a child of the one it received.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header carrying a trace context, on HTTP requests and AMQP messages alike.
pub const TRACEPARENT: &str = "traceparent";

static ON: AtomicBool = AtomicBool::new(false);

/// Records that spans are exported from now on: the OpenTelemetry layer is installed.
pub fn switch_on() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether spans are exported (see the module docs).
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// An INFO span with the given name and fields when tracing is on, else [`Span::none`]: with
/// tracing off a delivery costs no span, and its fields are not even evaluated.
#[macro_export]
macro_rules! span {
    ($($args:tt)*) => {
        if $crate::on() {
            ::tracing::info_span!($($args)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Reads a `traceparent` value: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, any
/// later version read by the same first four fields, as the W3C recommendation says. `None`
/// when malformed or when either id is all zeros.
pub fn parse(value: &str) -> Option<SpanContext> {
    let value = value.trim();
    let mut parts = value.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)) {
        return None;
    }
    // Version 00 has exactly four fields; `ff` is forbidden.
    if (version == "00" && parts.next().is_some()) || version.eq_ignore_ascii_case("ff") {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

/// A `traceparent` value as it may be passed on: re-written as version 00 from what [`parse`]
/// reads (so no surrounding space, control byte or later-version field goes with it), `None`
/// when it does not parse.
pub fn normalize(value: &str) -> Option<String> {
    parse(value).map(|cx| format(&cx))
}

/// Writes a span context as a version-00 `traceparent` value.
pub fn format(cx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    )
}

/// Makes the remote context in `traceparent` the parent of `span`, which must be new (not yet
/// entered). Nothing happens when tracing is off or the value is absent or malformed: the span
/// keeps its local parent, or starts a trace.
pub fn set_parent(span: &Span, traceparent: Option<&str>) {
    if !on() {
        return;
    }
    if let Some(remote) = traceparent.and_then(parse) {
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// The `traceparent` to send on from inside `span`: its own context when tracing is on, else
/// `incoming` unchanged (also when `span` is not recorded, being filtered out).
pub fn onward(span: &Span, incoming: Option<&str>) -> Option<String> {
    if on() {
        let cx = span.context();
        let own = cx.span().span_context().clone();
        if own.is_valid() {
            return Some(format(&own));
        }
    }
    incoming.map(str::to_owned)
}

/// The trace and span id of `span` as lowercase hex, when tracing is on and it is recorded.
pub fn ids(span: &Span) -> Option<(TraceId, SpanId)> {
    if !on() {
        return None;
    }
    let cx = span.context();
    let own = cx.span().span_context().clone();
    own.is_valid().then(|| (own.trace_id(), own.span_id()))
}

/// `url` as a span may show it: without credentials, query or fragment, which can carry
/// secrets (receivers' URLs often hold a token in the query).
pub fn redacted_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_context_is_passed_on_as_the_version_00_value_it_reads_as() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(normalize(tp).as_deref(), Some(tp));
        assert_eq!(normalize(&format!(" {tp}\r\n")).as_deref(), Some(tp));
        let later = format!("01{}-\u{1}extra", &tp[2..]);
        assert_eq!(normalize(&later).as_deref(), Some(tp));
        assert_eq!(normalize("00-4bf92f35-00f067aa0ba902b7-01"), None);
    }

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_refused() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse(tp).unwrap();
        assert!(cx.is_remote() && cx.is_sampled());
        assert_eq!(format(&cx), tp);
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.is_sampled());
        // A later version with more fields is read by its first four.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn off_passes_the_incoming_context_on_unchanged() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = span!("unused");
        assert!(span.is_none());
        set_parent(&span, Some(tp));
        assert_eq!(onward(&span, Some(tp)).as_deref(), Some(tp));
        assert_eq!(onward(&span, None), None);
        assert!(ids(&span).is_none());
    }

    #[test]
    fn urls_lose_credentials_query_and_fragment() {
        assert_eq!(
            redacted_url("https://user:pw@hooks.example.com:8443/in/x?token=s3cret#frag"),
            "https://hooks.example.com:8443/in/x"
        );
        assert_eq!(
            redacted_url("https://hooks.example.com?sig=1"),
            "https://hooks.example.com"
        );
        assert_eq!(
            redacted_url("http://127.0.0.1:9/a/b"),
            "http://127.0.0.1:9/a/b"
        );
    }
}
