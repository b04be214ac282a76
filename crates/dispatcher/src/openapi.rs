//! The dispatcher's OpenAPI document: it serves only operations endpoints.

use utoipa::openapi::{
    ContentBuilder, HttpMethod, InfoBuilder, LicenseBuilder, OpenApiBuilder, PathItem,
    PathsBuilder, ResponseBuilder, path::OperationBuilder,
};

fn get(summary: &str, ok: &str, content_type: &str) -> PathItem {
    PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .summary(Some(summary))
            .tag("operations")
            .response(
                "200",
                ResponseBuilder::new()
                    .description(ok)
                    .content(content_type, ContentBuilder::new().build()),
            ),
    )
}

/// The document as pretty JSON, with a trailing newline.
pub fn document() -> String {
    let mut ready = get(
        "Postgres and the broker answer and the subscription index is loaded",
        "Ready.",
        "application/json",
    );
    if let Some(op) = ready.get.as_mut() {
        op.responses.responses.insert(
            "503".into(),
            ResponseBuilder::new()
                .description("Not ready; the message names what is missing (with `Retry-After`).")
                .build()
                .into(),
        );
    }
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Waybill dispatcher")
                .description(Some(
                    "The dispatcher has no API of its own: it consumes from RabbitMQ and delivers webhooks. These are its operations endpoints.",
                ))
                .version(env!("CARGO_PKG_VERSION"))
                .license(Some(LicenseBuilder::new().name("Apache-2.0").build())),
        )
        .paths(
            PathsBuilder::new()
                .path("/healthz", get("The process is alive", "Alive.", "application/json"))
                .path("/readyz", ready)
                .path(
                    "/metrics",
                    get(
                        "Prometheus metrics: deliveries by outcome, attempt latency, requests in flight, index size",
                        "Prometheus text format.",
                        "text/plain",
                    ),
                ),
        )
        .build();
    waybill_runtime::openapi::render(doc)
}
