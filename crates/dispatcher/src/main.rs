//! `waybill-dispatcher`: fan out and deliver, mint a token for an operator, print the OpenAPI
//! document of the operations endpoints.

use waybill_dispatcher::Application;
use waybill_runtime::cli::{self, Service};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let service = Service {
        name: "waybill-dispatcher",
        about: "Waybill dispatcher: fan events out, deliver signed webhooks, retry, record attempts",
        port: 8082,
        default_scopes: "webhooks:read",
        openapi: waybill_dispatcher::openapi::document,
    };
    cli::main(service, |settings| async move {
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "waybill-dispatcher listening");
        app.run_until_stopped().await
    })
    .await
}
