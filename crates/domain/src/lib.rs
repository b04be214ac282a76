//! Waybill's domain: the types and rules every service shares. Pure: no I/O, no runtime.

pub mod breaker;
pub mod catalog;
pub mod change;
pub mod delivery;
pub mod envelope;
pub mod event;
pub mod filter;
pub mod ids;
pub mod invalid_event;
pub mod retry;
pub mod secret;
pub mod signature;
pub mod subscription;
pub mod tenant;
pub mod throttle;
pub mod url_policy;
pub mod validation;

pub use catalog::{CatalogIndex, EventDefinition, EventTypeName};
pub use ids::{DeliveryId, WebhookId};
pub use secret::SigningSecret;
pub use subscription::{EventPattern, HttpMethod, WebhookAuth, WebhookInput, WebhookSettings};
pub use tenant::{Scope, TenantId};
pub use url_policy::UrlPolicy;
pub use validation::ValidationErrors;
