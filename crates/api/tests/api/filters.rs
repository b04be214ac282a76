//! Payload filters in the control plane: the 422s of the filter language on create, update and
//! `POST /v1/filters/test`, the filter on the webhook object, and the test endpoint itself.

use diesel_async::RunQueryDsl;
use serde_json::{Map, Value, json};
use waybill_domain::Scope;
use waybill_testkit::examples::example;

use crate::helpers::{TestApp, webhook};

/// A filter that breaks one rule, and the message the api answers with under `errors.filter`.
fn refused_filters() -> Vec<(Value, String)> {
    let mut deep = json!({"data.x": 1});
    for _ in 0..8 {
        deep = json!({ "$not": deep });
    }
    let many: Map<String, Value> = (0..65).map(|i| (format!("data.k{i}"), json!(i))).collect();
    let big_set: Vec<u32> = (0..257).collect();
    let rows: Vec<(Value, &str)> = vec![
        (
            json!({}),
            "filter: has no condition; a filter needs at least one key",
        ),
        (
            json!({"data.status": {"$like": "x"}}),
            "filter.data.status: unknown operator `$like`; operators are $eq, $neq, $in, $nin, $gt, $gte, $lt, $lte, $exists, $regex, $startsWith, $endsWith, $contains",
        ),
        (
            json!({"$xor": [{"data.a": 1}]}),
            "filter: unknown combinator `$xor`; a key is a path or one of $and, $or, $not",
        ),
        (
            json!({"$gt": 1}),
            "filter: $gt is an operator and needs a path, as in {\"data.status\": {\"$gt\": ...}}",
        ),
        (
            json!({"data.a": {"$eq": 1, "b": 2}}),
            "filter.data.a: mixes operators with the plain key `b`; an operator object takes only `$` keys (compare with such an object through $eq)",
        ),
        // Wrong operands, one row per operator family.
        (
            json!({"$or": [{"data.a": 1}, {"data.qty": {"$gt": true}}]}),
            "filter.$or[1].data.qty: $gt needs a number or a string",
        ),
        (
            json!({"data.a": {"$lte": null}}),
            "filter.data.a: $lte needs a number or a string",
        ),
        (
            json!({"data.a": {"$in": "NL"}}),
            "filter.data.a: $in needs an array of values",
        ),
        (
            json!({"data.a": {"$nin": []}}),
            "filter.data.a: $nin needs 1 to 256 values; it has 0",
        ),
        (
            json!({"data.a": {"$exists": "yes"}}),
            "filter.data.a: $exists needs true or false",
        ),
        (
            json!({"data.a": {"$regex": 1}}),
            "filter.data.a: $regex needs a string",
        ),
        (
            json!({"data.a": {"$startsWith": 1}}),
            "filter.data.a: $startsWith needs a string",
        ),
        (
            json!({"data.a": {"$endsWith": ["x"]}}),
            "filter.data.a: $endsWith needs a string",
        ),
        (
            json!({"$and": {"data.a": 1}}),
            "filter.$and: $and needs an array of 1 to 20 filters",
        ),
        (
            json!({"$or": [{"data.a": 1}, "data.b"]}),
            "filter.$or[1]: must be a filter object",
        ),
        (
            json!({"$not": [{"data.a": 1}]}),
            "filter.$not: $not needs a filter object",
        ),
        // Regexes.
        (
            json!({"data.a": {"$regex": "(a"}}),
            "filter.data.a: $regex is not a valid pattern: unclosed group",
        ),
        (
            json!({"data.a": {"$regex": "(a)\\1"}}),
            "filter.data.a: $regex is not a valid pattern: backreferences are not supported",
        ),
        (
            json!({"data.a": {"$regex": "a".repeat(257)}}),
            "filter.data.a: $regex is 257 characters; at most 256",
        ),
        (
            json!({"data.a": {"$regex": "\\w{200}\\w{200}"}}),
            "filter.data.a: $regex is too large once compiled (over 131072 bytes); simplify it (Unicode classes such as \\w, \\d or . repeated are large; [A-Za-z0-9_], [0-9] or (?-u:\\w) are small)",
        ),
        // Limits.
        (
            json!({"data.a": {"$in": big_set}}),
            "filter.data.a: $in needs 1 to 256 values; it has 257",
        ),
        (
            json!({"$and": []}),
            "filter.$and: $and needs an array of 1 to 20 filters",
        ),
        (
            json!({"$or": vec![json!({"data.a": 1}); 21]}),
            "filter.$or: $or needs an array of 1 to 20 filters",
        ),
        (
            deep,
            "filter.$not.$not.$not.$not.$not.$not.$not.$not: nests deeper than 8 levels",
        ),
        (
            Value::Object(many),
            "filter: has 65 conditions; at most 64 (each operator or plain value on a path is one)",
        ),
        (
            json!({"data.a": {"$in": vec!["x".repeat(40); 120]}}),
            "filter: is 5180 bytes as JSON; at most 4096",
        ),
        // Paths.
        (
            json!({"data..status": 1}),
            "filter.data..status: a path is keys separated by single dots, none of them empty",
        ),
        (
            json!({"tenant": "acme"}),
            "filter.tenant: a path starts with one of id, type, timestamp, client_id, data (the body the receiver gets)",
        ),
        (
            json!({"type.group": "order"}),
            "filter.type.group: `type` is a string; a path cannot go below it",
        ),
        (
            json!({"client_id.x": 1}),
            "filter.client_id.x: `client_id` is a string or null; a path cannot go below it",
        ),
    ];
    rows.into_iter().map(|(f, m)| (f, m.to_owned())).collect()
}

/// A `/v1/filters/test` body: `filter` against an `order.shipped` event of the catalog's example.
fn trial(filter: Value) -> Value {
    json!({"filter": filter, "event": {"type": "order.shipped", "data": example("order.shipped")}})
}

#[tokio::test]
async fn every_broken_rule_is_a_422_on_filter_naming_the_place_wherever_a_filter_goes() {
    let (app, t, id) = TestApp::with_webhook().await;
    let path = format!("/v1/webhooks/{id}");
    for (filter, message) in refused_filters() {
        let mut create = webhook("https://example.com/b");
        create["filter"] = filter.clone();
        let answers = [
            ("create", app.post("/v1/webhooks", &t, create).await),
            (
                "update",
                app.patch(&path, &t, json!({"filter": filter})).await,
            ),
            (
                "test",
                app.post("/v1/filters/test", &t, trial(filter.clone()))
                    .await,
            ),
        ];
        for (what, r) in answers {
            r.assert_invalid("filter");
            assert_eq!(
                r.errors_on("filter"),
                [message.as_str()],
                "{what} of {filter}"
            );
            assert_eq!(
                r.error_fields(),
                ["filter"],
                "{what}: only the filter is blamed"
            );
        }
    }
    // Nothing was created or changed by any of them.
    let r = app.get("/v1/webhooks", &t).await;
    assert_eq!(r.body["count"], 1);
    assert!(r.body["data"][0]["filter"].is_null());
}

#[tokio::test]
async fn a_filter_that_is_not_an_object_is_a_400() {
    let (app, t, id) = TestApp::with_webhook().await;
    for value in [
        json!("data.status=shipped"),
        json!(1),
        json!([]),
        json!(true),
    ] {
        let mut create = webhook("https://example.com/b");
        create["filter"] = value.clone();
        app.post("/v1/webhooks", &t, create)
            .await
            .assert_error(400, "bad_request")
            .assert_message(
                400,
                "Invalid value for `filter`: expected an object or null.",
            );
        app.patch_webhook(&t, &id, json!({"filter": value}))
            .await
            .assert_error(400, "bad_request")
            .assert_message(
                400,
                "Invalid value for `filter`: expected an object or null.",
            );
        app.post("/v1/filters/test", &t, trial(value))
            .await
            .assert_error(400, "bad_request")
            .assert_message(400, "Invalid value for `filter`: expected an object.");
    }
}

#[tokio::test]
async fn create_keeps_the_filter_and_patch_replaces_removes_or_keeps_it() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let eu =
        json!({"data.warehouse.country": {"$in": ["DE", "FR", "NL"]}, "type": "order.shipped"});
    let mut body = webhook("https://example.com/a");
    body["filter"] = eu.clone();
    let created = app.create_webhook(&t, body).await;
    assert_eq!(created["filter"], eu, "the filter as sent");
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &t).await.body["data"]["filter"], eu);

    // Without a filter, or with `null`, a subscription has none.
    let plain = app
        .create_webhook(&t, webhook("https://example.com/b"))
        .await;
    assert!(plain["filter"].is_null());
    let mut body = webhook("https://example.com/c");
    body["filter"] = Value::Null;
    assert!(app.create_webhook(&t, body).await["filter"].is_null());

    // Absent: kept.
    let r = app.patch(&path, &t, json!({"name": "eu"})).await;
    r.assert(200);
    assert_eq!(r.body["data"]["filter"], eu);

    // The same filter again changes nothing, not even `updated_at`.
    let before = r.body["data"].clone();
    let r = app.patch(&path, &t, json!({"filter": eu})).await;
    assert_eq!(r.body["data"], before);

    // An object replaces the whole filter: nothing of the old one is merged in.
    let low = json!({"data.available": {"$lt": 10}});
    let r = app.patch(&path, &t, json!({"filter": low})).await;
    r.assert(200);
    assert_eq!(r.body["data"]["filter"], low);
    assert_ne!(r.body["data"]["updated_at"], before["updated_at"]);
    assert_eq!(app.get(&path, &t).await.body["data"]["filter"], low);

    // `null` removes it.
    let r = app.patch(&path, &t, json!({"filter": null})).await;
    r.assert(200);
    assert!(r.body["data"]["filter"].is_null());
    assert!(app.get(&path, &t).await.body["data"]["filter"].is_null());

    // A refused filter leaves the subscription as it was.
    app.patch(&path, &t, json!({"filter": {"data.a": {"$gt": []}}}))
        .await
        .assert_invalid("filter");
    assert!(app.get(&path, &t).await.body["data"]["filter"].is_null());
}

#[tokio::test]
async fn a_stored_filter_that_no_longer_parses_is_an_internal_error_on_update() {
    let (app, t, id) = TestApp::with_webhook().await;
    let mut conn = app.sql().await;
    diesel::sql_query(format!(
        "UPDATE webhooks SET filter = '{{\"$xor\": []}}' WHERE id = '{id}'"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    // Reading shows what is stored; building on it is refused rather than guessed at.
    let r = app.get(&format!("/v1/webhooks/{id}"), &t).await;
    assert_eq!(r.body["data"]["filter"], json!({"$xor": []}));
    app.patch_webhook(&t, &id, json!({"name": "x"}))
        .await
        .assert_error(500, "internal");
}

/// `POST /v1/filters/test` as `token`'s caller.
async fn test_filter(app: &TestApp, token: &str, body: Value) -> bool {
    let r = app.post("/v1/filters/test", token, body).await;
    r.assert(200);
    assert_eq!(r.body["data"].as_object().unwrap().len(), 1, "{}", r.body);
    r.body["data"]["matches"].as_bool().unwrap()
}

#[tokio::test]
async fn the_test_endpoint_evaluates_the_filter_on_the_body_a_receiver_would_get() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let data = example("order.shipped");
    let event = |extra: Value| {
        let mut e = json!({"type": "order.shipped", "data": data.clone()});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    let sku = data["lines"][1]["sku"].clone();
    let cases = [
        (json!({"type": "order.shipped"}), json!({}), true),
        (json!({"type": "stock.updated"}), json!({}), false),
        (json!({"data.lines.sku": sku}), json!({}), true),
        (json!({"data.lines.sku": "NO-SUCH-SKU"}), json!({}), false),
        (
            json!({"$or": [{"data.status": "cancelled"}, {"data.lines.quantity": {"$gte": 2}}]}),
            json!({}),
            true,
        ),
        (
            json!({"$not": {"data.status": {"$in": ["shipped", "delivered"]}}}),
            json!({}),
            false,
        ),
        // `client_id` is null unless given.
        (json!({"client_id": null}), json!({}), true),
        (
            json!({"client_id": "shop-7"}),
            json!({"client_id": "shop-7"}),
            true,
        ),
        (
            json!({"client_id": null}),
            json!({"client_id": "shop-7"}),
            false,
        ),
        // `timestamp` is `occurred_at` as the receiver gets it: in UTC.
        (
            json!({"timestamp": "2026-01-10T10:30:00Z"}),
            json!({"occurred_at": "2026-01-10T11:30:00+01:00"}),
            true,
        ),
        (
            json!({"timestamp": {"$lt": "2026-01-10T10:30:00Z"}}),
            json!({"occurred_at": "2026-01-10T10:30:00Z"}),
            false,
        ),
        // Without `occurred_at`, now.
        (
            json!({"timestamp": {"$gt": "2026-01-01T00:00:00Z"}}),
            json!({}),
            true,
        ),
        // `id` as given, or generated.
        (json!({"id": "ord:42"}), json!({"id": "ord:42"}), true),
        (
            json!({"id": {"$regex": "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"}}),
            json!({}),
            true,
        ),
    ];
    for (filter, extra, want) in cases {
        let body = json!({"filter": filter, "event": event(extra.clone())});
        assert_eq!(
            test_filter(&app, &t, body).await,
            want,
            "{filter} on an event with {extra}"
        );
    }

    // The type's schema is not checked, and an inactive type is accepted.
    let excerpt = json!({"filter": {"data.status": "shipped"},
        "event": {"type": "order.shipped", "data": {"status": "shipped"}}});
    assert!(test_filter(&app, &t, excerpt.clone()).await);
    app.patch_event(&app.admin(), "order.shipped", json!({"active": false}))
        .await
        .assert(200);
    assert!(test_filter(&app, &t, excerpt).await);
}

#[tokio::test]
async fn the_test_endpoint_checks_its_body_and_the_event_like_a_publish() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let f = json!({"data.status": "shipped"});
    let rows: Vec<(Value, &str, &str)> = vec![
        (
            json!({"event": {"type": "order.shipped", "data": {}}}),
            "filter",
            "is required",
        ),
        (
            json!({"filter": null, "event": {"type": "order.shipped", "data": {}}}),
            "filter",
            "is required",
        ),
        (json!({"filter": f}), "event", "is required"),
        (
            json!({"filter": f, "event": {"type": "order.shipped", "data": {}}, "filtre": {}}),
            "filtre",
            "is not a known field",
        ),
        (
            json!({"filter": f, "event": {"type": "order.shipped", "data": {}, "colour": "red"}}),
            "event.colour",
            "is not a known field",
        ),
        (
            json!({"filter": f, "event": {"data": {}}}),
            "event.type",
            "is required",
        ),
        (
            json!({"filter": f, "event": {"type": "order.shipped"}}),
            "event.data",
            "is required",
        ),
        (
            json!({"filter": f, "event": {"type": "order.teleported", "data": {}}}),
            "event.type",
            "there is no event type `order.teleported`",
        ),
        (
            json!({"filter": f, "event": {"type": "Order Shipped", "data": {}}}),
            "event.type",
            "there is no event type `Order Shipped`",
        ),
        (
            json!({"filter": f, "event": {"type": "", "data": {}}}),
            "event.type",
            "there is no event type ``",
        ),
        (
            json!({"filter": f, "event": {"type": 7, "data": {}}}),
            "event.type",
            "must be a string",
        ),
        (
            json!({"filter": f, "event": {"type": "order.shipped", "data": [1]}}),
            "event.data",
            "must be an object",
        ),
        (
            json!({"filter": f, "event": {"type": "order.shipped", "data": {}, "id": "has space"}}),
            "event.id",
            "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'",
        ),
        (
            json!({"filter": f, "event": {"type": "order.shipped", "data": {}, "client_id": ""}}),
            "event.client_id",
            "must be 1 to 128 characters without control characters",
        ),
        (
            json!({"filter": f, "event": {"type": "order.shipped", "data": {}, "occurred_at": "yesterday"}}),
            "event.occurred_at",
            "must be an RFC 3339 timestamp such as 2026-01-10T10:30:00Z",
        ),
        (
            json!({"filter": f, "event": {"type": "order.shipped", "data": {"note": "x".repeat(300 * 1024)}}}),
            "event",
            "is larger than the 262144 bytes an event may have",
        ),
    ];
    for (body, field, message) in rows {
        let r = app.post("/v1/filters/test", &t, &body).await;
        r.assert_invalid(field);
        assert_eq!(r.errors_on(field), [message], "{field}");
    }

    // Every problem at once, the filter's and the event's.
    let r = app
        .post(
            "/v1/filters/test",
            &t,
            json!({"filter": {"$xor": []}, "event": {"type": "order.teleported", "data": 1, "colour": "red", "id": "has space"}}),
        )
        .await;
    r.assert(422);
    assert_eq!(
        r.error_fields(),
        [
            "event.colour",
            "event.data",
            "event.id",
            "event.type",
            "filter"
        ]
    );

    // Not an object where one is needed: 400, like any value of the wrong type.
    app.post("/v1/filters/test", &t, json!({"filter": f, "event": []}))
        .await
        .assert_error(400, "bad_request")
        .assert_message(400, "Invalid value for `event`: expected an object.");
}

#[tokio::test]
async fn the_test_endpoint_takes_any_webhooks_scope_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let body = trial(json!({"data.status": "shipped"}));
    for scopes in [
        &[Scope::WebhooksRead][..],
        &[Scope::WebhooksWrite],
        &[Scope::Admin],
    ] {
        assert!(
            test_filter(&app, &app.token("acme", scopes), body.clone()).await,
            "{scopes:?}"
        );
    }
    app.post("/v1/filters/test", &app.publisher(), &body)
        .await
        .assert_error(403, "forbidden");
    app.raw(reqwest::Method::POST, "/v1/filters/test", None, |r| {
        r.json(&body)
    })
    .await
    .assert_error(401, "unauthorized");

    // No event, delivery, subscription or change came of any of it.
    let mut conn = app.sql().await;
    for table in [
        "events",
        "deliveries",
        "delivery_attempts",
        "webhooks",
        "subscription_changes",
    ] {
        let n: Vec<Count> = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .load(&mut conn)
            .await
            .unwrap();
        assert_eq!(n[0].n, 0, "rows in {table}");
    }
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}
