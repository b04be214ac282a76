//! Ids of subscriptions and deliveries. Both are UUIDs; as distinct types one cannot be passed
//! where the other is meant.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize,
            Deserialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = uuid::Uuid)]
        pub struct $name(Uuid);

        impl $name {
            /// The id wrapping `id`.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The UUID itself, for storage and headers.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(raw).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A subscription's id.
    WebhookId
);

uuid_id!(
    /// A delivery's id: one per (event, subscription), see [`crate::delivery::delivery_id`].
    DeliveryId
);

impl WebhookId {
    /// A new, time-ordered id for a subscription being created.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_and_write_as_plain_uuids() {
        let raw = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let id: WebhookId = raw.parse().unwrap();
        assert_eq!(id.to_string(), raw);
        assert_eq!(serde_json::to_value(id).unwrap(), serde_json::json!(raw));
        let back: DeliveryId = serde_json::from_value(serde_json::json!(raw)).unwrap();
        assert_eq!(back.as_uuid(), id.as_uuid());
        assert!("not-a-uuid".parse::<DeliveryId>().is_err());
    }
}
