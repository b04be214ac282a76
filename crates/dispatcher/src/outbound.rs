//! The HTTP side of a delivery: the request of the contract (body, Standard Webhooks signature,
//! `waybill-*` headers, custom and auth headers), sent with one pooled client that follows no
//! redirect and connects only to public addresses (or allow-listed ones). Names are resolved by
//! a resolver of ours that drops non-public addresses, and the client connects to exactly the
//! addresses it returned, so a name cannot be re-pointed at an internal host between the check
//! and the connection (DNS rebinding).

use std::{
    error::Error as StdError,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use reqwest::{
    Method,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderMap, HeaderName, HeaderValue},
};
use uuid::Uuid;
use waybill_domain::{
    HttpMethod, UrlPolicy, delivery::ATTEMPT_HEADER, event::EventEnvelope,
    retry::parse_retry_after, signature::signature_header,
};

use crate::index::Target;

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

/// A refusal to connect to a non-public address.
#[derive(Debug, thiserror::Error)]
#[error("refused: {host} resolves only to non-public addresses ({addrs})")]
struct AddressRefused {
    host: String,
    addrs: String,
}

/// Resolves names with the system resolver and keeps only the addresses the policy allows.
struct GuardedResolver {
    policy: UrlPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| policy.ip_allowed(a.ip()))
                .collect();
            if allowed.is_empty() {
                let addrs = all
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(
                    Box::new(AddressRefused { host, addrs }) as Box<dyn StdError + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Sends deliveries.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    policy: UrlPolicy,
    timeout: Duration,
}

/// One request to make.
pub struct Attempt<'a> {
    pub target: &'a Target,
    pub event: &'a EventEnvelope,
    pub body: &'a [u8],
    pub delivery_id: Uuid,
    pub number: u32,
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
        let refused = |why: String| AttemptResult {
            started_at,
            duration: clock.elapsed(),
            status: None,
            error: Some(why),
            response_body: None,
            retry_after: None,
            sent: false,
        };
        if let Err(why) = self.check_url(&attempt.target.url) {
            return refused(why);
        }
        let headers = match headers(&attempt, started_at) {
            Ok(h) => h,
            Err(why) => return refused(why),
        };
        let method = match attempt.target.method {
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
        };
        let sent = self
            .client
            .request(method, attempt.target.url.as_str())
            .headers(headers)
            .body(attempt.body.to_vec())
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

    /// Scheme and literal-address rules; names are checked by the resolver.
    fn check_url(&self, raw: &str) -> Result<(), String> {
        let url = url::Url::parse(raw).map_err(|e| format!("refused: invalid url ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http => {}
            other => return Err(format!("refused: scheme `{other}` is not allowed")),
        }
        let ip: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(v4.into()),
            Some(url::Host::Ipv6(v6)) => Some(v6.into()),
            Some(url::Host::Domain(_)) => None,
            None => return Err("refused: the url has no host".into()),
        };
        match ip {
            Some(ip) if !self.policy.ip_allowed(ip) => {
                Err(format!("refused: {ip} is not a public address"))
            }
            _ => Ok(()),
        }
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

/// Every header of the request but `user-agent` (the client's).
fn headers(a: &Attempt<'_>, now: DateTime<Utc>) -> Result<HeaderMap, String> {
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
        &signature_header(a.target.keys_at(now), &a.event.id, timestamp, a.body),
    )?;
    put("waybill-delivery-id", &a.delivery_id.to_string())?;
    put(ATTEMPT_HEADER, &a.number.to_string())?;
    put("waybill-event-type", &a.event.kind)?;
    for (name, value) in &a.target.headers {
        put(name, value)?;
    }
    if let Some((name, value)) = &a.target.auth {
        put(name, value)?;
    }
    Ok(h)
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
