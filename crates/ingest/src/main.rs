//! `waybill-ingest`: serve the event front door, mint a token for an operator, print the
//! OpenAPI document.

use waybill_ingest::Application;
use waybill_runtime::cli::{self, Service};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let service = Service {
        name: "waybill-ingest",
        about: "Waybill ingest: publish events, 202 once the broker confirmed them",
        port: 8081,
        default_scopes: "events:publish",
        openapi: waybill_ingest::openapi::document,
    };
    cli::main(service, |settings| async move {
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "waybill-ingest listening");
        app.run_until_stopped().await
    })
    .await
}
