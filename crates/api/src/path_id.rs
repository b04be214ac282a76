//! The `{id}` of a resource's path, parsed into its typed id. A path id that does not parse names
//! nothing, so it answers like an id that is not the caller's: 404, never 400.

use std::{
    future::{Ready, ready},
    str::FromStr,
};

use actix_web::{FromRequest, HttpRequest, dev::Payload};
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

/// The path's `{id}` as a `T`. Extracting never fails: the handler asks with [`PathId::get`]
/// after its scope check, so a token without the scope gets its 403 whatever the path holds.
pub struct PathId<T>(Result<T, ApiError>);

impl<T: ResourceId> PathId<T> {
    /// The id, or the 404 of a malformed one.
    pub fn get(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T: ResourceId> FromRequest for PathId<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .match_info()
            .get("id")
            .and_then(|raw| raw.parse::<T>().ok())
            .ok_or_else(T::malformed);
        ready(Ok(PathId(id)))
    }
}
