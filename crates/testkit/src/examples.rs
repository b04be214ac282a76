//! Example event bodies, taken from the schemas of the event catalog, so a test's event is valid
//! by construction and follows any change to a schema.

use serde_json::Value;

/// A valid `data` for event type `kind`: the example its schema carries.
pub fn example(kind: &str) -> Value {
    let def = waybill_domain::catalog::definitions()
        .unwrap()
        .into_iter()
        .find(|d| d.name.as_str() == kind)
        .unwrap_or_else(|| panic!("no event type {kind} in the catalog"));
    def.schema["examples"][0].clone()
}

/// [`example`] as the object an event envelope's `data` holds.
pub fn example_data(kind: &str) -> serde_json::Map<String, Value> {
    example(kind)
        .as_object()
        .unwrap_or_else(|| panic!("the example of {kind} is not an object"))
        .clone()
}
