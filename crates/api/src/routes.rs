//! Every route of `waybill-api`, in one place. An operation is registered with the type its
//! `#[utoipa::path]` generates, which carries its path and method, so registering it also puts
//! it in the OpenAPI document.

use actix_web::web;
use waybill_runtime::{
    http,
    openapi::{Routes, ServiceConfig},
};

use crate::{admin::invalid_events, deliveries, events, filters, openapi, webhooks};

pub fn configure(cfg: &mut ServiceConfig) {
    for (path, route) in http::standard_routes(openapi::document) {
        cfg.route(path, route);
    }
    cfg.service(
        Routes::new()
            .operation(events::list::__path_list, events::list::list)
            .operation(events::get::__path_get, events::get::get)
            .operation(events::update::__path_update, events::update::update)
            .operation(webhooks::list::__path_list, webhooks::list::list)
            .operation(webhooks::create::__path_create, webhooks::create::create)
            .operation(webhooks::get::__path_get, webhooks::get::get)
            .operation(webhooks::update::__path_update, webhooks::update::update)
            .operation(webhooks::delete::__path_delete, webhooks::delete::delete)
            .operation(
                webhooks::secret::__path_get_secret,
                webhooks::secret::get_secret,
            )
            .operation(webhooks::secret::__path_rotate, webhooks::secret::rotate)
            .operation(filters::test::__path_test, filters::test::test)
            .operation(deliveries::list::__path_list, deliveries::list::list)
            .operation(webhooks::test::__path_test, webhooks::test::test)
            .operation(
                deliveries::replay::__path_recover,
                deliveries::replay::recover,
            )
            .operation(deliveries::replay::__path_retry, deliveries::replay::retry)
            .operation(deliveries::get::__path_get, deliveries::get::get)
            .operation(
                invalid_events::list::__path_list,
                invalid_events::list::list,
            )
            .operation(
                invalid_events::redrive::__path_redrive,
                invalid_events::redrive::redrive,
            )
            .operation(
                invalid_events::delete::__path_delete,
                invalid_events::delete::delete,
            ),
    )
    .default_service(web::to(http::not_found));
}
