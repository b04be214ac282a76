//! `/v1/events`: the event catalog.

pub mod get;
pub mod list;
pub mod update;
pub mod view;

use waybill_runtime::ApiError;

pub fn not_found(name: &str) -> ApiError {
    match waybill_domain::EventTypeName::parse(name) {
        Ok(_) => ApiError::not_found(format!("There is no event type `{name}`.")),
        Err(_) => ApiError::not_found("There is no event type of that name."),
    }
}
