//! Scope checks as extractors: a handler that takes a [`Caller<S>`] runs only for a token with one
//! of `S`'s scopes, and a token without one gets its 403 before anything else of the request
//! (path, query, body) is looked at.

use std::{future::Future, marker::PhantomData, ops::Deref, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use waybill_domain::Scope;

use crate::{ApiError, Auth};

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

/// Publishing events.
pub struct PublishEvents;

impl Scopes for PublishEvents {
    const ANY: &'static [Scope] = &[Scope::EventsPublish];
}

/// Changing the event catalog.
pub struct AdminOnly;

impl Scopes for AdminOnly {
    const ANY: &'static [Scope] = &[Scope::Admin];
}

/// The future of an extractor that checks the caller.
pub type Checked<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// A caller whose token holds one of `S`'s scopes.
pub struct Caller<S>(Auth, PhantomData<S>);

impl<S> Caller<S> {
    /// The checked token.
    pub fn into_inner(self) -> Auth {
        self.0
    }
}

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
