//! OpenAPI pieces every service's document shares: the bearer scheme, the error shape, and the
//! error answers any operation can give.

use std::collections::BTreeMap;

use actix_web::{
    FromRequest, Handler, Responder,
    dev::{AppService, HttpServiceFactory},
    http::Method,
};
use serde::Serialize;
use utoipa::{
    Modify, ToSchema,
    openapi::{
        ContentBuilder, HttpMethod, OpenApi, Ref, RefOr, Required, ResponseBuilder, Schema, Type,
        path::{Operation, PathItem, Paths},
        schema::SchemaType,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_actix_web::{AppExt, OpenApiFactory};

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`,
    /// `request_timeout`, `conflict`, `payload_too_large`, `unsupported_media_type`, `validation_failed`, `rate_limited`,
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
/// 408, 413, 415 or 422.
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
        const WITH_BODY: [(&str, &str); 5] = [
            (
                "400",
                "Malformed JSON, not an object, or a value of the wrong type.",
            ),
            (
                "408",
                "The body did not arrive whole within the read timeout (5 s by default).",
            ),
            ("413", "The body is over the size limit (1 MiB)."),
            ("415", "The body is not sent as `application/json`."),
            (
                "422",
                "Validation failed; `errors` lists every problem by field.",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
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

/// The registration a service's `configure` receives: actix's, collecting the paths and schemas
/// of what it registers.
pub use utoipa_actix_web::service_config::ServiceConfig;

type Schemas = Vec<(String, RefOr<Schema>)>;

/// A service's documented routes, each declared once: an operation is a handler and the
/// `__path_<handler>` type its `#[utoipa::path]` generates, which names the path and the method,
/// so registering it also documents it. Operations on one path share an actix resource, which
/// answers any other method with 405 and `Allow`.
#[derive(Default)]
pub struct Routes {
    resources: Vec<Resource>,
    /// Index of the resource the last operation went to, for [`Routes::app_data`].
    last: usize,
    paths: Paths,
    schemas: Schemas,
}

type Setup = Box<dyn FnOnce(actix_web::Resource) -> actix_web::Resource>;

struct Resource {
    path: String,
    methods: Vec<Method>,
    routes: Vec<actix_web::Route>,
    setup: Vec<Setup>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves the operation `doc` documents with `handler`, at the path and for the methods of
    /// `doc`.
    pub fn operation<D, F, Args>(mut self, doc: D, handler: F) -> Self
    where
        D: utoipa::Path + OpenApiFactory,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let path = D::path();
        self.paths.merge(doc.paths());
        doc.schemas(&mut self.schemas);
        self.last = match self.resources.iter().position(|r| r.path == path) {
            Some(i) => i,
            None => {
                self.resources.push(Resource {
                    path,
                    methods: Vec::new(),
                    routes: Vec::new(),
                    setup: Vec::new(),
                });
                self.resources.len() - 1
            }
        };
        if let Some(resource) = self.resources.get_mut(self.last) {
            for method in D::methods() {
                let method = actix_method(&method);
                resource
                    .routes
                    .push(actix_web::web::method(method.clone()).to(handler.clone()));
                resource.methods.push(method);
            }
        }
        self
    }

    /// Data for the path of the operation added last (e.g. its body limit), like
    /// `actix_web::Resource::app_data`.
    pub fn app_data<U: 'static>(mut self, data: U) -> Self {
        if let Some(resource) = self.resources.get_mut(self.last) {
            resource.setup.push(Box::new(move |r| r.app_data(data)));
        }
        self
    }
}

fn actix_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

impl HttpServiceFactory for Routes {
    fn register(self, config: &mut AppService) {
        for r in self.resources {
            let allow = r
                .methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut resource = actix_web::Resource::new(r.path.as_str());
            for setup in r.setup {
                resource = setup(resource);
            }
            for route in r.routes {
                resource = resource.route(route);
            }
            resource
                .default_service(crate::http::method_not_allowed(allow))
                .register(config);
        }
    }
}

impl OpenApiFactory for Routes {
    fn paths(&self) -> Paths {
        self.paths.clone()
    }

    fn schemas(&self, schemas: &mut Schemas) {
        schemas.extend(self.schemas.iter().cloned());
    }
}

/// The document `configure` registers: `base` (title, tags, shared components) with every
/// operation it registers, and the error answers all operations share.
pub fn collect(base: OpenApi, configure: fn(&mut ServiceConfig)) -> OpenApi {
    let (_, mut doc) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(base)
        .configure(configure)
        .split_for_parts();
    CommonErrors.modify(&mut doc);
    optional_bodies(&mut doc);
    doc
}

/// utoipa writes a body that may be left out (`Option<T>`) as `oneOf: [T, null]`, but the
/// services refuse a `null` body (400) and take an empty one: such a body is `T`, not required.
fn optional_bodies(doc: &mut OpenApi) {
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let Some(RefOr::T(body)) = op.request_body.as_mut() else {
                continue;
            };
            let mut optional = false;
            for content in body.content.values_mut() {
                let RefOr::T(content) = content else {
                    continue;
                };
                let Some(RefOr::T(Schema::OneOf(one))) = &content.schema else {
                    continue;
                };
                if one.items.len() == 2 && one.items.iter().any(is_null) {
                    let inner = one.items.iter().find(|s| !is_null(s)).cloned();
                    content.schema = inner;
                    optional = true;
                }
            }
            if optional {
                body.required = Some(Required::False);
            }
        }
    }
}

/// Every operation of a path, whatever its method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.patch,
        &mut item.put,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}
