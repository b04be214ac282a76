//! Structured logs through `tracing`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogSettings;

/// Installs the global subscriber; `RUST_LOG` overrides the configured level. Safe to call twice.
pub fn init(service: &'static str, log: &LogSettings) {
    // actix-http logs every malformed request from a client at ERROR; that is the client's
    // problem, and answered with a 400, so it would only page someone for nothing.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{},actix_http::h1::dispatcher=off", log.level))
    });
    let registry = tracing_subscriber::registry().with(filter);
    let result = if log.format == "pretty" {
        registry.with(fmt::layer().with_target(false)).try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    };
    if result.is_ok() {
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            "logging initialised"
        );
    }
}
