//! Request bodies and query strings, parsed strictly: the wrong media type is a 415, too large a
//! 413, malformed JSON or a wrong type a 400, an unknown field a 422 on that field.
//!
//! A body is read whole, within the service's size limit and read timeout (408 when it has not
//! arrived in time), by the [`Body`] extractor, before the handler runs and so before it takes a
//! database connection or anything else other requests wait for: a client that trickles its body
//! holds only its own request. Parsing the bytes comes later, after the handler's existence
//! checks, so a missing resource is a 404 whatever the body holds.

use std::{future::Future, pin::Pin, time::Duration};

use actix_web::{
    FromRequest, HttpRequest,
    dev::Payload,
    http::header,
    web::{self, Bytes},
};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use waybill_domain::ValidationErrors;

use crate::ApiError;

/// The body size limit of a service, kept in app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// How long a service waits for a request body to arrive whole, kept in app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// The read timeout when a service set none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request body, read whole and size-checked before the handler runs; [`Body::json_object`]
/// parses it.
pub struct Body {
    bytes: Bytes,
    json: Option<bool>,
}

impl FromRequest for Body {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let read = read(req, payload.take());
        let json = is_json(req);
        Box::pin(async move {
            Ok(Body {
                bytes: read.await?,
                json,
            })
        })
    }
}

impl Body {
    /// The body as a JSON object. With `optional`, an empty body is `{}` whatever its media type.
    pub fn json_object(self, optional: bool) -> Result<Map<String, Value>, ApiError> {
        parse_object(&self.bytes, self.json, optional)
    }
}

/// Reads a JSON object body, for a handler that takes nothing others wait for before it (the
/// [`Body`] extractor reads the body before the handler runs at all). With `optional`, an empty
/// body is `{}`.
pub async fn json_object(
    req: &HttpRequest,
    payload: web::Payload,
    optional: bool,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = read(req, payload.into_inner()).await?;
    parse_object(&bytes, is_json(req), optional)
}

/// Collects the body within the service's limit and read timeout. The future holds nothing of
/// the request, so it can outlive the extractor's borrow.
fn read(
    req: &HttpRequest,
    payload: Payload,
) -> impl Future<Output = Result<Bytes, ApiError>> + use<> {
    let limit = req
        .app_data::<web::Data<BodyLimit>>()
        .map_or(1 << 20, |l| l.0);
    let timeout = req
        .app_data::<web::Data<BodyTimeout>>()
        .map_or(DEFAULT_TIMEOUT, |t| t.0);
    let declared = declared_length(req);
    async move {
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::payload_too_large(limit));
        }
        let collect = async move {
            let mut payload = payload;
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
            Ok(body.freeze())
        };
        tokio::time::timeout(timeout, collect)
            .await
            .unwrap_or_else(|_| Err(ApiError::request_timeout(timeout)))
    }
}

fn parse_object(
    body: &[u8],
    json: Option<bool>,
    optional: bool,
) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() && optional {
        return Ok(Map::new());
    }
    if json != Some(true) {
        return Err(ApiError::unsupported_media_type());
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "The request body is empty; send a JSON object.",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
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
    typed_field(map).map_err(|(path, expected)| {
        ApiError::bad_request(format!("Invalid value for `{path}`: expected {expected}."))
    })
}

/// Deserializes into `T`, or names the field that has the wrong type and what it should be.
/// serde's own text quotes the offending value, which may be a credential, so it is dropped.
pub fn typed_field<T: DeserializeOwned>(
    mut map: Map<String, Value>,
) -> Result<T, (String, &'static str)> {
    integral_numbers(&mut map);
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let expected = inner
            .split_once("expected ")
            .map_or("another type", |(_, x)| x);
        (path, plain_type(expected))
    })
}

/// JSON Schema counts `326.0` as the integer 326 (so the OpenAPI documents do), serde does not:
/// a top-level field holding a whole number written with a fraction is read as that integer.
/// Nested values (an event's `data`) are left as sent.
pub fn integral_numbers(map: &mut Map<String, Value>) {
    // Beyond 2^53 a float no longer stands for one integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    for value in map.values_mut() {
        if let Value::Number(n) = value
            && n.is_f64()
            && let Some(f) = n.as_f64()
            && f.fract() == 0.0
            && f.abs() < EXACT
        {
            *value = Value::from(f as i64);
        }
    }
}

/// serde's name of an expected type, in JSON's words.
fn plain_type(expected: &str) -> &'static str {
    let e = expected.trim_end_matches('.');
    if e.contains("string") {
        "a string"
    } else if e.contains("bool") {
        "true or false"
    } else if e.contains("i64")
        || e.contains("u64")
        || e.contains("i32")
        || e.contains("u32")
        || e.contains("integer")
    {
        "a whole number"
    } else if e.contains("sequence") || e.contains("array") {
        "an array"
    } else if e.contains("map") || e.contains("struct") || e.contains("object") {
        "an object"
    } else {
        "another type"
    }
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
