//! Every route of `waybill-ingest`. An operation is registered with the type its
//! `#[utoipa::path]` generates, which carries its path and method, so registering it also puts
//! it in the OpenAPI document.

use actix_web::web;
use waybill_runtime::{
    body::BodyLimit,
    http,
    openapi::{Routes, ServiceConfig},
};

use crate::{
    events::{self, MAX_BATCH_BYTES, MAX_EVENT_BYTES},
    openapi,
};

pub fn configure(cfg: &mut ServiceConfig) {
    for (path, route) in http::standard_routes(openapi::document) {
        cfg.route(path, route);
    }
    cfg.service(
        Routes::new()
            .operation(events::publish::__path_publish, events::publish::publish)
            .app_data(web::Data::new(BodyLimit(MAX_EVENT_BYTES)))
            .operation(events::batch::__path_batch, events::batch::batch)
            .app_data(web::Data::new(BodyLimit(MAX_BATCH_BYTES))),
    )
    .default_service(web::to(http::not_found));
}
