//! The OpenAPI document of `waybill-ingest`, served at `/openapi.json` and committed at
//! `docs/openapi/waybill-ingest.json` (a test fails when they drift apart).

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::{
    Modify, OpenApi, PartialSchema, ToSchema,
    openapi::{OneOfBuilder, Ref, RefOr, Schema, schema::Discriminator},
};
use waybill_runtime::openapi::{BearerAuth, ErrorBody, ErrorResponse};

use crate::routes;

/// One event. Unknown fields are refused (422). In the document this is the shape every
/// event type shares: [`EventCatalog`] makes `PublishEvent` a `oneOf` with one member per type
/// of the catalog, told apart by `type`, whose `data` is that type's schema.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// An active event type of the catalog.
    #[serde(rename = "type")]
    #[schema(example = "order.shipped")]
    pub kind: String,
    /// Must be valid against the type's schema (`GET /v1/events/{name}` on the api); every
    /// violation is listed under `errors.data`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// 1–128 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub client_id: Option<String>,
    /// Idempotency id, 1–128 of `[A-Za-z0-9._:-]`; generated when absent. The same id
    /// published twice by one tenant is delivered once.
    #[schema(max_length = 128, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub id: Option<String>,
    /// RFC 3339, within years 1 to 9999 once in UTC; kept in UTC to the microsecond (a leap
    /// second counts as the next second). Default: when ingest received it.
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Up to 500 events, all or nothing.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    #[schema(min_items = 1, max_items = 500)]
    pub events: Vec<PublishEvent>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waybill ingest API",
        description = "Publishing events to Waybill. Bearer JWT with the `events:publish` scope. A 202 means the broker confirmed the event; a 503 means it was not accepted and should be retried with the same `id`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "events", description = "Publishing events"))
)]
struct ApiDoc;

/// Describes `data` per event type: for each type of the catalog a `<Type>Data` schema (the
/// type's JSON Schema from `proto-schemas/events/`, the one ingest validates against) and a
/// `<Type>Event` (the shared fields, `type` fixed to the type's name, `data` that schema);
/// `PublishEvent` becomes their `oneOf`, discriminated by `type`.
pub struct EventCatalog;

impl Modify for EventCatalog {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // The embedded catalog is checked by the build and loaded at every start; were it
        // unusable there would be no service to document, so the shared shape stays as it is.
        let Ok(definitions) = waybill_domain::catalog::definitions() else {
            return;
        };
        let Ok(Value::Object(common)) = serde_json::to_value(PublishEvent::schema()) else {
            return;
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut one_of = OneOfBuilder::new();
        let mut mapping = Vec::new();
        for def in &definitions {
            let name = def.name.as_str();
            let stem = pascal_case(name);
            let mut data = def.schema.clone();
            if let Value::Object(m) = &mut data {
                // Identifiers of the catalog file, not constraints; `$id` would also change how
                // references inside the document resolve.
                for key in ["$schema", "$id", "title"] {
                    m.remove(key);
                }
            }
            let mut event = common.clone();
            event.insert("description".into(), json!(format!("A `{name}` event.")));
            if let Some(Value::Object(props)) = event.get_mut("properties") {
                props.insert("type".into(), json!({"type": "string", "enum": [name]}));
                props.insert(
                    "data".into(),
                    json!({"$ref": format!("#/components/schemas/{stem}Data")}),
                );
            }
            let (Ok(data), Ok(event)) = (
                serde_json::from_value::<RefOr<Schema>>(data),
                serde_json::from_value::<RefOr<Schema>>(Value::Object(event)),
            ) else {
                continue;
            };
            components.schemas.insert(format!("{stem}Data"), data);
            components.schemas.insert(format!("{stem}Event"), event);
            let reference = format!("#/components/schemas/{stem}Event");
            one_of = one_of.item(Ref::new(reference.clone()));
            mapping.push((name.to_owned(), reference));
        }
        let one_of = one_of
            .description(Some(
                "One event: `type` names an event type of the catalog and `data` follows that type's schema. No string or key anywhere in an event may contain the NUL character (U+0000): PostgreSQL text cannot store it, so such an event is refused with a 422.",
            ))
            .discriminator(Some(Discriminator::with_mapping("type", mapping)));
        components
            .schemas
            .insert("PublishEvent".into(), Schema::OneOf(one_of.build()).into());
    }
}

/// `shipment_order.created` → `ShipmentOrderCreated`.
fn pascal_case(name: &str) -> String {
    name.split(['.', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The document as pretty JSON, with a trailing newline: [`ApiDoc`] with every operation
/// [`routes::configure`] registers and the event types of the catalog.
pub fn document() -> String {
    let mut doc = waybill_runtime::openapi::collect(ApiDoc::openapi(), routes::configure);
    // After collecting: the handlers' own schemas would overwrite the `oneOf`.
    EventCatalog.modify(&mut doc);
    waybill_runtime::openapi::render(doc)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::openapi::schema::Schema;

    use super::*;

    /// The shared fields of the document's events are the ones the parser takes, and every
    /// type of the catalog has its member in the `oneOf`.
    #[test]
    fn documented_events_are_the_ones_ingest_reads() {
        let RefOr::T(Schema::Object(shared)) = PublishEvent::schema() else {
            panic!("PublishEvent is an object");
        };
        let documented: BTreeSet<&str> = shared.properties.keys().map(String::as_str).collect();
        let parsed: BTreeSet<&str> = waybill_domain::event::EVENT_FIELDS
            .iter()
            .copied()
            .collect();
        assert_eq!(documented, parsed);

        let doc: Value = serde_json::from_str(&document()).unwrap();
        let mapping = doc["components"]["schemas"]["PublishEvent"]["discriminator"]["mapping"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let types = waybill_domain::catalog::definitions().unwrap();
        assert_eq!(mapping.len(), types.len());
        for def in &types {
            let target = mapping[def.name.as_str()].as_str().unwrap();
            let stem = target.trim_start_matches("#/components/schemas/");
            let data = &doc["components"]["schemas"][stem]["properties"]["data"]["$ref"];
            assert!(data.is_string(), "{stem} references its data schema");
        }
    }
}
