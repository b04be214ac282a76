//! The three services as the real release binaries, each its own process, so that each one's
//! memory can be read from `/proc`: the binaries beside this one, pointed at a scenario's
//! database and broker prefix through `WAYBILL_*` variables.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use waybill_runtime::Settings;

/// One service process.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    child: Child,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Peak resident memory so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        proc_status_kib(self.pid(), "VmHWM:").map(|kib| kib as f64 / 1024.0)
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Drop for Service {
    fn drop(&mut self) {
        // SIGTERM first, so the service drains; then make sure.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// api, ingest and dispatcher, started in that order and ready.
pub struct Cluster {
    pub api: Service,
    pub ingest: Service,
    pub dispatcher: Service,
}

/// A free port on loopback (released before the service binds it).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .context("the benchmark's own directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p {name}` (make bench does)",
            path.display()
        );
    }
    Ok(path)
}

impl Cluster {
    /// Starts the three services with `settings`' database and broker, `extra` variables on top.
    pub async fn start(settings: &Settings, extra: &[(&str, String)]) -> anyhow::Result<Cluster> {
        let api = spawn("waybill-api", settings, extra).await?;
        // The api migrates the database; the others then start on a migrated one.
        let ingest = spawn("waybill-ingest", settings, extra).await?;
        let dispatcher = spawn("waybill-dispatcher", settings, extra).await?;
        Ok(Cluster {
            api,
            ingest,
            dispatcher,
        })
    }

    pub fn services(&self) -> [&Service; 3] {
        [&self.api, &self.ingest, &self.dispatcher]
    }
}

async fn spawn(
    name: &'static str,
    settings: &Settings,
    extra: &[(&str, String)],
) -> anyhow::Result<Service> {
    let port = free_port()?;
    let mut cmd = Command::new(binary(name)?);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WAYBILL_DATABASE__URL", &settings.database.url)
        .env("WAYBILL_DATABASE__POOL_SIZE", "16")
        .env("WAYBILL_BROKER__URL", &settings.broker.url)
        .env("WAYBILL_BROKER__PREFIX", &settings.broker.prefix)
        .env("WAYBILL_HTTP__PORT", port.to_string())
        .env("WAYBILL_SECURITY__ALLOW_HTTP", "true")
        .env("WAYBILL_SECURITY__ALLOWED_PRIVATE_RANGES", "127.0.0.0/8")
        .env("WAYBILL_RATE_LIMIT__PER_SECOND", "0")
        .env("WAYBILL_LOG__LEVEL", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let service = Service { name, port, child };
    let client = reqwest::Client::builder().no_proxy().build()?;
    crate::common::wait_ready(&client, &service.base()).await?;
    Ok(service)
}

/// CPU seconds used so far by every live process whose command is `comm` (`beam.smp` for
/// RabbitMQ, `postgres` for PostgreSQL's server processes), or by this process (`self`).
pub fn cpu_of(comm: &str) -> f64 {
    let read = |path: &str| -> Option<(String, f64)> {
        let stat = std::fs::read_to_string(path).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some((name, ticks / 100.0))
    };
    if comm == "self" {
        return read("/proc/self/stat").map_or(0.0, |(_, s)| s);
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| read(&format!("{}/stat", e.path().display())))
        .filter(|(name, _)| name == comm)
        .map(|(_, s)| s)
        .sum()
}
