//! Who may call an operation, checked before the handler runs and in a fixed order: the token
//! (401), then the operation's scopes (403), then the path's `{id}` (404). A token without the
//! scope gets its 403 whatever the path holds, so a 404 never tells it what exists.

use std::marker::PhantomData;

use actix_web::{FromRequest, HttpRequest, dev::Payload};
pub use waybill_runtime::access::{
    AdminOnly, Caller, ReadCatalog, ReadWebhooks, Scopes, WriteWebhooks,
};
use waybill_runtime::{ApiError, Auth, access::Checked};

use crate::path_id::{self, ResourceId};

/// A caller with one of `S`'s scopes, and the path's `{id}` as a `T` (read only after the scope
/// check passed).
pub struct Scoped<S, T> {
    pub auth: Auth,
    pub id: T,
    scopes: PhantomData<S>,
}

impl<S: Scopes + 'static, T: ResourceId + 'static> FromRequest for Scoped<S, T> {
    type Error = ApiError;
    type Future = Checked<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::<S>::from_request(req, payload);
        let id = path_id::parse::<T>(req);
        Box::pin(async move {
            let auth = caller.await?.into_inner();
            Ok(Scoped {
                auth,
                id: id?,
                scopes: PhantomData,
            })
        })
    }
}
