//! Payload filters in the control plane: the 422s of the filter language on create and update,
//! and the filter on the webhook object.

use diesel_async::RunQueryDsl;
use serde_json::{Map, Value, json};

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
            "filter.data.a: $regex is too large once compiled (over 262144 bytes); simplify it",
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

#[tokio::test]
async fn every_broken_rule_is_a_422_on_filter_naming_the_place_on_create_and_update() {
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
