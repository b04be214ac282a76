//! Request bodies and query strings, parsed strictly: the wrong media type is a 415, too large a
//! 413, malformed JSON or a wrong type a 400, an unknown field a 422 on that field.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use waybill_domain::ValidationErrors;

use crate::ApiError;

/// The body size limit of a service, kept in app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON object body.
#[derive(Debug, Clone)]
pub struct JsonObject(pub Map<String, Value>);

/// A JSON object body that may also be absent (then it is `{}`).
#[derive(Debug, Clone)]
pub struct OptionalJsonObject(pub Map<String, Value>);

impl FromRequest for JsonObject {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = read_object(req, payload, false);
        Box::pin(async move { fut.await.map(JsonObject) })
    }
}

impl FromRequest for OptionalJsonObject {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = read_object(req, payload, true);
        Box::pin(async move { fut.await.map(OptionalJsonObject) })
    }
}

fn is_json(req: &HttpRequest) -> Option<bool> {
    let ct = req.headers().get(header::CONTENT_TYPE)?;
    let essence = ct
        .to_str()
        .ok()?
        .split(';')
        .next()?
        .trim()
        .to_ascii_lowercase();
    Some(
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json")),
    )
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn read_object(
    req: &HttpRequest,
    payload: &mut Payload,
    optional: bool,
) -> impl Future<Output = Result<Map<String, Value>, ApiError>> + use<> {
    let limit = req
        .app_data::<web::Data<BodyLimit>>()
        .map_or(1 << 20, |l| l.0);
    let content_type = is_json(req);
    let length = declared_length(req);
    let mut payload = payload.take();
    async move {
        if let Some(n) = length
            && n > limit
        {
            return Err(ApiError::payload_too_large(limit));
        }
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(format!("The request body could not be read: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        if body.is_empty() && optional && content_type != Some(false) {
            return Ok(Map::new());
        }
        if content_type != Some(true) {
            return Err(ApiError::unsupported_media_type());
        }
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "The request body is empty; send a JSON object.",
            ));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => {
                // Postgres stores no NUL in text or jsonb; refuse it here, naming where it is.
                let mut errors = ValidationErrors::new();
                for (k, v) in &map {
                    find_nul(k, v, &mut errors);
                }
                errors.into_result(|| map).map_err(ApiError::validation)
            }
            Ok(_) => Err(ApiError::bad_request(
                "The request body must be a JSON object.",
            )),
            Err(e) => Err(ApiError::bad_request(format!(
                "The request body is not valid JSON: {e}."
            ))),
        }
    }
}

const NUL_MESSAGE: &str = "must not contain the NUL character (\\u0000)";

/// Records every string (or key) under `path` that contains a NUL character.
fn find_nul(path: &str, value: &Value, errors: &mut ValidationErrors) {
    if path.contains('\0') {
        errors.add(path.replace('\0', "\\u0000"), NUL_MESSAGE);
        return;
    }
    match value {
        Value::String(s) if s.contains('\0') => errors.add(path, NUL_MESSAGE),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                find_nul(&format!("{path}[{i}]"), v, errors);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                find_nul(&format!("{path}.{k}"), v, errors);
            }
        }
        _ => {}
    }
}

/// Records a 422 for every key of `map` not in `allowed`, as `<prefix><key>`.
pub fn unknown_fields(
    map: &Map<String, Value>,
    allowed: &[&str],
    prefix: &str,
    errors: &mut ValidationErrors,
) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.add(format!("{prefix}{key}"), "is not a known field");
        }
    }
}

/// Deserializes a checked object into `T`; a wrong type is a 400 naming the field.
pub fn typed<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde's message ends with " at line 1 column N" only for text input; values have none.
        ApiError::bad_request(format!("Invalid value for `{path}`: {inner}."))
    })
}

/// The query string as `(key, value)` pairs; unknown or repeated keys are 422s.
pub fn query_pairs(req: &HttpRequest, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut errors = ValidationErrors::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut pairs = Vec::new();
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        if v.contains('\0') {
            errors.add(k.to_string(), NUL_MESSAGE);
        } else if !allowed.contains(&k.as_ref()) {
            errors.add(k.to_string(), "is not a known query parameter");
        } else if !seen.insert(k.to_string()) {
            errors.add(k.to_string(), "is given more than once");
        } else {
            pairs.push((k.into_owned(), v.into_owned()));
        }
    }
    errors.into_result(|| pairs).map_err(ApiError::validation)
}

/// Parses `true`/`false`.
pub fn parse_bool(field: &str, raw: &str, errors: &mut ValidationErrors) -> Option<bool> {
    match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            errors.add(field, "must be `true` or `false`");
            None
        }
    }
}

/// Parses an integer within `min..=max`.
pub fn parse_int(
    field: &str,
    raw: &str,
    min: i64,
    max: i64,
    errors: &mut ValidationErrors,
) -> Option<i64> {
    match raw.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            errors.add(field, format!("must be a whole number from {min} to {max}"));
            None
        }
    }
}
