//! Which receiver URLs a subscription may point at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// The operator's rules for receiver URLs.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// Accept plain `http` URLs (development and trusted networks only).
    pub allow_http: bool,
    /// Non-public ranges the operator allows anyway (on-prem receivers, tests).
    pub allowed_ranges: Vec<IpNet>,
}

/// Longest receiver URL accepted.
pub const MAX_URL_LEN: usize = 2048;

impl UrlPolicy {
    /// Parses and checks a receiver URL, answering a sentence for the client when refused.
    pub fn check(&self, raw: &str) -> Result<Url, String> {
        // The parser would silently drop tabs and newlines; a URL with them is a mistake.
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        let too_long = || format!("must be at most {MAX_URL_LEN} characters");
        if raw.len() > MAX_URL_LEN {
            return Err(too_long());
        }
        let url = Url::parse(raw).map_err(|e| format!("must be an absolute URL ({e})"))?;
        // What is stored is the normalised form (non-ASCII percent-encoded), which can be longer.
        if url.as_str().len() > MAX_URL_LEN {
            return Err(too_long());
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err("must use https".into()),
            _ => return Err("must be an https URL".into()),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials; use `auth` instead".into());
        }
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
                } else {
                    None
                }
            }
            None => return Err("must have a host".into()),
        };
        if let Some(ip) = ip
            && !self.ip_allowed(ip)
        {
            return Err(format!(
                "must not point at a non-public address ({ip}) unless the operator allows its range"
            ));
        }
        Ok(url)
    }

    /// A public address, or one in an allow-listed range.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allowed_ranges.iter().any(|r| r.contains(&ip))
    }
}

/// True for globally routable unicast addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64
        || (s[0] == 0x2002) // 6to4 can embed private v4
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32 embeds a v4 address
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard 100::/64
        || (s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0) // v4-translated ::ffff:0:0/96
        || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0)) // v4-compatible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_public_literals() {
        let p = UrlPolicy::default();
        for bad in [
            "https://127.0.0.1/x",
            "https://10.1.2.3/",
            "https://192.168.0.10/",
            "https://172.16.5.4/",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://0.0.0.0/",
            "https://224.0.0.1/",
            "https://[::ffff:10.0.0.1]/",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "https://[100::1]/",
            "https://[::ffff:0:7f00:1]/",
            "https://localhost/hook",
            "https://api.localhost/hook",
            "https://255.255.255.255/",
        ] {
            assert!(p.check(bad).is_err(), "{bad} should be refused");
        }
        for good in [
            "https://8.8.8.8/x",
            "https://example.com/hook?a=1",
            "https://[2606:4700::1111]/",
        ] {
            assert!(p.check(good).is_ok(), "{good} should pass");
        }
    }

    #[test]
    fn scheme_and_shape() {
        let p = UrlPolicy::default();
        assert_eq!(p.check("http://example.com").unwrap_err(), "must use https");
        assert!(p.check("ftp://example.com").is_err());
        assert!(p.check("/relative").is_err());
        assert!(p.check("https://user:pw@example.com").is_err());
        assert!(
            p.check(&format!("https://example.com/{}", "a".repeat(2048)))
                .is_err()
        );
        let lenient = UrlPolicy {
            allow_http: true,
            allowed_ranges: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(lenient.check("http://127.0.0.1:9000/hook").is_ok());
        assert!(lenient.check("http://10.0.0.1/").is_err());
    }
}
