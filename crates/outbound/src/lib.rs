//! The HTTP side of a delivery, shared by the dispatcher and the api's test send: the request of
//! the contract (body, Standard Webhooks signature, `waybill-*` headers, custom and auth
//! headers), one pooled client that follows no redirect, and the address guard that keeps it
//! off internal hosts.

mod client;
mod endpoint;
mod guard;
mod request;

pub use client::{Attempt, AttemptResult, Outbound, RESPONSE_EXCERPT_BYTES};
pub use endpoint::{Endpoint, EndpointError, SigningKey};
