//! `POST /v1/filters/test`: evaluates a filter against an event the way a dispatcher would, on
//! the exact body a receiver of that event would get. The event is checked like a publish, but
//! not against its type's schema (a filter is often tried on a hand-written excerpt), and an
//! inactive type is accepted (a filter may be written before its type is turned on). Nothing
//! is stored, published or sent.

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use waybill_domain::{
    CatalogIndex, TenantId, ValidationErrors,
    catalog::TypeStatus,
    event::{EVENT_FIELDS, EventEnvelope, EventInput, MAX_EVENT_BYTES},
    filter::{Body as ReceiverBody, Filter},
};
use waybill_runtime::{
    ApiError, Reply,
    body::{self, Body},
};

use crate::{
    access::{Caller, ReadWebhooks},
    envelope::One,
    openapi::{FilterTestRequest, FilterTestResponse, Invalid},
    state::State,
};

/// The fields of the body.
pub(crate) const FIELDS: &[&str] = &["filter", "event"];

/// Whether the filter matches the event.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterTestOutcome {
    /// `true`: a subscription with this filter would get a delivery of this event (when its
    /// `events` and `client_ids` select it); `false`: it would get none.
    pub matches: bool,
}

/// Evaluates a filter against an event, as the dispatcher would; nothing is stored or sent.
#[utoipa::path(
    post, path = "/v1/filters/test", tag = "webhooks", operation_id = "test_filter",
    request_body = FilterTestRequest,
    responses((status = 200, body = FilterTestResponse), Invalid),
    security(("bearer" = ["webhooks:read"]), ("bearer" = ["webhooks:write"]))
)]
pub async fn test(auth: Caller<ReadWebhooks>, state: State, body: Body) -> Reply {
    let mut map = body.json_object(false)?;
    let mut errors = ValidationErrors::new();
    body::unknown_fields(&map, FIELDS, "", &mut errors);
    let filter = match map.remove("filter") {
        None | Some(Value::Null) => {
            errors.add("filter", "is required");
            None
        }
        Some(f @ Value::Object(_)) => Filter::parse(&f)
            .map_err(|e| errors.add("filter", e.to_string()))
            .ok(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid value for `filter`: expected an object.",
            ));
        }
    };
    let event = match map.remove("event") {
        None | Some(Value::Null) => {
            errors.add("event", "is required");
            None
        }
        Some(Value::Object(e)) => Some(e),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid value for `event`: expected an object.",
            ));
        }
    };
    let envelope = match event {
        Some(event) => {
            let mut conn = state.conn().await?;
            let catalog = state.catalog_index(&mut conn).await?;
            drop(conn);
            check_event(event, &auth.tenant, &catalog, Utc::now(), &mut errors)
        }
        None => None,
    };
    let (Some(filter), Some(envelope), true) = (filter, envelope, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    // A filter at its limits on an event of 256 KiB can take a while (linear, but with regexes
    // that are large once compiled); off the workers, so other requests are not held up.
    let matches = tokio::task::spawn_blocking(move || filter.matches(&ReceiverBody::of(&envelope)))
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(One {
        data: FilterTestOutcome { matches },
    }))
}

/// Where the event's problems are reported.
const PREFIX: &str = "event.";

/// What an event's field must be.
struct FieldRule {
    name: &'static str,
    is: fn(&Value) -> bool,
    /// The JSON type, in the words of a 422.
    expected: &'static str,
    /// For a required field: what stands in for it while it is missing or of the wrong type,
    /// so that the other fields are still checked.
    stand_in: Option<fn() -> Value>,
}

const FIELD_RULES: &[FieldRule] = &[
    FieldRule {
        name: "type",
        is: Value::is_string,
        expected: "a string",
        stand_in: Some(|| Value::from("")),
    },
    FieldRule {
        name: "data",
        is: Value::is_object,
        expected: "an object",
        stand_in: Some(|| Value::Object(Map::new())),
    },
    FieldRule {
        name: "client_id",
        is: Value::is_string,
        expected: "a string",
        stand_in: None,
    },
    FieldRule {
        name: "id",
        is: Value::is_string,
        expected: "a string",
        stand_in: None,
    },
    FieldRule {
        name: "occurred_at",
        is: Value::is_string,
        expected: "a string",
        stand_in: None,
    },
];

/// Checks `event` by the rules of a publish but for its type's schema, recording every problem
/// under `event.<field>`, and builds the envelope a publish would have queued (`received_at`
/// and, when absent, `occurred_at` = `now`; an id generated when absent).
fn check_event(
    mut event: Map<String, Value>,
    tenant: &TenantId,
    catalog: &CatalogIndex,
    now: DateTime<Utc>,
    errors: &mut ValidationErrors,
) -> Option<EventEnvelope> {
    // Measured as a publish measures it, so what passes here could be published.
    let size = serde_json::to_vec(&event).map_or(usize::MAX, |b| b.len());
    let mut usable = size <= MAX_EVENT_BYTES;
    if !usable {
        errors.add(
            "event",
            format!("is larger than the {MAX_EVENT_BYTES} bytes an event may have"),
        );
    }
    body::unknown_fields(&event, EVENT_FIELDS, PREFIX, errors);
    // `null` is "absent", as on publish.
    event.retain(|k, v| EVENT_FIELDS.contains(&k.as_str()) && !v.is_null());
    // A broken field is set aside, so that the rules of the others are still checked.
    let mut type_reported = false;
    for rule in FIELD_RULES {
        let problem = match event.get(rule.name) {
            Some(v) if !(rule.is)(v) => format!("must be {}", rule.expected),
            None if rule.stand_in.is_some() => "is required".to_owned(),
            _ => continue,
        };
        errors.add(format!("{PREFIX}{}", rule.name), problem);
        usable = false;
        type_reported |= rule.name == "type";
        match rule.stand_in {
            Some(value) => event.insert(rule.name.to_owned(), value()),
            None => event.remove(rule.name),
        };
    }
    let input: EventInput = match body::typed_field(event) {
        Ok(input) => input,
        Err((path, expected)) => {
            errors.add(format!("{PREFIX}{path}"), format!("must be {expected}"));
            return None;
        }
    };
    if !type_reported && catalog.status(&input.kind) == TypeStatus::Unknown {
        errors.add(
            format!("{PREFIX}type"),
            format!("there is no event type `{}`", input.kind),
        );
        usable = false;
    }
    let envelope = input.into_envelope(
        tenant,
        now,
        || uuid::Uuid::now_v7().to_string(),
        PREFIX,
        errors,
    );
    envelope.filter(|_| usable)
}
