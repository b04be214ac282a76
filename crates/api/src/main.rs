//! `waybill-api`: serve the control plane, mint a token for an operator, print the OpenAPI
//! document.

use waybill_api::Application;
use waybill_runtime::cli::{self, Service};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let service = Service {
        name: "waybill-api",
        about: "Waybill control plane: event catalog and webhook subscriptions",
        port: 8080,
        default_scopes: "webhooks:read,webhooks:write",
        openapi: waybill_api::openapi::document,
    };
    cli::main(service, |settings| async move {
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "waybill-api listening");
        app.run_until_stopped().await
    })
    .await
}
