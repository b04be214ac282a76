//! Latency summaries.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    pub fn of(samples: &mut [Duration]) -> Summary {
        samples.sort_unstable();
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
            samples.get(i).copied().map_or(0.0, ms)
        };
        let total: Duration = samples.iter().sum();
        Summary {
            samples: samples.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: samples.last().copied().map_or(0.0, ms),
            mean_ms: if samples.is_empty() {
                0.0
            } else {
                ms(total / samples.len() as u32)
            },
        }
    }

    pub fn line(&self, name: &str) -> String {
        format!(
            "{name:<22} n={:<6} p50={:>7.3} ms  p95={:>7.3} ms  p99={:>7.3} ms  max={:>8.3} ms",
            self.samples, self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
        )
    }
}
