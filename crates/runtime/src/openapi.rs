//! OpenAPI pieces every service's document shares: the bearer scheme, the error shape, and the
//! error answers any operation can give.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::{
    Modify, ToSchema,
    openapi::{
        ContentBuilder, Ref, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `validation_failed`, `rate_limited`,
    /// `unavailable` or `internal`.
    #[schema(example = "validation_failed")]
    pub code: String,
    #[schema(example = "The given data was invalid.")]
    pub message: String,
    /// With 422 only: messages by field.
    #[schema(example = json!({"url": ["must use https"]}))]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

/// Adds the error answers any operation can give, so each handler documents only its own:
/// every authenticated operation can be a 401, 403, 429, 500 or 503; one with a body also a 400,
/// 413, 415 or 422.
pub struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorResponse")))
                        .build(),
                )
                .build()
        };
        const ALWAYS: [(&str, &str); 5] = [
            (
                "401",
                "Missing, malformed or expired token (with `WWW-Authenticate: Bearer`).",
            ),
            ("403", "The token lacks the scope this operation needs."),
            (
                "429",
                "The tenant is over its rate limit (with `Retry-After`).",
            ),
            ("500", "An unexpected error; nothing about it is disclosed."),
            ("503", "The database is unavailable (with `Retry-After`)."),
        ];
        const WITH_BODY: [(&str, &str); 4] = [
            (
                "400",
                "Malformed JSON, not an object, or a value of the wrong type.",
            ),
            ("413", "The body is over the size limit (1 MiB)."),
            ("415", "The body is not sent as `application/json`."),
            (
                "422",
                "Validation failed; `errors` lists every problem by field.",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let extra = if op.request_body.is_some() {
                    &WITH_BODY[..]
                } else {
                    &[]
                };
                for (code, text) in ALWAYS.iter().chain(extra) {
                    op.responses
                        .responses
                        .entry((*code).to_owned())
                        .or_insert_with(|| error(text).into());
                }
            }
        }
    }
}

pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// A service's document as pretty JSON with a trailing newline, versioned like the workspace.
pub fn render(mut doc: utoipa::openapi::OpenApi) -> String {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /openapi.json` for a service whose document `document` renders.
pub fn serve(document: fn() -> String) -> actix_web::Route {
    actix_web::web::get().to(move || async move {
        actix_web::HttpResponse::Ok()
            .content_type("application/json")
            .body(document())
    })
}
