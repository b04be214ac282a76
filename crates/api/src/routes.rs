//! Every route of `waybill-api`, in one place.

use actix_web::web;
use waybill_runtime::http;

use crate::{deliveries, events, openapi, webhooks};

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
                .route(web::get().to(events::list::list))
                .default_service(http::method_not_allowed("GET")),
        )
        .service(
            web::resource("/v1/events/{name}")
                .route(web::get().to(events::get::get))
                .route(web::patch().to(events::update::update))
                .default_service(http::method_not_allowed("GET, PATCH")),
        )
        .service(
            web::resource("/v1/webhooks")
                .route(web::get().to(webhooks::list::list))
                .route(web::post().to(webhooks::create::create))
                .default_service(http::method_not_allowed("GET, POST")),
        )
        .service(
            web::resource("/v1/webhooks/{id}")
                .route(web::get().to(webhooks::get::get))
                .route(web::patch().to(webhooks::update::update))
                .route(web::delete().to(webhooks::delete::delete))
                .default_service(http::method_not_allowed("GET, PATCH, DELETE")),
        )
        .service(
            web::resource("/v1/webhooks/{id}/secret")
                .route(web::get().to(webhooks::secret::get_secret))
                .default_service(http::method_not_allowed("GET")),
        )
        .service(
            web::resource("/v1/webhooks/{id}/secret/rotate")
                .route(web::post().to(webhooks::secret::rotate))
                .default_service(http::method_not_allowed("POST")),
        )
        .service(
            web::resource("/v1/webhooks/{id}/deliveries")
                .route(web::get().to(deliveries::list::list))
                .default_service(http::method_not_allowed("GET")),
        )
        .service(
            web::resource("/v1/webhooks/{id}/test")
                .route(web::post().to(webhooks::test::test))
                .default_service(http::method_not_allowed("POST")),
        )
        .service(
            web::resource("/v1/webhooks/{id}/recover")
                .route(web::post().to(deliveries::replay::recover))
                .default_service(http::method_not_allowed("POST")),
        )
        .service(
            web::resource("/v1/deliveries/{id}/retry")
                .route(web::post().to(deliveries::replay::retry))
                .default_service(http::method_not_allowed("POST")),
        )
        .service(
            web::resource("/v1/deliveries/{id}")
                .route(web::get().to(deliveries::get::get))
                .default_service(http::method_not_allowed("GET")),
        )
        .default_service(web::to(http::not_found));
}
