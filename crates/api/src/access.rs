//! Who may call an operation, checked before the handler runs and in a fixed order: the token
//! (401), then the operation's scopes (403), then the path's `{id}` (404). A token without the
//! scope gets its 403 whatever the path holds, so a 404 never tells it what exists.

use std::{future::Future, marker::PhantomData, ops::Deref, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use waybill_domain::Scope;
use waybill_runtime::{ApiError, Auth};

use crate::path_id::{self, ResourceId};

/// The scopes of which an operation takes any one (`admin` always passes).
pub trait Scopes {
    /// Any one of these lets the caller in.
    const ANY: &'static [Scope];
}

/// Reading subscriptions and their delivery log.
pub struct ReadWebhooks;

impl Scopes for ReadWebhooks {
    const ANY: &'static [Scope] = &[Scope::WebhooksRead, Scope::WebhooksWrite];
}

/// Changing subscriptions, reading their secrets, sending and replaying deliveries.
pub struct WriteWebhooks;

impl Scopes for WriteWebhooks {
    const ANY: &'static [Scope] = &[Scope::WebhooksWrite];
}

/// Reading the event catalog: any scope will do.
pub struct ReadCatalog;

impl Scopes for ReadCatalog {
    const ANY: &'static [Scope] = &[
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::EventsPublish,
    ];
}

/// Changing the event catalog.
pub struct AdminOnly;

impl Scopes for AdminOnly {
    const ANY: &'static [Scope] = &[Scope::Admin];
}

type Checked<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// A caller whose token holds one of `S`'s scopes.
pub struct Caller<S>(Auth, PhantomData<S>);

impl<S> Deref for Caller<S> {
    type Target = Auth;

    fn deref(&self) -> &Auth {
        &self.0
    }
}

impl<S: Scopes + 'static> FromRequest for Caller<S> {
    type Error = ApiError;
    type Future = Checked<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = Auth::from_request(req, payload);
        Box::pin(async move {
            let auth = auth.await?;
            auth.require_any(S::ANY)?;
            Ok(Caller(auth, PhantomData))
        })
    }
}

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
            let Caller(auth, _) = caller.await?;
            Ok(Scoped {
                auth,
                id: id?,
                scopes: PhantomData,
            })
        })
    }
}
