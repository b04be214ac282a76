//! The OpenAPI document of `waybill-api`, generated from the handlers and served at
//! `/openapi.json`. A copy is committed at `docs/openapi/waybill-api.json`; a test fails when the
//! two drift apart.

use std::{borrow::Cow, collections::BTreeMap};

use serde::Serialize;
use utoipa::{
    IntoParams, IntoResponses, OpenApi, ToSchema,
    openapi::{
        ArrayBuilder, ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Schema,
        Type,
        schema::{AdditionalProperties, RefBuilder, SchemaFormat, SchemaType},
    },
};
pub use waybill_runtime::openapi::{BearerAuth, ErrorBody, ErrorResponse};

use crate::{deliveries, events, filters, routes, webhooks};

/// Receiver authentication as sent in a request; each type takes only its own fields.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthRequest {
    None,
    Basic {
        /// 1–255 characters, no `:` or control characters.
        #[schema(
            min_length = 1,
            max_length = 255,
            pattern = "^[^:\\u0000-\\u001f\\u007f-\\u009f]*$"
        )]
        username: String,
        /// 1–255 characters, no control characters.
        #[schema(
            min_length = 1,
            max_length = 255,
            pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
        )]
        password: String,
    },
    Token {
        /// Header to send the token in: an RFC 9110 token that is not one Waybill sets (see
        /// `headers`); default `Authorization`.
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
        )]
        header: Option<String>,
        /// 1–4096 characters of visible ASCII or spaces, sent verbatim as the header's value.
        #[schema(min_length = 1, max_length = 4096, pattern = "^[ -~]*$")]
        token: String,
    },
}

/// HTTP method of deliveries.
#[derive(Serialize, ToSchema)]
pub enum Method {
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

/// Body of `POST /v1/webhooks`. Unknown fields are refused (422).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreate {
    #[schema(example = "https://wms.example.com/hooks/waybill", schema_with = receiver_url)]
    pub url: String,
    #[schema(example = json!(["order.shipped", "stock.*"]), schema_with = subscribed_events)]
    pub events: Vec<String>,
    /// Default "".
    #[schema(max_length = 255)]
    pub name: Option<String>,
    /// Default "".
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Default `POST`.
    pub method: Option<Method>,
    #[schema(schema_with = client_ids_or_null)]
    pub client_ids: Option<Vec<String>>,
    #[schema(schema_with = custom_headers_or_null)]
    pub headers: Option<BTreeMap<String, String>>,
    pub auth: Option<AuthRequest>,
    /// Printable ASCII; `whsec_` + standard base64 of 24–64 bytes is decoded. Generated when
    /// absent.
    #[schema(min_length = 8, max_length = 128, pattern = "^[ -~]*$")]
    pub secret: Option<String>,
    /// Default `true`.
    pub active: Option<bool>,
    /// Most deliveries per second sent to the receiver, enforced over every dispatcher replica;
    /// deliveries over it wait their turn. Default `null`: no limit.
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit: Option<u32>,
    /// Only events this filter matches are delivered. Default `null`: every event that
    /// `events` and `client_ids` select.
    #[schema(value_type = Option<FilterDoc>)]
    pub filter: Option<serde_json::Value>,
}

/// Body of `PATCH /v1/webhooks/{id}`: any create field but `secret`; `headers`, `auth` and
/// `filter` replace the whole value; `null` is refused except for `rate_limit` and `filter`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdate {
    #[schema(nullable = false, schema_with = receiver_url)]
    pub url: Option<String>,
    #[schema(nullable = false, schema_with = subscribed_events)]
    pub events: Option<Vec<String>>,
    #[schema(nullable = false, max_length = 255)]
    pub name: Option<String>,
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    #[schema(nullable = false)]
    pub method: Option<Method>,
    #[schema(nullable = false, schema_with = client_ids)]
    pub client_ids: Option<Vec<String>>,
    #[schema(nullable = false, schema_with = custom_headers)]
    pub headers: Option<BTreeMap<String, String>>,
    #[schema(nullable = false)]
    pub auth: Option<AuthRequest>,
    /// Setting `true` also clears `disabled_reason` and closes the circuit breaker.
    #[schema(nullable = false)]
    pub active: Option<bool>,
    /// 1–10000 deliveries per second; `null` removes the limit.
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit: Option<u32>,
    /// Replaces the whole filter; `null` removes it.
    #[schema(value_type = Option<FilterDoc>)]
    pub filter: Option<serde_json::Value>,
}

/// The payload filter, as a schema component named `Filter`: its rules are those of
/// `waybill_domain::filter`, written out for clients in [`FILTER_DESCRIPTION`].
pub struct FilterDoc;

/// The filter language, as the document states it.
const FILTER_DESCRIPTION: &str = "\
A payload filter: a JSON object evaluated against the exact body the receiver would get \
(`{\"id\", \"type\", \"timestamp\", \"client_id\", \"data\"}`, `timestamp` being the event's \
`occurred_at` as the body writes it). An event that it does not match gets no delivery at all \
(not a failed one).

Each key of a filter object is a **path** or a **combinator**, and every key of one object \
must hold (an implicit AND). A filter object has at least one key.

**Paths** are dot-separated keys into the body: `id`, `type`, `timestamp`, `client_id`, or \
`data` alone or followed by keys inside it, e.g. `data.status` or `data.lines.sku`; no key is \
empty. A segment of digits without a leading zero indexes an array (`data.lines.0.sku`) and is \
a plain key on an object. Where a path meets an array without an index, it goes on into every \
element; where it ends on an array, the array and each of its elements are values it reached. \
A condition holds when it holds for **any** value reached (`data.lines.sku` matches when some \
line has that sku, `{\"data.tags\": \"fragile\"}` when the tags include it; each operator on \
such a path is satisfied by any value on its own). `$neq` and `$nin` are the negations of \
`$eq` and `$in`: no value reached is equal. So on a path that reaches nothing, `$neq`, `$nin`, \
`{\"$exists\": false}` and `$not` hold, and every other condition does not.

**Values**: a scalar, array or object is compared with the value at the path for JSON \
equality, numbers by value (`{\"data.status\": \"shipped\"}`; `12` equals `12.0`), except an \
object with a key that starts with `$`: an operator object. All of its keys must then be \
operators, and all of them must hold (to compare with an object that has `$` keys, use \
`$eq`):

| operator | operand | holds when the value at the path |
| --- | --- | --- |
| `$eq`, `$neq` | any JSON value | equals it / (no value reached) equals it |
| `$in`, `$nin` | an array of 1 to 256 values | equals one of them / (no value reached) equals any of them |
| `$gt`, `$gte`, `$lt`, `$lte` | a number or a string | compares so with it: numbers numerically (exactly, also integers beyond 2^53), RFC 3339 times as instants when both the operand and the value are one (whatever their precision and offset), other strings by code point; a value of another type never matches |
| `$exists` | `true` or `false` | is present, `null` included / is absent |
| `$regex` | a string of at most 256 characters: a pattern in the syntax of Rust's `regex` crate (RE2-like: no backreferences or look-around); the regexes of one filter take at most 128 KiB compiled, in all (Unicode classes such as `\\w` are large; `[A-Za-z0-9_]` is small) | is a string in which the pattern matches anywhere, unless anchored with `^` or `$` |
| `$startsWith`, `$endsWith` | a string | is a string that starts / ends with it |
| `$contains` | any JSON value | is a string of which the operand (a string) is a substring, or an array of which it is an element |

**Combinators**: `$and` and `$or` take an array of 1 to 20 filters (all of them / at least \
one must hold); `$not` takes one filter, which must not hold.

**Limits**: at most 4096 bytes as compact JSON; nesting depth 8 (the filter is level 1, each \
filter in `$and` or `$or` and each `$not` one level down); 64 conditions in all, each operator \
or plain value on a path counting as one; 256 values in one `$in` or `$nin`; 256 characters in \
one regex, 128 KiB for the compiled regexes of one filter.

**Errors**: anything else (an unknown operator or combinator, an operator without a path, an \
operand of the wrong type, a bad regex, a bad path, a limit passed) is a 422 with one message \
under `errors.filter`, `<place>: <rule>`, whose place names where in the filter it is, e.g. \
`filter.$or[1].data.qty: $gt needs a number or a string`. A filter that is not an object is a \
400.";

/// What the value of a path key may be.
const FILTER_VALUE_DESCRIPTION: &str = "\
The condition on the value at the path: any JSON value, compared with it for equality, or an \
operator object (its keys start with `$`; see `Filter`), e.g. `{\"$gte\": 10, \"$lt\": 100}`.";

/// A key of a filter object: a combinator, or a path from one of the body's fields (only `data`
/// has keys below it).
const FILTER_KEY_PATTERN: &str =
    "^(\\$and|\\$or|\\$not|id|type|timestamp|client_id|data(\\.[^.]+)*)$";

fn filter_list(what: &str) -> ArrayBuilder {
    ArrayBuilder::new()
        .description(Some(what))
        .items(Ref::from_schema_name("Filter"))
        .min_items(Some(1))
        .max_items(Some(20))
}

impl utoipa::PartialSchema for FilterDoc {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(FILTER_DESCRIPTION))
            .property(
                "$and",
                filter_list("1 to 20 filters, all of which must hold."),
            )
            .property(
                "$or",
                filter_list("1 to 20 filters, at least one of which must hold."),
            )
            .property(
                "$not",
                RefBuilder::new()
                    .ref_location_from_schema_name("Filter")
                    .description(Some("A filter that must not hold.")),
            )
            .min_properties(Some(1))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(FILTER_KEY_PATTERN)),
            ))
            .additional_properties(Some(AdditionalProperties::RefOr(
                ObjectBuilder::new()
                    .schema_type(SchemaType::AnyValue)
                    .description(Some(FILTER_VALUE_DESCRIPTION))
                    .into(),
            )))
            .examples([
                serde_json::json!({
                    "data.warehouse_id": {"$in": ["AMS1", "FRA1", "PAR2", "WAW1", "MAD1"]}
                }),
                serde_json::json!({"type": "stock.updated", "data.available": {"$lt": 10}}),
                serde_json::json!({"data.status": {"$in": ["shipped", "delivered"]}}),
                serde_json::json!({
                    "$or": [
                        {"data.service_level": "express"},
                        {"data.lines.quantity": {"$gte": 100}}
                    ],
                    "$not": {"client_id": {"$startsWith": "test-"}}
                }),
            ])
            .into()
    }
}

impl ToSchema for FilterDoc {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Filter")
    }
}

/// Body of `POST /v1/filters/test`. Unknown fields are refused (422).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterTestRequest {
    /// The filter to try; the same rules as a subscription's, and the same 422 on `filter`.
    #[schema(value_type = FilterDoc)]
    pub filter: serde_json::Value,
    pub event: FilterTestEvent,
}

/// An event as it would be published, checked by the same rules except its type's schema;
/// unknown fields are refused (422 on `event.<field>`), as is a field of the wrong type.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterTestEvent {
    /// An event type of the catalog, active or not.
    #[serde(rename = "type")]
    #[schema(value_type = CatalogEventType)]
    pub kind: String,
    /// Any object: it is not checked against the type's schema.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// 1–128 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub client_id: Option<String>,
    /// 1–128 of `[A-Za-z0-9._:-]`; generated when absent.
    #[schema(max_length = 128, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub id: Option<String>,
    /// RFC 3339; the body's `timestamp`. Default: now.
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct FilterTestResponse {
    pub data: filters::test::FilterTestOutcome,
}

/// Body of `POST /v1/webhooks/{id}/secret/rotate`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret (same rules as on create); generated when absent.
    #[schema(min_length = 8, max_length = 128, pattern = "^[ -~]*$")]
    pub secret: Option<String>,
    /// Default 86400: how long the old secrets keep signing; 0 revokes them all at once.
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_period_seconds: Option<i64>,
}

/// Body of `PATCH /v1/events/{name}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeUpdate {
    #[schema(nullable = false)]
    pub active: Option<bool>,
    /// Survives restarts.
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookResponse {
    pub data: webhooks::view::WebhookView,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<webhooks::view::WebhookView>,
    /// Total matching, over all pages.
    pub count: i64,
    /// Relative URL of the next page, or null.
    pub next: Option<String>,
    /// Relative URL of the previous page, or null.
    pub previous: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SecretResponse {
    pub data: webhooks::secret::SecretView,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeResponse {
    pub data: events::view::EventTypeView,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    pub data: Vec<events::view::EventTypeView>,
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryResponse {
    pub data: deliveries::view::DeliveryDetail,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<deliveries::view::DeliveryView>,
    /// Total matching, over all pages.
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryViewResponse {
    pub data: deliveries::view::DeliveryView,
}

#[derive(Serialize, ToSchema)]
pub struct QueuedResponse {
    pub data: deliveries::replay::Queued,
}

#[derive(Serialize, ToSchema)]
pub struct TestOutcomeResponse {
    pub data: webhooks::test::TestOutcome,
}

/// A receiver URL: `http(s)` in any case, no spaces or control characters.
fn receiver_url() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Absolute `https` URL (plain `http` only where the operator allows it), at most 2048 \
             characters, without credentials; a literal IP address must be public unless the \
             operator allow-listed its range.",
        ))
        .format(Some(SchemaFormat::Custom("uri".to_owned())))
        .max_length(Some(waybill_domain::url_policy::MAX_URL_LEN))
        .pattern(Some(
            "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s\\u0000-\\u001f\\u007f]+$",
        ))
}

/// Every event type of the catalog, in the order of its files.
fn catalog_names() -> Vec<String> {
    waybill_domain::catalog::definitions()
        .map(|defs| defs.iter().map(|d| d.name.to_string()).collect())
        .unwrap_or_default()
}

/// An event type of the catalog, as a path or query parameter names it.
pub struct CatalogEventType;

impl utoipa::PartialSchema for CatalogEventType {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(catalog_names()))
            .into()
    }
}

impl ToSchema for CatalogEventType {}

/// What a subscription lists: event types of the catalog, `<group>.*` of its groups, or `*`.
fn subscribed_events() -> ArrayBuilder {
    let names = catalog_names();
    let mut groups: Vec<String> = names
        .iter()
        .filter_map(|n| n.split_once('.'))
        .map(|(g, _)| format!("{g}.*"))
        .collect();
    groups.sort();
    groups.dedup();
    let entries = names.into_iter().chain(groups).chain(["*".to_owned()]);
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(entries)),
        )
        .min_items(Some(1))
        .max_items(Some(100))
        .unique_items(true)
}

fn client_ids() -> ArrayBuilder {
    ArrayBuilder::new()
        .description(Some(
            "Distinct client ids of 1–128 characters without control characters; empty (the \
             default) means every client.",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(128))
                .pattern(Some("^[^\\u0000-\\u001f\\u007f-\\u009f]*$")),
        )
        .max_items(Some(1000))
        .unique_items(true)
}

fn client_ids_or_null() -> ArrayBuilder {
    client_ids().schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
}

fn custom_headers() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "At most 20 custom headers (an update replaces them all): RFC 9110 token names, no \
             two differing only in case, values of visible ASCII and spaces (at most 1024). \
             Refused, in any case: `host`, `content-length`, `content-type`, \
             `transfer-encoding`, `connection`, `upgrade`, `te`, `trailer`, `keep-alive`, \
             `user-agent`, `proxy-*`, `webhook-*`, `waybill-*` and the header `auth` sends its \
             token in.",
        ))
        .max_properties(Some(20))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(256))
                .pattern(Some("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(1024))
                .pattern(Some("^[ -~]*$"))
                .into(),
        )))
}

fn custom_headers_or_null() -> ObjectBuilder {
    custom_headers().schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
}

// The query parameters of the list operations, as the document shows them. The handlers read
// the query themselves (`body::query_pairs`) so that every bad parameter is reported in one 422;
// these types state the same rules: the ranges of `envelope::Paging`, the values each handler's
// `match` takes.

/// `asc` or `desc`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookSort {
    CreatedAt,
    UpdatedAt,
    Name,
    Url,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatusFilter {
    Pending,
    Succeeded,
    Failed,
}

/// A status whose answer is an [`ErrorResponse`] and whose meaning each operation's own summary
/// gives, so the document leaves the answer without a description of its own.
fn error_answer(status: &str) -> BTreeMap<String, RefOr<Response>> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorResponse")))
        .build();
    let answer = ResponseBuilder::new()
        .content("application/json", content)
        .build();
    BTreeMap::from([(status.to_owned(), answer.into())])
}

/// `404` with an [`ErrorResponse`].
pub struct NotFound;

impl IntoResponses for NotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_answer("404")
    }
}

/// `409` with an [`ErrorResponse`].
pub struct Conflict;

impl IntoResponses for Conflict {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_answer("409")
    }
}

/// `422` with an [`ErrorResponse`].
pub struct Invalid;

impl IntoResponses for Invalid {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_answer("422")
    }
}

/// Path of `/v1/webhooks/{id}` and the operations under it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the document only; the handlers take the id from `access::Scoped`.
pub struct WebhookPath {
    /// Webhook id
    id: uuid::Uuid,
}

/// Path of `/v1/events/{name}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the document only; the handlers take the name as a string.
pub struct EventTypePath {
    /// An event type of the catalog, e.g. `order.shipped`.
    #[param(inline)]
    name: CatalogEventType,
}

/// Query of `GET /v1/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the document only; see above.
pub struct EventTypeListQuery {
    /// Only this group, e.g. `order`.
    group: Option<String>,
    active: Option<bool>,
    /// Default 100.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Default 1.
    #[param(minimum = 1, maximum = 9007199254740991_i64)]
    page: Option<i64>,
}

/// Query of `GET /v1/webhooks`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the document only; see above.
pub struct WebhookListQuery {
    /// Default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Default 1.
    #[param(minimum = 1, maximum = 9007199254740991_i64)]
    page: Option<i64>,
    /// Default `created_at`.
    #[param(inline)]
    sort: Option<WebhookSort>,
    /// Default `desc`.
    #[param(inline)]
    direction: Option<Direction>,
    /// Only subscriptions that would receive this event type.
    #[param(inline)]
    event: Option<CatalogEventType>,
    active: Option<bool>,
    /// Only subscriptions with a filter (`true`) or without one (`false`).
    has_filter: Option<bool>,
}

/// Query of `GET /v1/webhooks/{id}/deliveries`. `until` must be later than `since` (a 422
/// otherwise).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the document only; see above.
pub struct DeliveryListQuery {
    #[param(inline)]
    status: Option<DeliveryStatusFilter>,
    /// Only deliveries of this event type.
    #[param(inline)]
    event_type: Option<CatalogEventType>,
    /// Deliveries created at or after it.
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Deliveries created before it; later than `since`.
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Default 1.
    #[param(minimum = 1, maximum = 9007199254740991_i64)]
    page: Option<i64>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waybill control plane API",
        description = "Event catalog, webhook subscriptions and delivery log of Waybill. Bearer JWT (HS256) with claims `tenant`, `scopes`, `exp`. No string in a request body or query may contain the NUL character (U+0000): PostgreSQL text cannot store it, so it is refused with a 422 naming the field.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "events", description = "The event catalog"), (name = "webhooks", description = "Webhook subscriptions"), (name = "deliveries", description = "The delivery log"))
)]
struct ApiDoc;

/// The document as pretty JSON, with a trailing newline: [`ApiDoc`] with every operation
/// [`routes::configure`] registers.
pub fn document() -> String {
    waybill_runtime::openapi::render(waybill_runtime::openapi::collect(
        ApiDoc::openapi(),
        routes::configure,
    ))
}

#[cfg(test)]
mod tests {
    //! The document's request models are checked against what the parsers read, so a field or
    //! parameter added to a handler fails here until the document shows it too.

    use std::collections::BTreeSet;

    use utoipa::{IntoParams, PartialSchema};

    use super::*;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn params<P: IntoParams>() -> BTreeSet<String> {
        P::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    fn properties<S: PartialSchema>() -> BTreeSet<String> {
        match S::schema() {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            _ => BTreeSet::new(),
        }
    }

    #[test]
    fn documented_queries_are_the_ones_the_handlers_read() {
        assert_eq!(params::<WebhookListQuery>(), names(webhooks::list::PARAMS));
        assert_eq!(
            params::<DeliveryListQuery>(),
            names(deliveries::list::PARAMS)
        );
    }

    #[test]
    fn documented_bodies_are_the_ones_the_parser_takes() {
        assert_eq!(
            properties::<WebhookCreate>(),
            names(webhooks::input::FIELDS)
        );
        let mut update = names(webhooks::input::FIELDS);
        // Refused on update with its own message: rotating is a separate operation.
        update.remove("secret");
        assert_eq!(properties::<WebhookUpdate>(), update);
        assert_eq!(
            properties::<FilterTestRequest>(),
            names(filters::test::FIELDS)
        );
        assert_eq!(
            properties::<FilterTestEvent>(),
            names(waybill_domain::event::EVENT_FIELDS)
        );
    }
}
