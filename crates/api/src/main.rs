//! `waybill-api`: serve the control plane, or mint a token for an operator.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use waybill_api::Application;
use waybill_runtime::{Settings, auth::mint_for_operator, telemetry};

/// Default port of the api.
const PORT: u16 = 8080;

#[derive(Parser)]
#[command(
    name = "waybill-api",
    version,
    about = "Waybill control plane: event catalog and webhook subscriptions"
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
        /// Tenant the token speaks for.
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: webhooks:read, webhooks:write, events:publish, admin.
        #[arg(long, default_value = "webhooks:read,webhooks:write")]
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
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waybill-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", waybill_api::openapi::document());
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
            telemetry::init("waybill-api", &settings.log);
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "waybill-api listening");
            app.run_until_stopped().await
        }
    }
}
