//! Every route of `waybill-ingest`.

use actix_web::web;
use waybill_runtime::{body::BodyLimit, http};

use crate::{
    events::{self, MAX_BATCH_BYTES, MAX_EVENT_BYTES},
    openapi,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(http::healthz))
        .route("/readyz", web::get().to(http::readyz))
        .route("/metrics", web::get().to(http::metrics))
        .route(
            "/openapi.json",
            waybill_runtime::openapi::serve(openapi::document),
        )
        .service(
            web::resource("/v1/events")
                .app_data(web::Data::new(BodyLimit(MAX_EVENT_BYTES)))
                .route(web::post().to(events::publish::publish))
                .default_service(http::method_not_allowed("POST")),
        )
        .service(
            web::resource("/v1/events/batch")
                .app_data(web::Data::new(BodyLimit(MAX_BATCH_BYTES)))
                .route(web::post().to(events::batch::batch))
                .default_service(http::method_not_allowed("POST")),
        )
        .default_service(web::to(http::not_found));
}
