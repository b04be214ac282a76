//! Webhook subscriptions: what a tenant may configure and the rules every field obeys.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    catalog::{CatalogIndex, TypeStatus, is_snake_segment},
    filter::Filter,
    url_policy::UrlPolicy,
    validation::ValidationErrors,
};

/// Most entries in `events`.
pub const MAX_EVENTS: usize = 100;
/// Most entries in `client_ids`.
pub const MAX_CLIENT_IDS: usize = 1000;
/// Most custom headers.
pub const MAX_HEADERS: usize = 20;
/// Highest `rate_limit`, in deliveries per second.
pub const MAX_RATE_LIMIT: u32 = 10_000;

/// The editable fields of a subscription as a client sent them: every one optional, so the
/// same shape serves create (absent = default) and update (absent = unchanged).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct WebhookInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub url: Option<String>,
    pub method: Option<String>,
    pub events: Option<Vec<String>>,
    pub client_ids: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub auth: Option<AuthInput>,
    pub active: Option<bool>,
    /// `Some(None)`: remove the limit. Read by the HTTP layer, which tells `null` from absent.
    #[serde(skip)]
    pub rate_limit: Option<Option<i64>>,
    /// `Some(None)`: remove the filter. Read by the HTTP layer, which tells `null` from absent.
    #[serde(skip)]
    pub filter: Option<Option<serde_json::Value>>,
}

/// The `auth` object as sent.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthInput {
    #[serde(rename = "type")]
    pub kind: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub header: Option<String>,
    pub token: Option<String>,
}

impl AuthInput {
    /// The fields each auth type takes, besides `type`.
    pub fn allowed_fields(kind: &str) -> Option<&'static [&'static str]> {
        match kind {
            "none" => Some(&[]),
            "basic" => Some(&["username", "password"]),
            "token" => Some(&["header", "token"]),
            _ => None,
        }
    }
}

/// HTTP method used to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpMethod {
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "POST" => Some(HttpMethod::Post),
            "PUT" => Some(HttpMethod::Put),
            _ => None,
        }
    }
}

/// One entry of a subscription's `events`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventPattern {
    /// `*`: every event type.
    All,
    /// `<group>.*`: every type of a group.
    Group(String),
    /// One event type.
    Exact(String),
}

impl EventPattern {
    /// Parses the syntax only; whether the type or group exists is the catalog's business.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw == "*" {
            return Some(EventPattern::All);
        }
        let (group, action) = raw.split_once('.')?;
        if !is_snake_segment(group) {
            return None;
        }
        if action == "*" {
            Some(EventPattern::Group(group.to_owned()))
        } else if is_snake_segment(action) {
            Some(EventPattern::Exact(raw.to_owned()))
        } else {
            None
        }
    }

    /// Whether an event of `event_type` is covered.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventPattern::All => true,
            EventPattern::Group(g) => event_type
                .split_once('.')
                .is_some_and(|(group, _)| group == g),
            EventPattern::Exact(name) => name == event_type,
        }
    }

    /// The patterns that would cover `event_type`: itself, its group wildcard and `*`.
    pub fn covering(event_type: &str) -> Vec<String> {
        let mut out = vec![event_type.to_owned(), "*".to_owned()];
        if let Some((group, _)) = event_type.split_once('.') {
            out.push(format!("{group}.*"));
        }
        out
    }
}

impl std::fmt::Display for EventPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventPattern::All => f.write_str("*"),
            EventPattern::Group(g) => write!(f, "{g}.*"),
            EventPattern::Exact(n) => f.write_str(n),
        }
    }
}

/// How deliveries authenticate to the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    None,
    Basic { username: String, password: String },
    Token { header: String, token: String },
}

impl WebhookAuth {
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookAuth::None => "none",
            WebhookAuth::Basic { .. } => "basic",
            WebhookAuth::Token { .. } => "token",
        }
    }

    /// The header this auth sets, lower-cased.
    pub fn header_name(&self) -> Option<String> {
        match self {
            WebhookAuth::None => None,
            WebhookAuth::Basic { .. } => Some("authorization".into()),
            WebhookAuth::Token { header, .. } => Some(header.to_ascii_lowercase()),
        }
    }
}

/// A subscription's configuration after every rule held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub name: String,
    pub description: String,
    pub url: String,
    pub method: HttpMethod,
    pub events: Vec<EventPattern>,
    pub client_ids: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub auth: WebhookAuth,
    pub active: bool,
    /// Deliveries per second the receiver accepts, over every dispatcher replica; `None`: no
    /// limit.
    pub rate_limit: Option<u32>,
    /// Conditions on the body beyond type and client; `None`: every matching event.
    pub filter: Option<Filter>,
}

/// What the rules consult besides the input.
#[derive(Debug, Clone, Copy)]
pub struct RuleContext<'a> {
    pub catalog: &'a CatalogIndex,
    pub urls: &'a UrlPolicy,
}

impl WebhookSettings {
    /// Applies `input` on top of `base` (an update) or on the defaults (a create, `base` None),
    /// checking every field the input carries and every rule that spans fields.
    pub fn build(
        input: WebhookInput,
        base: Option<&WebhookSettings>,
        ctx: RuleContext<'_>,
    ) -> Result<WebhookSettings, ValidationErrors> {
        let mut errors = ValidationErrors::new();

        let name = match input.name {
            Some(n) => check_len(&mut errors, "name", n, 255),
            None => Some(base.map(|b| b.name.clone()).unwrap_or_default()),
        };
        let description = match input.description {
            Some(d) => check_len(&mut errors, "description", d, 1000),
            None => Some(base.map(|b| b.description.clone()).unwrap_or_default()),
        };
        let url = match (input.url, base) {
            (Some(u), _) => match ctx.urls.check(&u) {
                Ok(parsed) => Some(parsed.to_string()),
                Err(msg) => {
                    errors.add("url", msg);
                    None
                }
            },
            (None, Some(b)) => Some(b.url.clone()),
            (None, None) => {
                errors.add("url", "is required");
                None
            }
        };
        let method = match input.method {
            Some(m) => HttpMethod::parse(&m).or_else(|| {
                errors.add("method", "must be POST or PUT");
                None
            }),
            None => Some(base.map_or(HttpMethod::Post, |b| b.method)),
        };
        let events = match (input.events, base) {
            // Types already subscribed stay allowed after they were deactivated, so a client
            // that sends the whole subscription back is not refused for what it already had.
            (Some(e), _) => check_events(
                &mut errors,
                &e,
                ctx.catalog,
                base.map_or(&[][..], |b| &b.events),
            ),
            (None, Some(b)) => Some(b.events.clone()),
            (None, None) => {
                errors.add("events", "is required");
                None
            }
        };
        let client_ids = match input.client_ids {
            Some(c) => check_client_ids(&mut errors, c),
            None => Some(base.map(|b| b.client_ids.clone()).unwrap_or_default()),
        };
        let auth = match input.auth {
            Some(a) => check_auth(&mut errors, a),
            None => Some(base.map_or(WebhookAuth::None, |b| b.auth.clone())),
        };
        let headers_given = input.headers.is_some();
        // The names as sent, so a clash with `auth` is reported even beside other header errors.
        let header_names: Vec<String> = match (&input.headers, base) {
            (Some(h), _) => h.keys().cloned().collect(),
            (None, Some(b)) => b.headers.keys().cloned().collect(),
            (None, None) => Vec::new(),
        };
        let headers = match input.headers {
            Some(h) => check_headers(&mut errors, h),
            None => Some(base.map(|b| b.headers.clone()).unwrap_or_default()),
        };
        if let Some(a) = &auth
            && let Some(auth_header) = a.header_name()
            && let Some(clash) = header_names
                .iter()
                .find(|k| k.to_ascii_lowercase() == auth_header)
        {
            // Blame the field the client just sent.
            let field = if headers_given {
                format!("headers.{clash}")
            } else {
                "auth".to_owned()
            };
            errors.add(
                field,
                format!("`{clash}` is set by `auth`; it cannot also be a custom header"),
            );
        }
        let active = input.active.unwrap_or(base.is_none_or(|b| b.active));
        let rate_limit = match input.rate_limit {
            None => base.and_then(|b| b.rate_limit),
            Some(None) => None,
            Some(Some(n)) => match u32::try_from(n) {
                Ok(n) if (1..=MAX_RATE_LIMIT).contains(&n) => Some(n),
                _ => {
                    errors.add(
                        "rate_limit",
                        format!("must be from 1 to {MAX_RATE_LIMIT} deliveries per second, or null for no limit"),
                    );
                    None
                }
            },
        };

        let filter = match input.filter {
            None => base.and_then(|b| b.filter.clone()),
            Some(None) => None,
            Some(Some(raw)) => match Filter::parse(&raw) {
                Ok(f) => Some(f),
                Err(e) => {
                    errors.add("filter", e.to_string());
                    None
                }
            },
        };

        match (
            name,
            description,
            url,
            method,
            events,
            client_ids,
            headers,
            auth,
        ) {
            (
                Some(name),
                Some(description),
                Some(url),
                Some(method),
                Some(events),
                Some(client_ids),
                Some(headers),
                Some(auth),
            ) if errors.is_empty() => Ok(WebhookSettings {
                name,
                description,
                url,
                method,
                events,
                client_ids,
                headers,
                auth,
                active,
                rate_limit,
                filter,
            }),
            _ => Err(errors),
        }
    }

    /// The order-insensitive identity of `events`, used to spot duplicate subscriptions.
    pub fn events_key(&self) -> String {
        let set: BTreeSet<String> = self.events.iter().map(ToString::to_string).collect();
        set.into_iter().collect::<Vec<_>>().join(" ")
    }

    /// Whether an event of this type and client would be delivered here.
    pub fn wants(&self, event_type: &str, client_id: Option<&str>) -> bool {
        self.active
            && self.events.iter().any(|p| p.matches(event_type))
            && (self.client_ids.is_empty()
                || client_id.is_some_and(|c| self.client_ids.iter().any(|x| x == c)))
    }
}

fn check_len(
    errors: &mut ValidationErrors,
    field: &str,
    value: String,
    max: usize,
) -> Option<String> {
    if value.chars().count() > max {
        errors.add(field, format!("must be at most {max} characters"));
        None
    } else {
        Some(value)
    }
}

fn check_events(
    errors: &mut ValidationErrors,
    raw: &[String],
    catalog: &CatalogIndex,
    already: &[EventPattern],
) -> Option<Vec<EventPattern>> {
    let mut ok = true;
    let mut fail = |field: &str, msg: String| {
        errors.add(field, msg);
        ok = false;
    };
    if raw.is_empty() {
        fail("events", "must list at least one event type".into());
    }
    if raw.len() > MAX_EVENTS {
        fail("events", format!("must list at most {MAX_EVENTS} entries"));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let field = format!("events[{i}]");
        if !seen.insert(entry.as_str()) {
            fail(&field, format!("`{entry}` is listed twice"));
            continue;
        }
        match EventPattern::parse(entry) {
            None => fail(
                &field,
                format!("`{entry}` is not an event type, `<group>.*` or `*`"),
            ),
            Some(EventPattern::Group(g)) if !catalog.has_group(&g) => {
                fail(&field, format!("there is no event group `{g}`"));
            }
            Some(EventPattern::Exact(name)) => match catalog.status(&name) {
                TypeStatus::Active => out.push(EventPattern::Exact(name)),
                TypeStatus::Inactive if already.contains(&EventPattern::Exact(name.clone())) => {
                    out.push(EventPattern::Exact(name))
                }
                TypeStatus::Inactive => fail(&field, format!("event type `{name}` is inactive")),
                TypeStatus::Unknown => fail(&field, format!("there is no event type `{name}`")),
            },
            Some(p) => out.push(p),
        }
    }
    ok.then_some(out)
}

fn check_client_ids(errors: &mut ValidationErrors, raw: Vec<String>) -> Option<Vec<String>> {
    let mut ok = true;
    if raw.len() > MAX_CLIENT_IDS {
        errors.add(
            "client_ids",
            format!("must list at most {MAX_CLIENT_IDS} entries"),
        );
        ok = false;
    }
    let mut seen = BTreeSet::new();
    for (i, c) in raw.iter().enumerate() {
        let n = c.chars().count();
        if !(1..=128).contains(&n) || c.chars().any(char::is_control) {
            errors.add(
                format!("client_ids[{i}]"),
                "must be 1 to 128 characters without control characters",
            );
            ok = false;
        } else if !seen.insert(c.as_str()) {
            errors.add(format!("client_ids[{i}]"), format!("`{c}` is listed twice"));
            ok = false;
        }
    }
    ok.then_some(raw)
}

/// RFC 9110 `token`: the characters allowed in a header name.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Header values: visible ASCII and spaces (so `Bearer abc` passes).
fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Header names Waybill sets itself or that would break HTTP framing.
pub fn is_reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "host"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | "connection"
            | "upgrade"
            | "te"
            | "trailer"
            | "keep-alive"
            | "user-agent"
    ) || n.starts_with("proxy-")
        || n.starts_with("webhook-")
        || n.starts_with("waybill-")
}

fn check_headers(
    errors: &mut ValidationErrors,
    raw: BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let mut ok = true;
    if raw.len() > MAX_HEADERS {
        errors.add(
            "headers",
            format!("must have at most {MAX_HEADERS} entries"),
        );
        ok = false;
    }
    let mut seen = BTreeSet::new();
    for (name, value) in &raw {
        let field = format!("headers.{name}");
        if !is_token(name) || name.len() > 256 {
            errors.add(
                &field,
                "name must be an HTTP token (RFC 9110) of at most 256 characters",
            );
            ok = false;
        } else if is_reserved_header(name) {
            errors.add(
                &field,
                format!("`{name}` is set by Waybill and cannot be overridden"),
            );
            ok = false;
        } else if !seen.insert(name.to_ascii_lowercase()) {
            errors.add(&field, "is given twice in different case");
            ok = false;
        }
        if value.len() > 1024 || !is_header_value(value) {
            errors.add(
                &field,
                "value must be at most 1024 characters of visible ASCII or spaces",
            );
            ok = false;
        }
    }
    ok.then_some(raw)
}

fn check_auth(errors: &mut ValidationErrors, a: AuthInput) -> Option<WebhookAuth> {
    match a.kind.as_str() {
        "none" => Some(WebhookAuth::None),
        "basic" => {
            let username = required(errors, "auth.username", a.username);
            let password = required(errors, "auth.password", a.password);
            let mut ok = true;
            if let Some(u) = &username
                && (!(1..=255).contains(&u.chars().count())
                    || u.contains(':')
                    || u.chars().any(char::is_control))
            {
                errors.add(
                    "auth.username",
                    "must be 1 to 255 characters without `:` or control characters",
                );
                ok = false;
            }
            if let Some(p) = &password
                && (!(1..=255).contains(&p.chars().count()) || p.chars().any(char::is_control))
            {
                errors.add(
                    "auth.password",
                    "must be 1 to 255 characters without control characters",
                );
                ok = false;
            }
            match (username, password) {
                (Some(username), Some(password)) if ok => {
                    Some(WebhookAuth::Basic { username, password })
                }
                _ => None,
            }
        }
        "token" => {
            let token = required(errors, "auth.token", a.token);
            let header = a.header.unwrap_or_else(|| "Authorization".to_owned());
            let mut ok = true;
            if !is_token(&header) || header.len() > 256 {
                errors.add(
                    "auth.header",
                    "must be an HTTP token (RFC 9110) of at most 256 characters",
                );
                ok = false;
            } else if is_reserved_header(&header) {
                errors.add(
                    "auth.header",
                    format!("`{header}` is set by Waybill and cannot be used"),
                );
                ok = false;
            }
            if let Some(t) = &token
                && (!(1..=4096).contains(&t.len()) || !is_header_value(t))
            {
                errors.add(
                    "auth.token",
                    "must be 1 to 4096 characters of visible ASCII or spaces",
                );
                ok = false;
            }
            match token {
                Some(token) if ok => Some(WebhookAuth::Token { header, token }),
                _ => None,
            }
        }
        other => {
            errors.add(
                "auth.type",
                format!("must be `none`, `basic` or `token`, got `{other}`"),
            );
            None
        }
    }
}

fn required(errors: &mut ValidationErrors, field: &str, v: Option<String>) -> Option<String> {
    if v.is_none() {
        errors.add(field, "is required");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> CatalogIndex {
        CatalogIndex::new([
            ("order.shipped", true),
            ("order.cancelled", true),
            ("stock.updated", false),
        ])
    }

    fn build(input: WebhookInput) -> Result<WebhookSettings, ValidationErrors> {
        let cat = catalog();
        let urls = UrlPolicy::default();
        WebhookSettings::build(
            input,
            None,
            RuleContext {
                catalog: &cat,
                urls: &urls,
            },
        )
    }

    fn minimal() -> WebhookInput {
        WebhookInput {
            url: Some("https://example.com/hook".into()),
            events: Some(vec!["order.shipped".into()]),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let s = build(minimal()).unwrap();
        assert_eq!(s.method, HttpMethod::Post);
        assert!(s.active);
        assert_eq!(s.auth, WebhookAuth::None);
        assert_eq!(s.name, "");
    }

    #[test]
    fn events_rules() {
        let e = build(WebhookInput {
            events: Some(vec![
                "order.*".into(),
                "order.*".into(),
                "stock.updated".into(),
                "nope.x".into(),
                "stock.*".into(),
                "Bad".into(),
            ]),
            ..minimal()
        })
        .unwrap_err();
        let f = e.fields();
        assert!(f.contains_key("events[1]"), "{e}");
        assert!(f["events[2]"][0].contains("inactive"));
        assert!(f["events[3]"][0].contains("no event type"));
        assert!(
            !f.contains_key("events[4]"),
            "group of an inactive type still exists"
        );
        assert!(f.contains_key("events[5]"));
        assert!(
            build(WebhookInput {
                events: Some(vec![]),
                ..minimal()
            })
            .unwrap_err()
            .fields()
            .contains_key("events")
        );
    }

    #[test]
    fn matching() {
        let s = build(WebhookInput {
            events: Some(vec!["order.*".into()]),
            client_ids: Some(vec!["c1".into()]),
            ..minimal()
        })
        .unwrap();
        assert!(s.wants("order.cancelled", Some("c1")));
        assert!(!s.wants("order.cancelled", Some("c2")));
        assert!(!s.wants("order.cancelled", None));
        assert!(!s.wants("stock.updated", Some("c1")));
        assert!(EventPattern::All.matches("x.y"));
    }

    #[test]
    fn auth_and_header_clash() {
        let e = build(WebhookInput {
            headers: Some([("X-Api-Key".to_string(), "a".to_string())].into()),
            auth: Some(AuthInput {
                kind: "token".into(),
                header: Some("x-api-key".into()),
                token: Some("t".into()),
                ..Default::default()
            }),
            ..minimal()
        })
        .unwrap_err();
        assert!(e.fields().contains_key("headers.X-Api-Key"), "{e}");
        // Reported even when another header is invalid too.
        let e = build(WebhookInput {
            headers: Some(
                [
                    ("Authorization".to_string(), "x".to_string()),
                    ("Host".to_string(), "h".to_string()),
                ]
                .into(),
            ),
            auth: Some(AuthInput {
                kind: "basic".into(),
                username: Some("u".into()),
                password: Some("p".into()),
                ..Default::default()
            }),
            ..minimal()
        })
        .unwrap_err();
        assert!(e.fields().contains_key("headers.Host"), "{e}");
        assert!(
            e.fields()["headers.Authorization"][0].contains("set by `auth`"),
            "{e}"
        );
        let e = build(WebhookInput {
            auth: Some(AuthInput {
                kind: "basic".into(),
                username: Some("a:b".into()),
                ..Default::default()
            }),
            ..minimal()
        })
        .unwrap_err();
        assert!(e.fields().contains_key("auth.username"));
        assert!(e.fields().contains_key("auth.password"));
    }

    #[test]
    fn events_key_ignores_order() {
        let a = build(WebhookInput {
            events: Some(vec!["order.shipped".into(), "*".into()]),
            ..minimal()
        })
        .unwrap();
        let b = build(WebhookInput {
            events: Some(vec!["*".into(), "order.shipped".into()]),
            ..minimal()
        })
        .unwrap();
        assert_eq!(a.events_key(), b.events_key());
    }
}
