//! Layered configuration: built-in defaults, then an optional TOML file, then `WAYBILL_`
//! environment variables (`__` between levels: `WAYBILL_DATABASE__URL`).

use std::path::Path;

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::Deserialize;

/// Well-known development secrets: convenient for `make run`, refused in production.
pub const DEV_JWT_SECRET: &str = "waybill-development-jwt-secret-do-not-use-in-production";
/// Base64 of the development encryption key (32 bytes), refused in production.
pub const DEV_ENCRYPTION_KEY: &str = "d2F5YmlsbC1kZXZlbG9wbWVudC1rZXktMzItYnl0ZXM=";

const DEFAULTS: &str = r#"
environment = "development"

[http]
host = "127.0.0.1"
port = 8080
body_limit_bytes = 1048576
shutdown_timeout_seconds = 30
# A request's head, and then its body, must arrive whole within this (else 408).
body_read_timeout = "5s"

[database]
url = "postgres://postgres@127.0.0.1:5432/waybill"
pool_size = 16

[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = "waybill"
queue_type = "classic"
# How long a message rejected from a work queue (or over a quorum queue's delivery limit) waits
# in its limbo queue before it is sent back.
limbo_ttl = "30s"
# Most messages the dead and invalid queues keep (the oldest go first).
parked_max_length = 100000

[delivery]
# Gaps between attempts: 10 attempts in all by default. Each distinct gap is a delay queue.
retry_schedule = ["5m", "10m", "20m", "40m", "1h", "1h", "1h", "1h", "1h"]
# A receiver has this long to answer (connect included).
timeout = "15s"
# Requests in flight at once per dispatcher replica (also how many delivery messages the broker
# sends it ahead: with events of hundreds of KiB, that many copies are held in memory).
concurrency = 128
# Events fanned out at once per dispatcher replica. The fan-out makes the first attempts of an
# event's deliveries itself, each under one of `concurrency`'s slots, so this is also how many
# first attempts (of events with one subscription) run at once: at most the slots a lone tenant
# may take (`concurrency` less the reserve), so a burst of such events is not sent round the
# deliveries queue for want of a slot.
fanout_concurrency = 96
# How often the subscription index is rebuilt from Postgres, besides the change feed.
resync_interval = "5m"
# How long a replica's claim on an event it fans out lasts unless renewed: after a crash, the
# event's next copy waits this long before another replica takes the fan-out over.
fanout_lease = "30s"
# Share of `concurrency` a tenant holding more than its fair share leaves free for the others
# (percent; 0 turns the fairness between tenants off).
tenant_reserve_percent = 25
# First wait of a delivery held back for fairness; each further time it doubles, up to the
# longest.
fairness_hold = "1s"
fairness_max_hold = "1m"

[breaker]
# Failed requests in a row that open a receiver's circuit: its deliveries then wait in the delay
# queues without a request until one probe, sent when the cooldown ends, succeeds.
failure_threshold = 5
# How long the circuit first stays open; each failed probe doubles it, up to max_cooldown.
cooldown = "30s"
max_cooldown = "10m"
# A receiver that has not succeeded for this long is disabled (at most 90 days).
disable_after = "5d"

[auth]

[security]
allow_http = false
allowed_private_ranges = []

[retention]
# Events, deliveries and attempts older than this are deleted (at most 10 years).
period = "30d"
# How often the retention job runs, and how many rows it deletes per statement.
interval = "10m"
batch_size = 1000

[limits]
# Subscriptions one tenant may have; 0 means no limit.
max_webhooks_per_tenant = 1000

[rate_limit]
per_second = 100
burst = 200

[log]
format = "json"
level = "info"

[metrics]
# Tenants a dispatcher replica gives a label of their own in its per-tenant delivery counter:
# the first this many it sees; every later one counts under `tenant="~other"`. 0 turns the
# per-tenant counter off.
tenant_label_limit = 100
"#;

/// Development or production; production refuses the development secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

/// Every setting of a Waybill service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub environment: Environment,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub delivery: DeliverySettings,
    pub breaker: BreakerSettings,
    pub auth: AuthSettings,
    pub security: SecuritySettings,
    pub rate_limit: RateLimitSettings,
    pub limits: LimitsSettings,
    pub retention: RetentionSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    pub body_limit_bytes: usize,
    pub shutdown_timeout_seconds: u64,
    /// How long a request's head, and then its body, may take to arrive (`5s`).
    pub body_read_timeout: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    pub url: String,
    /// Prefix of every exchange and queue name.
    pub prefix: String,
    /// `classic` on one node, `quorum` in a cluster.
    pub queue_type: String,
    /// How long a dead-lettered work message waits in limbo before it goes back (`30s`).
    pub limbo_ttl: String,
    /// Most messages the dead and invalid queues keep.
    pub parked_max_length: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Gaps between delivery attempts (`250ms`, `30s`, `5m`, `1h`): attempt n+1 waits the n-th.
    pub retry_schedule: Vec<String>,
    /// How long a receiver has to answer (`15s`).
    pub timeout: String,
    /// Deliveries in flight at once per dispatcher replica.
    pub concurrency: u16,
    /// Events fanned out at once per dispatcher replica.
    pub fanout_concurrency: u16,
    /// How often a dispatcher rebuilds its subscription index from Postgres.
    pub resync_interval: String,
    /// How long a replica's claim on an event it fans out lasts unless renewed (`30s`).
    pub fanout_lease: String,
    /// Percent of `concurrency` a tenant over its fair share leaves free for other tenants.
    pub tenant_reserve_percent: u8,
    /// First and longest wait of a delivery held back for fairness (`1s`, `1m`).
    pub fairness_hold: String,
    pub fairness_max_hold: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 shared secret.
    pub jwt_secret: Option<String>,
    /// RS256 public key (PEM text); when set, tokens must be RS256.
    pub jwt_public_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Base64 of 32 bytes: the AES-256-GCM key for credentials at rest.
    pub encryption_key: Option<String>,
    /// Accept plain-http receiver URLs.
    pub allow_http: bool,
    /// Non-public ranges receivers may live in anyway.
    pub allowed_private_ranges: Vec<IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Failed requests in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit first stays open (`30s`).
    pub cooldown: String,
    /// The longest it stays open after failed probes (`10m`).
    pub max_cooldown: String,
    /// Failing without a success this long disables the subscription (`5d`).
    pub disable_after: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Age past which events, deliveries and attempts are deleted (`30d`).
    pub period: String,
    /// How often the retention job runs (`10m`).
    pub interval: String,
    /// Rows deleted per statement, so no statement holds locks for long.
    pub batch_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests per second per tenant; 0 turns the limit off.
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Subscriptions one tenant may have; 0 turns the limit off.
    pub max_webhooks_per_tenant: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json` or `pretty`.
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Tenants with a label of their own in the per-tenant delivery counter (at most
    /// [`MAX_TENANT_LABELS`]); 0 turns that counter off.
    pub tenant_label_limit: u32,
}

/// The most tenants `metrics.tenant_label_limit` may give a label of their own: each costs a
/// series per delivery outcome on every replica.
pub const MAX_TENANT_LABELS: u32 = 10_000;

impl Settings {
    /// Loads defaults (with this service's `port`), then `file` if given, then the environment.
    pub fn load(port: u16, file: Option<&Path>) -> anyhow::Result<Settings> {
        Self::load_from(port, file, std::env::vars())
    }

    /// [`Settings::load`] with the environment given explicitly (for tests).
    pub fn load_from(
        port: u16,
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Settings> {
        use ::config::{Config, Environment as Env, File, FileFormat};
        let mut b = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .set_default("http.port", i64::from(port))?;
        if let Some(f) = file {
            b = b.add_source(File::from(f).format(FileFormat::Toml).required(true));
        }
        let env: std::collections::HashMap<String, String> = vars
            .into_iter()
            // `WAYBILL_CONFIG` names the file; `WAYBILL_TEST_*` belong to the test harness.
            .filter(|(k, _)| {
                k.starts_with("WAYBILL_")
                    && k != "WAYBILL_CONFIG"
                    && !k.starts_with("WAYBILL_TEST_")
            })
            .collect();
        b = b.add_source(
            Env::with_prefix("WAYBILL")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("security.allowed_private_ranges")
                .with_list_parse_key("delivery.retry_schedule")
                .source(Some(env)),
        );
        let settings: Settings = b
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.http.body_limit_bytes == 0 {
            bail!("http.body_limit_bytes must be positive");
        }
        self.body_read_timeout()?;
        if waybill_bus::broker_urls(&self.broker.url).next().is_none() {
            bail!("broker.url must name a broker (a cluster's nodes separated by commas)");
        }
        if !matches!(self.broker.queue_type.as_str(), "classic" | "quorum") {
            bail!("broker.queue_type must be `classic` or `quorum`");
        }
        if !matches!(self.log.format.as_str(), "json" | "pretty") {
            bail!("log.format must be `json` or `pretty`");
        }
        self.encryption_key()?;
        self.topology()?;
        self.retry_schedule()?;
        parse_duration(&self.delivery.timeout).context("delivery.timeout")?;
        parse_duration(&self.delivery.resync_interval).context("delivery.resync_interval")?;
        if parse_duration(&self.delivery.fanout_lease)
            .context("delivery.fanout_lease")?
            .is_zero()
        {
            bail!("delivery.fanout_lease must be positive");
        }
        let hold =
            parse_duration(&self.delivery.fairness_hold).context("delivery.fairness_hold")?;
        let max_hold = parse_duration(&self.delivery.fairness_max_hold)
            .context("delivery.fairness_max_hold")?;
        if hold < std::time::Duration::from_millis(100) || max_hold < hold {
            bail!(
                "delivery.fairness_hold must be at least 100ms and delivery.fairness_max_hold at least as long"
            );
        }
        if self.delivery.tenant_reserve_percent > 90 {
            bail!("delivery.tenant_reserve_percent must be at most 90");
        }
        parse_duration_up_to(&self.retention.period, 3650).context("retention.period")?;
        self.breaker_policy()?;
        self.disable_after()?;
        parse_duration(&self.retention.interval).context("retention.interval")?;
        if self.retention.batch_size == 0 {
            bail!("retention.batch_size must be positive");
        }
        if self.metrics.tenant_label_limit > MAX_TENANT_LABELS {
            bail!("metrics.tenant_label_limit must be at most {MAX_TENANT_LABELS}");
        }
        if self.delivery.concurrency == 0 || self.delivery.fanout_concurrency == 0 {
            bail!("delivery.concurrency and delivery.fanout_concurrency must be positive");
        }
        if self.environment == Environment::Production {
            if self.security.encryption_key.is_none() {
                bail!(
                    "production needs security.encryption_key (WAYBILL_SECURITY__ENCRYPTION_KEY): base64 of 32 random bytes"
                );
            }
            // Compared as the key it decodes to, so the development key with a file's trailing
            // newline (or any other spelling of the same bytes) is refused as well.
            if self.encryption_key()? == decode_key(DEV_ENCRYPTION_KEY)? {
                bail!("production refuses the development encryption key");
            }
            match (&self.auth.jwt_secret, &self.auth.jwt_public_key) {
                (_, Some(_)) => {}
                (Some(s), None) if s.trim() != DEV_JWT_SECRET && s.trim().len() >= 32 => {}
                _ => bail!(
                    "production needs auth.jwt_secret (at least 32 characters, not the development one) or auth.jwt_public_key"
                ),
            }
        }
        Ok(())
    }

    /// The 32-byte credential encryption key (the development key when unset outside production).
    pub fn encryption_key(&self) -> anyhow::Result<Vec<u8>> {
        decode_key(
            self.security
                .encryption_key
                .as_deref()
                .unwrap_or(DEV_ENCRYPTION_KEY),
        )
    }

    /// How long a request's head, and then its body, may take to arrive (at most 10 minutes).
    pub fn body_read_timeout(&self) -> anyhow::Result<std::time::Duration> {
        let timeout =
            parse_duration(&self.http.body_read_timeout).context("http.body_read_timeout")?;
        if timeout > std::time::Duration::from_secs(600) {
            bail!("http.body_read_timeout must be at most 10m");
        }
        Ok(timeout)
    }

    /// The retry schedule as durations.
    pub fn retry_schedule(&self) -> anyhow::Result<Vec<std::time::Duration>> {
        if self.delivery.retry_schedule.len() > 50 {
            bail!("delivery.retry_schedule may list at most 50 gaps");
        }
        self.delivery
            .retry_schedule
            .iter()
            .map(|raw| {
                parse_duration(raw).with_context(|| format!("delivery.retry_schedule: `{raw}` is not a duration such as 250ms, 30s, 5m or 1h"))
            })
            .collect()
    }

    /// The circuit breaker's settings.
    pub fn breaker_policy(&self) -> anyhow::Result<waybill_domain::breaker::BreakerPolicy> {
        let b = &self.breaker;
        if b.failure_threshold == 0 {
            bail!("breaker.failure_threshold must be positive");
        }
        let cooldown = parse_duration(&b.cooldown).context("breaker.cooldown")?;
        let max_cooldown = parse_duration(&b.max_cooldown).context("breaker.max_cooldown")?;
        if max_cooldown < cooldown {
            bail!("breaker.max_cooldown must not be shorter than breaker.cooldown");
        }
        let longest_gap = self.retry_schedule()?.into_iter().max().unwrap_or_default();
        Ok(waybill_domain::breaker::BreakerPolicy {
            threshold: b.failure_threshold,
            cooldown,
            max_cooldown,
            // Twice the longest time a failing receiver can go without a request: a retry's gap,
            // or the longest wait of a delivery held back by its open circuit (six times the
            // longest cooldown, rounded up to a hold queue).
            streak_gap: longest_gap.max(waybill_bus::Topology::hold_at_least(
                max_cooldown.saturating_mul(waybill_domain::breaker::DEFERRAL_CAP),
            )) * 2,
        })
    }

    /// How long a receiver may fail without a success before it is disabled.
    pub fn disable_after(&self) -> anyhow::Result<std::time::Duration> {
        parse_duration_up_to(&self.breaker.disable_after, 90).context("breaker.disable_after")
    }

    /// The broker objects these settings describe.
    pub fn topology(&self) -> anyhow::Result<waybill_bus::Topology> {
        use waybill_bus::topology::QueueType;
        let queue_type = QueueType::parse(&self.broker.queue_type)
            .ok_or_else(|| anyhow::anyhow!("broker.queue_type must be `classic` or `quorum`"))?;
        let limbo_ttl = parse_duration(&self.broker.limbo_ttl).context("broker.limbo_ttl")?;
        if self.broker.parked_max_length == 0 {
            bail!("broker.parked_max_length must be positive");
        }
        Ok(waybill_bus::Topology::new(
            self.broker.prefix.clone(),
            queue_type,
            &self.retry_schedule()?,
        )
        .with_limbo_ttl(limbo_ttl)
        .with_parked_max_length(self.broker.parked_max_length))
    }

    /// The HS256 secret (the development one when unset outside production).
    pub fn jwt_secret(&self) -> &str {
        self.auth.jwt_secret.as_deref().unwrap_or(DEV_JWT_SECRET)
    }

    /// The receiver URL policy these settings describe.
    pub fn url_policy(&self) -> waybill_domain::UrlPolicy {
        waybill_domain::UrlPolicy {
            allow_http: self.security.allow_http,
            allowed_ranges: self.security.allowed_private_ranges.clone(),
        }
    }
}

/// The 32 bytes of a base64 key. What a key file adds around it is dropped: surrounding whitespace
/// and line ends (`\n`, `\r\n`) and a byte-order mark.
fn decode_key(raw: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let text = raw.trim().trim_start_matches('\u{feff}').trim();
    let key = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("security.encryption_key must be base64")?;
    if key.len() != 32 {
        bail!(
            "security.encryption_key must be base64 of exactly 32 bytes, got {}",
            key.len()
        );
    }
    Ok(key)
}

/// Parses `250ms`, `30s`, `5m`, `1h`, `1d` (a positive whole number and a unit), at most 7 days.
pub fn parse_duration(raw: &str) -> anyhow::Result<std::time::Duration> {
    parse_duration_up_to(raw, 7)
}

/// [`parse_duration`] with a longest value of `max_days` days.
pub fn parse_duration_up_to(raw: &str, max_days: u64) -> anyhow::Result<std::time::Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: u64 = num
        .parse()
        .context("expected a whole number followed by ms, s, m, h or d")?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => bail!("expected a unit: ms, s, m, h or d"),
    };
    match ms {
        Some(ms) if ms > 0 && ms <= max_days.saturating_mul(86_400_000) => {
            Ok(std::time::Duration::from_millis(ms))
        }
        _ => bail!("must be more than 0 and at most {max_days} days"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_environment() {
        let s = Settings::load_from(8080, None, vars(&[])).unwrap();
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.limits.max_webhooks_per_tenant, 1000);
        let s = Settings::load_from(
            8080,
            None,
            vars(&[
                ("WAYBILL_HTTP__PORT", "9999"),
                ("WAYBILL_DATABASE__URL", "postgres://x/y"),
                (
                    "WAYBILL_SECURITY__ALLOWED_PRIVATE_RANGES",
                    "127.0.0.0/8,10.0.0.0/8",
                ),
                ("WAYBILL_SECURITY__ALLOW_HTTP", "true"),
                ("WAYBILL_LIMITS__MAX_WEBHOOKS_PER_TENANT", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http.port, 9999);
        assert_eq!(s.database.url, "postgres://x/y");
        assert_eq!(s.security.allowed_private_ranges.len(), 2);
        assert!(s.security.allow_http);
        assert_eq!(s.limits.max_webhooks_per_tenant, 0);
    }

    #[test]
    fn production_refuses_development_secrets() {
        let err = Settings::load_from(8080, None, vars(&[("WAYBILL_ENVIRONMENT", "production")]))
            .unwrap_err();
        assert!(format!("{err:#}").contains("encryption_key"), "{err:#}");
        let err = Settings::load_from(
            8080,
            None,
            vars(&[
                ("WAYBILL_ENVIRONMENT", "production"),
                (
                    "WAYBILL_SECURITY__ENCRYPTION_KEY",
                    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                ),
            ]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("jwt_secret"), "{err:#}");
        assert!(
            Settings::load_from(
                8080,
                None,
                vars(&[
                    ("WAYBILL_ENVIRONMENT", "production"),
                    (
                        "WAYBILL_SECURITY__ENCRYPTION_KEY",
                        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
                    ),
                    (
                        "WAYBILL_AUTH__JWT_SECRET",
                        "a-long-enough-production-secret-0123456789"
                    ),
                ])
            )
            .is_ok()
        );
    }

    #[test]
    fn production_refuses_the_development_key_however_it_is_written() {
        let secret = (
            "WAYBILL_AUTH__JWT_SECRET",
            "a-long-enough-production-secret-0123456789",
        );
        for spelling in [
            format!("{DEV_ENCRYPTION_KEY}\n"),
            format!("{DEV_ENCRYPTION_KEY}\r\n"),
            format!("  {DEV_ENCRYPTION_KEY}\t"),
            format!("\u{feff}{DEV_ENCRYPTION_KEY}\n"),
        ] {
            let err = Settings::load_from(
                8080,
                None,
                vars(&[
                    ("WAYBILL_ENVIRONMENT", "production"),
                    ("WAYBILL_SECURITY__ENCRYPTION_KEY", &spelling),
                    secret,
                ]),
            )
            .unwrap_err();
            assert!(
                format!("{err:#}").contains("development encryption key"),
                "{spelling:?}: {err:#}"
            );
        }
        // A real key read from a file with its newline is fine, and is the same key.
        let s = Settings::load_from(
            8080,
            None,
            vars(&[
                ("WAYBILL_ENVIRONMENT", "production"),
                (
                    "WAYBILL_SECURITY__ENCRYPTION_KEY",
                    "\u{feff}AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n",
                ),
                secret,
            ]),
        )
        .unwrap();
        assert_eq!(s.encryption_key().unwrap(), (0u8..32).collect::<Vec<_>>());
        // The development JWT secret with a newline is still the development secret.
        let err = Settings::load_from(
            8080,
            None,
            vars(&[
                ("WAYBILL_ENVIRONMENT", "production"),
                (
                    "WAYBILL_SECURITY__ENCRYPTION_KEY",
                    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                ),
                ("WAYBILL_AUTH__JWT_SECRET", &format!("{DEV_JWT_SECRET}\n")),
            ]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("jwt_secret"), "{err:#}");
    }

    #[test]
    fn unknown_variables_are_refused_but_harness_ones_ignored() {
        let err =
            Settings::load_from(8080, None, vars(&[("WAYBILL_DATABASE__URLL", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("urll"), "{err:#}");
        assert!(
            Settings::load_from(
                8080,
                None,
                vars(&[("WAYBILL_TEST_DATABASE_URL", "x"), ("WAYBILL_CONFIG", "y")])
            )
            .is_ok()
        );
    }

    #[test]
    fn retry_schedule() {
        let s = Settings::load_from(8080, None, vars(&[])).unwrap();
        let d = s.retry_schedule().unwrap();
        assert_eq!(d.len(), 9, "10 attempts in all");
        assert_eq!(d[0], std::time::Duration::from_secs(300));
        assert_eq!(d[8], std::time::Duration::from_secs(3600));
        let s = Settings::load_from(
            8080,
            None,
            vars(&[("WAYBILL_DELIVERY__RETRY_SCHEDULE", "50ms,100ms,1s")]),
        )
        .unwrap();
        assert_eq!(
            s.retry_schedule().unwrap()[1],
            std::time::Duration::from_millis(100)
        );
        for bad in ["5 minutes", "0s", "8d", "-1s", "1w"] {
            let err = Settings::load_from(
                8080,
                None,
                vars(&[("WAYBILL_DELIVERY__RETRY_SCHEDULE", bad)]),
            )
            .unwrap_err();
            assert!(
                format!("{err:#}").contains("retry_schedule"),
                "{bad}: {err:#}"
            );
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err = Settings::load_from(
            8080,
            None,
            vars(&[("WAYBILL_SECURITY__ENCRYPTION_KEY", "c2hvcnQ=")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("32 bytes"));
        let err = Settings::load_from(
            8080,
            None,
            vars(&[("WAYBILL_BROKER__QUEUE_TYPE", "stream")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("queue_type"));
        let err = Settings::load_from(
            8080,
            None,
            vars(&[("WAYBILL_METRICS__TENANT_LABEL_LIMIT", "10001")]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("metrics.tenant_label_limit"),
            "{err:#}"
        );
    }

    #[test]
    fn tenant_label_limit_defaults_to_100_and_0_is_allowed() {
        let s = Settings::load_from(8080, None, vars(&[])).unwrap();
        assert_eq!(s.metrics.tenant_label_limit, 100);
        let s = Settings::load_from(
            8080,
            None,
            vars(&[("WAYBILL_METRICS__TENANT_LABEL_LIMIT", "0")]),
        )
        .unwrap();
        assert_eq!(s.metrics.tenant_label_limit, 0);
    }

    #[test]
    fn broker_url_takes_a_list_of_nodes() {
        let urls = "amqp://a:5672/%2f,amqp://b:5672/%2f";
        let s = Settings::load_from(8080, None, vars(&[("WAYBILL_BROKER__URL", urls)])).unwrap();
        assert_eq!(s.broker.url, urls);
        let err =
            Settings::load_from(8080, None, vars(&[("WAYBILL_BROKER__URL", " , ")])).unwrap_err();
        assert!(format!("{err:#}").contains("broker.url"), "{err:#}");
    }
}
