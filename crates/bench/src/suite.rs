//! `waybill-bench suite`: the pipeline scenarios one after the other, each in a database and
//! broker prefix of its own, with a JSON file of every figure and a short report.

use std::path::Path;

use serde_json::json;

use crate::{
    exporter::Tracing,
    pipeline::{self, Scenario, Via},
};

/// The retry schedule of the scenario with failures: short, so retries land within the run.
fn short_schedule() -> Vec<String> {
    ["100ms", "200ms", "500ms", "1s", "2s"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn scenarios(seconds: u64) -> Vec<Scenario> {
    let base = Scenario {
        name: String::new(),
        via: Via::Http,
        rate: Some(200),
        publishers: 1,
        seconds,
        fanout: 1,
        fail_ratio: 0.0,
        seeded_subscriptions: 0,
        seeded_tenants: 1,
        retry_schedule: short_schedule(),
        tracing: Tracing::Off,
    };
    vec![
        Scenario {
            name: "steady-200".into(),
            ..base.clone()
        },
        Scenario {
            name: "max-http".into(),
            rate: None,
            publishers: 64,
            ..base.clone()
        },
        Scenario {
            name: "max-amqp".into(),
            via: Via::Amqp,
            rate: None,
            publishers: 64,
            ..base.clone()
        },
        Scenario {
            name: "fanout-100".into(),
            rate: Some(50),
            fanout: 100,
            ..base.clone()
        },
        Scenario {
            name: "failing-10pct".into(),
            fail_ratio: 0.1,
            ..base.clone()
        },
        Scenario {
            name: "index-100k".into(),
            seeded_subscriptions: 100_000,
            seeded_tenants: 1_000,
            ..base
        },
    ]
}

/// Runs the scenarios named in `only` (all when empty), each once per tracing mode, the modes
/// of one scenario back to back so that they are compared under the same conditions.
pub async fn run(
    seconds: u64,
    only: &[String],
    tracing: &[Tracing],
    json_path: &Path,
) -> anyhow::Result<()> {
    let modes = if tracing.is_empty() {
        &[Tracing::Off][..]
    } else {
        tracing
    };
    if let Some(unknown) = only
        .iter()
        .find(|n| !scenarios(seconds).iter().any(|s| &s.name == *n))
    {
        anyhow::bail!("no scenario named {unknown}");
    }
    let mut results = Vec::new();
    for s in scenarios(seconds) {
        if !only.is_empty() && !only.contains(&s.name) {
            continue;
        }
        for &mode in modes {
            let outcome = pipeline::run(Scenario {
                tracing: mode,
                ..s.clone()
            })
            .await?;
            print!("{}", outcome.report());
            results.push(outcome);
        }
    }
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let doc = json!({
        "machine": machine(),
        "results": results,
    });
    std::fs::write(json_path, serde_json::to_string_pretty(&doc)?)?;
    println!("results written to {}", json_path.display());
    Ok(())
}

/// What the figures were measured on.
fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (memory_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "os": std::env::consts::OS,
        "measured_at": chrono::Utc::now().to_rfc3339(),
    })
}
