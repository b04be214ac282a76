//! The address guard: a resolver that keeps only the addresses the policy allows, so reqwest
//! connects to exactly those and a name cannot be re-pointed at an internal host between the
//! check and the connection (DNS rebinding); and the scheme and literal-address rules for URLs
//! that need no lookup.

use std::{
    error::Error as StdError,
    net::{IpAddr, SocketAddr},
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use waybill_domain::UrlPolicy;

/// A refusal to connect to a non-public address. Its text goes to the tenant (the delivery log,
/// a test-send's result), so it names the host the tenant gave but not the internal addresses it
/// resolved to: those are logged for the operator only.
#[derive(Debug, thiserror::Error)]
#[error("refused: {host} resolves only to non-public addresses")]
pub(crate) struct AddressRefused {
    host: String,
}

/// Resolves names with the system resolver and keeps only the addresses the policy allows.
pub(crate) struct GuardedResolver {
    pub(crate) policy: UrlPolicy,
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
                tracing::warn!(%host, addresses = %addrs, "refused a receiver: its host resolves only to non-public addresses");
                return Err(Box::new(AddressRefused { host }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Scheme and literal-address rules; names are checked by the resolver.
pub(crate) fn check_url(policy: &UrlPolicy, raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("refused: invalid url ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        other => return Err(format!("refused: scheme `{other}` is not allowed")),
    }
    let ip: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(v4.into()),
        Some(url::Host::Ipv6(v6)) => Some(v6.into()),
        Some(url::Host::Domain(_)) => None,
        None => return Err("refused: the url has no host".into()),
    };
    match ip {
        Some(ip) if !policy.ip_allowed(ip) => Err(format!("refused: {ip} is not a public address")),
        _ => Ok(()),
    }
}
