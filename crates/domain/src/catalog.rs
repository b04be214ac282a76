//! The platform's event catalog: which event types exist, their groups and their schemas.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

include!(concat!(env!("OUT_DIR"), "/embedded_catalog.rs"));

/// The event types the HTTP contract names; the catalog must always define them.
pub const CONTRACT_TYPES: [&str; 14] = [
    "shipment_order.created",
    "order.shipped",
    "order.cancelled",
    "stock.updated",
    "inventory.adjusted",
    "inbound.received",
    "inbound.status_changed",
    "return.updated",
    "shipment.created",
    "shipment.shipped",
    "shipment.cancelled",
    "freight.tracking_updated",
    "tracking_parcel.status_changed",
    "shipping_channel.validated",
];

/// An event type name, `<group>.<action>`, both in lower snake case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventTypeName(String);

/// True for `[a-z][a-z0-9_]*` of at most 64 characters.
pub fn is_snake_segment(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl EventTypeName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.split_once('.') {
            Some((group, action)) if is_snake_segment(group) && is_snake_segment(action) => {
                Ok(Self(raw.to_owned()))
            }
            _ => Err(format!(
                "event type names are `<group>.<action>` in lower snake case, got {raw:?}"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn group(&self) -> &str {
        self.0.split_once('.').map(|(g, _)| g).unwrap_or(&self.0)
    }

    pub fn action(&self) -> &str {
        self.0.split_once('.').map(|(_, a)| a).unwrap_or("")
    }
}

impl<'de> Deserialize<'de> for EventTypeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        EventTypeName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for EventTypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event type as the catalog files define it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDefinition {
    pub name: EventTypeName,
    pub description: String,
    /// The JSON Schema of the event's `data`.
    pub schema: serde_json::Value,
}

/// Why an embedded catalog file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog file {file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("the catalog is empty")]
    Empty,
}

/// Parses every embedded schema of `proto-schemas/events/`.
pub fn definitions() -> Result<Vec<EventDefinition>, CatalogError> {
    if EMBEDDED.is_empty() {
        return Err(CatalogError::Empty);
    }
    EMBEDDED
        .iter()
        .map(|(file, text)| parse_definition(file, text))
        .collect()
}

fn parse_definition(file: &str, text: &str) -> Result<EventDefinition, CatalogError> {
    let invalid = |reason: String| CatalogError::Invalid {
        file: file.to_owned(),
        reason,
    };
    let schema: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let title = schema
        .get("title")
        .and_then(|t| t.as_str())
        .ok_or_else(|| invalid("no string `title`".into()))?;
    let name = EventTypeName::parse(title).map_err(invalid)?;
    if file.strip_suffix(".json") != Some(title) {
        return Err(invalid(format!("file name does not match title {title:?}")));
    }
    let description = schema
        .get("description")
        .and_then(|d| d.as_str())
        .ok_or_else(|| invalid("no string `description`".into()))?
        .to_owned();
    Ok(EventDefinition {
        name,
        description,
        schema,
    })
}

/// What the subscription rules need to know of the catalog: every type and whether it is active.
#[derive(Debug, Clone, Default)]
pub struct CatalogIndex {
    types: BTreeMap<String, bool>,
    groups: BTreeSet<String>,
}

/// How an event name fares against the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeStatus {
    Active,
    Inactive,
    Unknown,
}

impl CatalogIndex {
    /// Builds the index from `(name, active)` pairs.
    pub fn new<'a>(types: impl IntoIterator<Item = (&'a str, bool)>) -> Self {
        let mut index = Self::default();
        for (name, active) in types {
            if let Some((group, _)) = name.split_once('.') {
                index.groups.insert(group.to_owned());
            }
            index.types.insert(name.to_owned(), active);
        }
        index
    }

    pub fn status(&self, name: &str) -> TypeStatus {
        match self.types.get(name) {
            Some(true) => TypeStatus::Active,
            Some(false) => TypeStatus::Inactive,
            None => TypeStatus::Unknown,
        }
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves the event envelope schema for its `$id`, so `$ref`s to it resolve offline.
    struct LocalSchema(serde_json::Value);

    impl jsonschema::Retrieve for LocalSchema {
        fn retrieve(
            &self,
            uri: &jsonschema::Uri<String>,
        ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
            if uri.as_str() == "https://schemas.waybill.dev/broker/event.schema.json" {
                Ok(self.0.clone())
            } else {
                Err(format!("no local schema for {}", uri.as_str()).into())
            }
        }
    }

    /// The broker contracts in `proto-schemas/broker/` agree with the domain types: each
    /// example parses into its type, and a value of the type validates against the schema.
    #[test]
    fn broker_schemas_match_the_types() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto-schemas/broker/");
        let load = |f: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(format!("{root}{f}")).unwrap()).unwrap()
        };
        let event_schema = load("event.schema.json");
        let delivery_schema = load("delivery.schema.json");
        let build = |schema: &serde_json::Value| {
            jsonschema::draft202012::options()
                .should_validate_formats(true)
                .with_retriever(LocalSchema(event_schema.clone()))
                .build(schema)
                .unwrap()
        };
        for (schema, check) in [
            (
                &event_schema,
                &(|v: &serde_json::Value| {
                    serde_json::from_value::<crate::event::EventEnvelope>(v.clone()).map(|_| ())
                }) as &dyn Fn(&serde_json::Value) -> Result<(), serde_json::Error>,
            ),
            (&delivery_schema, &|v: &serde_json::Value| {
                serde_json::from_value::<crate::delivery::DeliveryMessage>(v.clone()).map(|_| ())
            }),
        ] {
            let validator = build(schema);
            for example in schema["examples"].as_array().unwrap() {
                assert!(validator.is_valid(example), "{example}");
                check(example).unwrap_or_else(|e| panic!("example does not parse: {e}"));
            }
        }
        let example = &delivery_schema["examples"][0];
        let msg: crate::delivery::DeliveryMessage =
            serde_json::from_value(example.clone()).unwrap();
        let back = serde_json::to_value(&msg).unwrap();
        let errors: Vec<String> = build(&delivery_schema)
            .iter_errors(&back)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let mut broken = back.clone();
        broken["event"]["type"] = "Not A Type".into();
        assert!(
            !build(&delivery_schema).is_valid(&broken),
            "the event part is checked through the $ref"
        );
    }

    #[test]
    fn names() {
        let n = EventTypeName::parse("tracking_parcel.status_changed").unwrap();
        assert_eq!(n.group(), "tracking_parcel");
        assert_eq!(n.action(), "status_changed");
        for bad in [
            "order",
            "Order.shipped",
            "order.",
            ".shipped",
            "order.shipped.x",
            "order.ship-ped",
            "1order.x",
        ] {
            assert!(EventTypeName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn embedded_catalog_is_complete_and_examples_validate() {
        let defs = definitions().unwrap();
        let names: BTreeSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        for required in CONTRACT_TYPES.iter().chain(&["webhook.test"]) {
            assert!(names.contains(required), "catalog lacks {required}");
        }
        for def in &defs {
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&def.schema)
                .unwrap_or_else(|e| panic!("{}: bad schema: {e}", def.name));
            let examples = def.schema["examples"]
                .as_array()
                .unwrap_or_else(|| panic!("{} has no examples", def.name));
            assert!(!examples.is_empty(), "{} has no example", def.name);
            for ex in examples {
                let errors: Vec<String> =
                    validator.iter_errors(ex).map(|e| e.to_string()).collect();
                assert!(
                    errors.is_empty(),
                    "{}: example invalid: {errors:?}",
                    def.name
                );
            }
            assert!(!def.description.is_empty());
        }
    }
}
