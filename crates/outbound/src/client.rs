//! One pooled client that makes an attempt and reports what came of it: no redirect followed,
//! no proxy, a timeout, the response read up to an excerpt, and only addresses the guard
//! allows.

use std::{
    error::Error as StdError,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use reqwest::Method;
use tracing::Instrument;
use waybill_domain::{HttpMethod, UrlPolicy, event::EventEnvelope, retry::parse_retry_after};

use crate::{
    endpoint::Endpoint,
    guard::{AddressRefused, GuardedResolver, check_url},
    request::headers,
};

/// Most bytes of a response body kept in the attempt log.
pub const RESPONSE_EXCERPT_BYTES: usize = 4096;

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed, when it did for another reason than a non-2xx status alone.
    pub error: Option<String>,
    pub response_body: Option<String>,
    /// The receiver's `Retry-After` on a 429 or 503.
    pub retry_after: Option<Duration>,
    /// Whether a request was sent (false when refused before connecting).
    pub sent: bool,
}

impl AttemptResult {
    /// An attempt that sent nothing: refused before the request left, for `why`.
    fn refused(started_at: DateTime<Utc>, clock: Instant, why: String) -> AttemptResult {
        AttemptResult {
            started_at,
            duration: clock.elapsed(),
            status: None,
            error: Some(why),
            response_body: None,
            retry_after: None,
            sent: false,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The delivery's `last_error` after this attempt.
    pub fn last_error(&self) -> Option<String> {
        match (&self.error, self.status) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(s)) if !(200..300).contains(&s) => Some(format!("HTTP {s}")),
            _ => None,
        }
    }
}

/// Sends deliveries and test events.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    policy: UrlPolicy,
    timeout: Duration,
}

/// One request to make.
pub struct Attempt<'a> {
    pub endpoint: &'a Endpoint,
    pub event: &'a EventEnvelope,
    /// Shared, not copied, by every attempt that sends it.
    pub body: bytes::Bytes,
    pub delivery_id: waybill_domain::DeliveryId,
    pub number: u32,
    /// The trace context the request continues when no span of its own is exported (traces
    /// off): sent on unchanged as its `traceparent`.
    pub traceparent: Option<&'a str>,
}

impl Outbound {
    /// A client with a keep-alive pool, the given timeout, no redirects, no proxy, and the
    /// address guard.
    pub fn new(policy: UrlPolicy, timeout: Duration) -> anyhow::Result<Outbound> {
        let client = reqwest::Client::builder()
            .user_agent(format!("Waybill/{}", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .dns_resolver(GuardedResolver {
                policy: policy.clone(),
            })
            .build()?;
        Ok(Outbound {
            client,
            policy,
            timeout,
        })
    }

    /// Makes one attempt and reports what happened; never fails otherwise.
    pub async fn send(&self, attempt: Attempt<'_>) -> AttemptResult {
        let started_at = Utc::now();
        let clock = Instant::now();
        let refused = |why: String| AttemptResult::refused(started_at, clock, why);
        if let Err(why) = self.check_url(&attempt.endpoint.url) {
            return refused(why);
        }
        let method = match attempt.endpoint.method {
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
        };
        let span = client_span(&method, &attempt.endpoint.url);
        let traceparent = waybill_trace::onward(&span, attempt.traceparent);
        let headers = match headers(&attempt, started_at, traceparent.as_deref()) {
            Ok(h) => h,
            Err(why) => return refused(why),
        };
        let result = self
            .exchange(method, &attempt, headers, started_at, clock)
            .instrument(span.clone())
            .await;
        if waybill_trace::on() {
            if let Some(status) = result.status {
                span.record("http.response.status_code", i64::from(status));
            }
            if !result.succeeded() {
                span.record("otel.status_code", "error");
                let kind = match result.status {
                    Some(s) => s.to_string(),
                    None if result
                        .error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("timed out")) =>
                    {
                        "timeout".to_owned()
                    }
                    None => "request_failed".to_owned(),
                };
                span.record("error.type", kind);
            }
        }
        result
    }

    /// Sends the request and reads the answer.
    async fn exchange(
        &self,
        method: Method,
        attempt: &Attempt<'_>,
        headers: reqwest::header::HeaderMap,
        started_at: DateTime<Utc>,
        clock: Instant,
    ) -> AttemptResult {
        let refused = |why: String| AttemptResult::refused(started_at, clock, why);
        let sent = self
            .client
            .request(method, attempt.endpoint.url.as_str())
            .headers(headers)
            .body(attempt.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                return AttemptResult {
                    sent: !is_refusal(&e),
                    ..refused(self.describe(&e))
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = if matches!(status, 429 | 503) {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()))
        } else {
            None
        };
        let redirect = (300..400).contains(&status).then(|| {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("redirects are not followed (HTTP {status} to `{to}`)")
        });
        let mut body = Vec::new();
        let mut body_error = None;
        while body.len() < RESPONSE_EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(format!("reading the response: {}", self.describe(&e)));
                    break;
                }
            }
        }
        AttemptResult {
            started_at,
            duration: clock.elapsed(),
            status: Some(status),
            error: redirect.or(if (200..300).contains(&status) {
                None
            } else {
                body_error
            }),
            response_body: Some(excerpt(&body)),
            retry_after,
            sent: true,
        }
    }

    fn check_url(&self, raw: &str) -> Result<(), String> {
        check_url(&self.policy, raw)
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("timed out after {} ms", self.timeout.as_millis());
        }
        if let Some(refusal) = find::<AddressRefused>(e) {
            return refusal.to_string();
        }
        let mut deepest = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            deepest = s.to_string();
            source = s.source();
        }
        if e.is_connect() {
            format!("connection failed: {deepest}")
        } else {
            format!("request failed: {deepest}")
        }
    }
}

/// The client span of a request, when traces are exported: `url.full` without credentials,
/// query or fragment, which can carry secrets.
fn client_span(method: &Method, url: &str) -> tracing::Span {
    if !waybill_trace::on() {
        return tracing::Span::none();
    }
    let parsed = url::Url::parse(url).ok();
    let host = parsed.as_ref().and_then(|u| u.host_str()).unwrap_or("");
    let port = parsed
        .as_ref()
        .and_then(url::Url::port_or_known_default)
        .map(i64::from);
    tracing::info_span!(
        "http.client",
        otel.name = method.as_str(),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        url.full = waybill_trace::redacted_url(url),
        server.address = host,
        server.port = port,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

fn is_refusal(e: &reqwest::Error) -> bool {
    find::<AddressRefused>(e).is_some()
}

fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<T>() {
            return Some(t);
        }
        source = s.source();
    }
    None
}

/// The first [`RESPONSE_EXCERPT_BYTES`] of a body as text, cut on a character boundary.
fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(RESPONSE_EXCERPT_BYTES)];
    // Postgres text cannot hold NUL; a binary body must not keep its attempt from being recorded.
    let text = String::from_utf8_lossy(cut).replace('\0', "\u{fffd}");
    let mut end = text.len().min(RESPONSE_EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_capped_on_a_character_boundary() {
        let body = "é".repeat(3000);
        let e = excerpt(body.as_bytes());
        assert!(e.len() <= RESPONSE_EXCERPT_BYTES);
        assert!(e.chars().all(|c| c == 'é'));
        assert_eq!(excerpt(b"ok"), "ok");
        assert_eq!(excerpt(b"a\0b"), "a\u{fffd}b");
    }

    #[test]
    fn literal_addresses_and_schemes() {
        let strict = Outbound::new(UrlPolicy::default(), Duration::from_secs(1)).unwrap();
        for bad in [
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://[::1]/x",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/",
            "https://[::ffff:127.0.0.1]/",
            "http://93.184.216.34/",
            "ftp://93.184.216.34/",
        ] {
            assert!(strict.check_url(bad).is_err(), "{bad} should be refused");
        }
        assert!(strict.check_url("https://93.184.216.34/x").is_ok());
        let open = Outbound::new(
            UrlPolicy {
                allow_http: true,
                allowed_ranges: vec!["127.0.0.0/8".parse().unwrap()],
            },
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(open.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(open.check_url("http://10.0.0.1/x").is_err());
    }
}
