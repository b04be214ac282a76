//! The command line every Waybill binary shares: `serve` (the default), `token` and `openapi`.

use std::{future::Future, path::PathBuf, process::ExitCode};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::{Settings, auth::mint_for_operator, telemetry};

#[derive(Parser)]
struct Cli {
    /// TOML configuration file (overridden by WAYBILL_* variables).
    #[arg(long, env = "WAYBILL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Print a signed bearer token for a tenant.
    Token {
        /// Tenant the token speaks for.
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: webhooks:read, webhooks:write, events:publish, admin.
        #[arg(long)]
        scopes: Option<String>,
        /// Lifetime: 3600, 90s, 30m, 12h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Print the OpenAPI document.
    Openapi,
}

/// What a binary tells [`main`] about itself.
pub struct Service<D> {
    pub name: &'static str,
    pub about: &'static str,
    pub port: u16,
    /// Scopes of `token` when none are given.
    pub default_scopes: &'static str,
    pub openapi: D,
}

/// Parses the command line and runs it; `serve` gets the loaded settings.
pub async fn main<D, S, F>(service: Service<D>, serve: S) -> ExitCode
where
    D: Fn() -> String,
    S: FnOnce(Settings) -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    let matches = Cli::command()
        .name(service.name)
        .about(service.about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let result = match Cli::from_arg_matches(&matches) {
        Ok(cli) => run(&service, cli, serve).await,
        Err(e) => e.exit(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e:#}", service.name);
            ExitCode::FAILURE
        }
    }
}

async fn run<D, S, F>(service: &Service<D>, cli: Cli, serve: S) -> anyhow::Result<()>
where
    D: Fn() -> String,
    S: FnOnce(Settings) -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", (service.openapi)());
            Ok(())
        }
        Command::Token {
            tenant,
            scopes,
            ttl,
        } => {
            let settings = Settings::load(service.port, cli.config.as_deref())?;
            let scopes = scopes.as_deref().unwrap_or(service.default_scopes);
            println!("{}", mint_for_operator(&settings, &tenant, scopes, &ttl)?);
            Ok(())
        }
        Command::Serve => {
            let settings = Settings::load(service.port, cli.config.as_deref())?;
            let telemetry = telemetry::start(service.name, &settings.log)?;
            let result = serve(settings).await;
            telemetry.shutdown().await;
            result
        }
    }
}
