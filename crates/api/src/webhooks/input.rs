//! Turns a create or update body into a [`WebhookInput`]: unknown fields (also inside `auth`)
//! are 422s, wrong types 400s, and `null` means "default" on create but is refused on update
//! (except `rate_limit` and `filter`, where `null` means "no limit" and "no filter").

use serde_json::{Map, Value};
use waybill_domain::{ValidationErrors, WebhookInput, subscription::AuthInput};
use waybill_runtime::{ApiError, body};

pub(crate) const FIELDS: &[&str] = &[
    "name",
    "description",
    "url",
    "method",
    "events",
    "client_ids",
    "headers",
    "auth",
    "secret",
    "active",
    "rate_limit",
    "filter",
];

/// Whether the body creates a subscription or updates one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Create,
    Update,
}

/// The parsed body: the settings input, the secret (create only) and the 422s found so far.
pub struct Parsed {
    pub input: WebhookInput,
    pub secret: Option<String>,
    pub errors: ValidationErrors,
}

pub fn parse(mut map: Map<String, Value>, mode: Mode) -> Result<Parsed, ApiError> {
    let mut errors = ValidationErrors::new();
    body::unknown_fields(&map, FIELDS, "", &mut errors);
    map.retain(|k, _| FIELDS.contains(&k.as_str()));
    // `rate_limit` is read here, not by `typed_field`, so it is made an integer here too.
    body::integral_numbers(&mut map);
    // `null` is a value here (no limit), on create and update alike.
    let rate_limit = match map.remove("rate_limit") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) => Some(Some(n)),
            None => {
                errors.add(
                    "rate_limit",
                    "must be a whole number of deliveries per second",
                );
                None
            }
        },
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid value for `rate_limit`: expected an integer or null.",
            ));
        }
    };
    // Like `rate_limit`, `null` is a value (no filter); what the object holds is the domain's.
    let filter = match map.remove("filter") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(f @ Value::Object(_)) => Some(Some(f)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid value for `filter`: expected an object or null.",
            ));
        }
    };
    match mode {
        Mode::Create => map.retain(|_, v| !v.is_null()),
        Mode::Update => {
            let nulls: Vec<String> = map
                .iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k.clone())
                .collect();
            for k in nulls {
                errors.add(&k, "must not be null");
                map.remove(&k);
            }
            if map.remove("secret").is_some() {
                errors.add(
                    "secret",
                    "cannot be changed here; use POST /v1/webhooks/{id}/secret/rotate",
                );
            }
        }
    }
    if let Some(Value::Object(auth)) = map.get("auth") {
        match auth.get("type") {
            Some(Value::String(kind)) => {
                if let Some(allowed) = AuthInput::allowed_fields(kind) {
                    let mut allowed = allowed.to_vec();
                    allowed.push("type");
                    body::unknown_fields(auth, &allowed, "auth.", &mut errors);
                }
            }
            None | Some(Value::Null) => {
                errors.add("auth.type", "is required");
                map.remove("auth");
            }
            Some(_) => {}
        }
    }
    let secret = match map.remove("secret") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid value for `secret`: expected a string.",
            ));
        }
    };
    let mut input: WebhookInput = body::typed(map)?;
    input.rate_limit = rate_limit;
    input.filter = filter;
    Ok(Parsed {
        input,
        secret,
        errors,
    })
}
