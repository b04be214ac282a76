//! `PATCH` and `DELETE /v1/webhooks/{id}`.

use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::helpers::{TestApp, webhook};

#[tokio::test]
async fn patch_changes_only_what_is_given_and_replaces_headers_and_auth() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let created = app
        .create_webhook(&t, json!({
            "url": "https://example.com/a", "events": ["order.shipped"], "name": "first",
            "headers": {"X-One": "1", "X-Two": "2"}, "auth": {"type": "basic", "username": "u", "password": "p"},
        }))
        .await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());

    let r = app.patch(&path, &t, json!({"name": "second"})).await;
    r.assert(200);
    let d = &r.body["data"];
    assert_eq!(d["name"], "second");
    assert_eq!(d["url"], created["url"]);
    assert_eq!(d["headers"], created["headers"]);
    assert_eq!(d["auth"], created["auth"]);
    assert_eq!(d["created_at"], created["created_at"]);
    assert_ne!(d["updated_at"], created["updated_at"]);

    let r = app.patch(&path, &t, json!({"headers": {"X-Three": "3"}, "auth": {"type": "token", "header": "X-Api-Key", "token": "k"}})).await;
    r.assert(200);
    assert_eq!(r.body["data"]["headers"], json!({"X-Three": "3"}));
    assert_eq!(
        r.body["data"]["auth"],
        json!({"type": "token", "header": "X-Api-Key", "token": "••••••••"})
    );

    // A header that now clashes with the existing auth is blamed on the header.
    app.patch(&path, &t, json!({"headers": {"X-API-KEY": "dup"}}))
        .await
        .assert_invalid("headers.X-API-KEY");
    // An auth that clashes with existing headers is blamed on auth.
    app.patch(
        &path,
        &t,
        json!({"auth": {"type": "token", "header": "X-Three", "token": "k"}}),
    )
    .await
    .assert_invalid("auth");

    // Same rules as create.
    for (patch, field) in [
        (json!({"url": "http://example.com"}), "url"),
        (json!({"events": []}), "events"),
        (json!({"method": "DELETE"}), "method"),
        (json!({"secret": "new-secret-123"}), "secret"),
        (json!({"name": null}), "name"),
        (json!({"nmae": "typo"}), "nmae"),
    ] {
        app.patch(&path, &t, patch).await.assert_invalid(field);
    }
    app.patch(&path, &t, json!({"active": "no"}))
        .await
        .assert(400);

    // An empty patch changes nothing, not even updated_at.
    let before = app.get(&path, &t).await.body["data"].clone();
    let r = app.patch(&path, &t, json!({})).await;
    r.assert(200);
    assert_eq!(r.body["data"], before);
}

#[tokio::test]
async fn patch_conflicts_missing_ids_and_re_enabling() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    app.create_webhook(&t, webhook("https://example.com/a"))
        .await;
    let b = app
        .create_webhook(&t, webhook("https://example.com/b"))
        .await;
    let path = format!("/v1/webhooks/{}", b["id"].as_str().unwrap());
    let r = app
        .patch(&path, &t, json!({"url": "https://example.com/a"}))
        .await;
    r.assert_error(409, "conflict");

    app.patch(
        &format!("/v1/webhooks/{}", uuid::Uuid::new_v4()),
        &t,
        json!({"name": "x"}),
    )
    .await
    .assert(404);
    app.patch("/v1/webhooks/not-a-uuid", &t, json!({"name": "x"}))
        .await
        .assert(404);
    app.get("/v1/webhooks/not-a-uuid", &t).await.assert(404);

    // The platform disabled it; the tenant re-enables it and the reason goes away.
    let mut conn = app.sql().await;
    diesel::sql_query(format!(
        "UPDATE webhooks SET active = false, disabled_reason = 'failing since 2026-01-01' WHERE id = '{}'",
        b["id"].as_str().unwrap()
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let r = app.get(&path, &t).await;
    assert_eq!(
        r.body["data"]["disabled_reason"],
        "failing since 2026-01-01"
    );
    let r = app.patch(&path, &t, json!({"active": true})).await;
    r.assert(200);
    assert_eq!(r.body["data"]["active"], true);
    assert!(r.body["data"]["disabled_reason"].is_null());
}

#[tokio::test]
async fn delete_removes_the_webhook_and_its_secrets() {
    let (app, t, id) = TestApp::with_webhook().await;
    let path = format!("/v1/webhooks/{id}");
    let r = app.delete(&path, &t).await;
    r.assert(204);
    assert!(r.body.is_null(), "204 has no body");
    app.get(&path, &t).await.assert(404);
    app.delete(&path, &t).await.assert(404);
    app.get(&format!("{path}/secret"), &t).await.assert(404);
    let mut conn = app.sql().await;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let left: N = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM webhook_secrets WHERE webhook_id = '{id}'"
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(left.n, 0);
    // The url is free again.
    app.post("/v1/webhooks", &t, webhook("https://example.com/a"))
        .await
        .assert(201);
}

#[tokio::test]
async fn patch_reports_every_problem_and_keeps_types_already_subscribed() {
    let app = TestApp::spawn().await;
    let (t, admin) = (app.acme(), app.admin());
    let id = app
        .create_webhook_id(
            &t,
            json!({"url": "https://example.com/a", "events": ["order.shipped", "stock.*"]}),
        )
        .await;
    let path = format!("/v1/webhooks/{id}");
    let r = app
        .patch(
            &path,
            &t,
            json!({"nmae": "x", "url": "http://example.com", "secret": "whatever-1"}),
        )
        .await;
    r.assert(422);
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, ["nmae", "secret", "url"]);

    app.patch("/v1/events/order.shipped", &admin, json!({"active": false}))
        .await
        .assert(200);
    // Sending the whole subscription back, as read, still works.
    let current = app.get(&path, &t).await.body["data"].clone();
    app.patch(
        &path,
        &t,
        json!({"events": current["events"], "name": "renamed"}),
    )
    .await
    .assert(200);
    // Adding an inactive type is still refused.
    app.patch(
        &path,
        &t,
        json!({"events": ["order.shipped", "stock.*", "order.cancelled"]}),
    )
    .await
    .assert(200);
    app.patch_event(&admin, "order.cancelled", json!({"active": false}))
        .await
        .assert(200);
    let other = app
        .create_webhook(
            &t,
            json!({"url": "https://example.com/b", "events": ["stock.*"]}),
        )
        .await;
    app.patch_webhook(
        &t,
        other["id"].as_str().unwrap(),
        json!({"events": ["order.cancelled"]}),
    )
    .await
    .assert_invalid("events[0]");
}

#[tokio::test]
async fn rate_limit_is_optional_bounded_and_removable() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let unlimited = app
        .create_webhook(&t, webhook("https://example.com/free"))
        .await;
    assert!(unlimited["rate_limit"].is_null());
    let explicit_null = app
        .create_webhook(
            &t,
            json!({"url": "https://example.com/n", "events": ["order.shipped"], "rate_limit": null}),
        )
        .await;
    assert!(explicit_null["rate_limit"].is_null());
    let limited = app
        .create_webhook(
            &t,
            json!({"url": "https://example.com/l", "events": ["order.shipped"], "rate_limit": 25}),
        )
        .await;
    assert_eq!(limited["rate_limit"], 25);
    let path = format!("/v1/webhooks/{}", limited["id"].as_str().unwrap());

    for bad in [json!(0), json!(10_001), json!(-3), json!(2.5)] {
        app.patch(&path, &t, json!({"rate_limit": bad}))
            .await
            .assert_invalid("rate_limit");
        app.post(
            "/v1/webhooks",
            &t,
            json!({"url": "https://example.com/x", "events": ["order.shipped"], "rate_limit": bad}),
        )
        .await
        .assert_invalid("rate_limit");
    }
    let r = app.patch(&path, &t, json!({"rate_limit": "5"})).await;
    r.assert(400);
    // JSON Schema counts 25.0 as the integer the document asks for.
    let r = app.patch(&path, &t, json!({"rate_limit": 25.0})).await;
    r.assert(200);

    // Other changes keep it; a number changes it; null removes it.
    let r = app.patch(&path, &t, json!({"name": "renamed"})).await;
    r.assert(200);
    assert_eq!(r.body["data"]["rate_limit"], 25);
    let r = app.patch(&path, &t, json!({"rate_limit": 10000})).await;
    r.assert(200);
    assert_eq!(r.body["data"]["rate_limit"], 10000);
    assert_eq!(app.get(&path, &t).await.body["data"]["rate_limit"], 10000);
    let r = app.patch(&path, &t, json!({"rate_limit": null})).await;
    r.assert(200);
    assert!(r.body["data"]["rate_limit"].is_null());
}
