//! The subscription change feed: one message per change, published on the
//! `<prefix>.subscriptions` fanout exchange so every dispatcher keeps its index current.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::WebhookId;

/// What happened to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
    SecretRotated,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::SecretRotated => "secret_rotated",
        }
    }
}

/// One change message. `revision` grows by one with every change of a subscription, so a
/// consumer keeps the highest it has seen and ignores anything older.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionChange {
    pub kind: ChangeKind,
    pub tenant: String,
    pub webhook_id: WebhookId,
    pub revision: i64,
    pub changed_at: DateTime<Utc>,
    /// The subscription after the change; `None` once deleted.
    pub subscription: Option<SubscriptionSnapshot>,
}

/// A subscription's full state as a dispatcher needs it. Credentials stay encrypted (base64 of
/// the at-rest ciphertext); only holders of the encryption key can read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSnapshot {
    pub id: WebhookId,
    pub tenant: String,
    pub url: String,
    pub method: String,
    pub events: Vec<String>,
    pub client_ids: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub auth: AuthSnapshot,
    /// Signing keys in force: the current one (`expires_at` None) and any still in their grace
    /// period after a rotation.
    pub secrets: Vec<SecretSnapshot>,
    pub active: bool,
    pub disabled_reason: Option<String>,
    /// Deliveries per second the receiver accepts; `None`: no limit. Absent in messages of
    /// earlier versions.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// The payload filter as the tenant wrote it; `None`: every matching event. Absent in
    /// messages of earlier versions.
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    pub revision: i64,
}

/// `auth` with its credential (password or token) encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSnapshot {
    #[serde(rename = "type")]
    pub kind: String,
    pub username: Option<String>,
    pub header: Option<String>,
    pub credential_encrypted: Option<String>,
}

/// One signing key, encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSnapshot {
    pub secret_encrypted: String,
    pub expires_at: Option<DateTime<Utc>>,
}
