//! `waybill-ingest`: serve the event front door, or mint a token for an operator.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use waybill_ingest::Application;
use waybill_runtime::{Settings, auth::mint_for_operator, telemetry};

/// Default port of ingest.
const PORT: u16 = 8081;

#[derive(Parser)]
#[command(
    name = "waybill-ingest",
    version,
    about = "Waybill ingest: publish events, 202 once the broker confirmed them"
)]
struct Cli {
    /// TOML configuration file (overridden by WAYBILL_* variables).
    #[arg(long, env = "WAYBILL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Print a signed bearer token for a tenant.
    Token {
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes.
        #[arg(long, default_value = "events:publish")]
        scopes: String,
        /// Lifetime: 3600, 90s, 30m, 12h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waybill-ingest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", waybill_ingest::openapi::document());
            Ok(())
        }
        Command::Token {
            tenant,
            scopes,
            ttl,
        } => {
            let settings = Settings::load(PORT, cli.config.as_deref())?;
            println!("{}", mint_for_operator(&settings, &tenant, &scopes, &ttl)?);
            Ok(())
        }
        Command::Serve => {
            let settings = Settings::load(PORT, cli.config.as_deref())?;
            telemetry::init("waybill-ingest", &settings.log);
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "waybill-ingest listening");
            app.run_until_stopped().await
        }
    }
}
