//! `/v1/events`: the event catalog.

pub mod get;
pub mod list;
pub mod update;
pub mod view;

use waybill_runtime::ApiError;
use waybill_store::{PooledConn, event_types::EventTypeRow};

use crate::state::{AppState, StoreResultExt};

/// The event type `name` with the connection that read it, or a 404. A name that is not one at
/// all is a 404 before the database is asked (so it is one even while the database is away).
pub async fn find(state: &AppState, name: &str) -> Result<(PooledConn, EventTypeRow), ApiError> {
    if waybill_domain::EventTypeName::parse(name).is_err() {
        return Err(not_found(name));
    }
    let mut conn = state.conn().await?;
    let row = waybill_store::event_types::find(&mut conn, name)
        .await
        .api()?
        .ok_or_else(|| not_found(name))?;
    Ok((conn, row))
}

/// The 404 of an event type that does not exist, naming it when it is a well-formed name.
pub fn not_found(name: &str) -> ApiError {
    match waybill_domain::EventTypeName::parse(name) {
        Ok(_) => ApiError::not_found(format!("There is no event type `{name}`.")),
        Err(_) => ApiError::not_found("There is no event type of that name."),
    }
}
