//! The `{id}` of a resource's path, parsed into its typed id. A path id that does not parse names
//! nothing, so it answers like an id that is not the caller's: 404, never 400. It is read after
//! the caller's scope check (see [`crate::access::Scoped`]).

use std::str::FromStr;

use actix_web::HttpRequest;
use waybill_domain::{DeliveryId, WebhookId};
use waybill_runtime::ApiError;

/// An id kind with the 404s of its resource.
pub trait ResourceId: FromStr + Copy {
    /// The 404 of a path id that is not an id of this kind at all.
    fn malformed() -> ApiError;
    /// The 404 of a well-formed id that names nothing of the caller's.
    fn not_found(self) -> ApiError;
}

impl ResourceId for WebhookId {
    fn malformed() -> ApiError {
        ApiError::not_found("There is no webhook with that id.")
    }

    fn not_found(self) -> ApiError {
        ApiError::not_found(format!("There is no webhook {self}."))
    }
}

impl ResourceId for DeliveryId {
    fn malformed() -> ApiError {
        ApiError::not_found("There is no delivery with that id.")
    }

    fn not_found(self) -> ApiError {
        Self::malformed()
    }
}

/// The path's `{id}` as a `T`, or the 404 of a malformed one.
pub fn parse<T: ResourceId>(req: &HttpRequest) -> Result<T, ApiError> {
    req.match_info()
        .get("id")
        .and_then(|raw| raw.parse::<T>().ok())
        .ok_or_else(T::malformed)
}
