//! Malformed requests always get the JSON error shape with the right status, never a 500.

use reqwest::{Method, header};
use serde_json::json;

use crate::helpers::{TestApp, webhook};

#[tokio::test]
async fn malformed_bodies_get_precise_json_errors() {
    let app = TestApp::spawn().await;
    let t = app.acme();

    let r = app
        .raw(Method::POST, "/v1/webhooks", Some(&t), |r| {
            r.header(header::CONTENT_TYPE, "application/json")
                .body("{\"url\": ")
        })
        .await;
    r.assert_error(400, "bad_request")
        .assert_message(400, "not valid JSON");

    let r = app
        .raw(Method::POST, "/v1/webhooks", Some(&t), |r| {
            r.header(header::CONTENT_TYPE, "text/plain").body("{}")
        })
        .await;
    r.assert_error(415, "unsupported_media_type");

    let r = app
        .raw(Method::POST, "/v1/webhooks", Some(&t), |r| r.body("{}"))
        .await;
    r.assert(415);

    let r = app
        .raw(Method::POST, "/v1/webhooks", Some(&t), |r| {
            r.header(header::CONTENT_TYPE, "application/json")
                .body("[1,2]")
        })
        .await;
    r.assert(400);

    let r = app
        .raw(Method::POST, "/v1/webhooks", Some(&t), |r| {
            r.header(header::CONTENT_TYPE, "application/json")
        })
        .await;
    r.assert(400);

    // A type error names the field.
    let r = app
        .post(
            "/v1/webhooks",
            &t,
            json!({"url": "https://example.com", "events": "order.shipped"}),
        )
        .await;
    r.assert_message(400, "`events`");
    let r = app.post("/v1/webhooks", &t, json!({"url": "https://example.com", "events": ["order.shipped"], "headers": {"X-A": 1}})).await;
    r.assert_message(400, "headers.X-A");
    app.post(
        "/v1/webhooks",
        &t,
        json!({"url": "https://example.com", "events": ["order.shipped"], "active": "yes"}),
    )
    .await
    .assert(400);

    // Over 1 MiB, announced or streamed.
    let big = json!({"url": "https://example.com", "events": ["order.shipped"], "description": "x".repeat(1 << 20)});
    let r = app.post("/v1/webhooks", &t, big).await;
    r.assert_error(413, "payload_too_large");

    // Charset parameter and +json media types are JSON too.
    let r = app
        .raw(Method::POST, "/v1/webhooks", Some(&t), |r| {
            r.header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                .body(webhook("https://example.com/a").to_string())
        })
        .await;
    r.assert(201);
}

#[tokio::test]
async fn unknown_routes_methods_and_query_parameters() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let r = app.get("/v1/nope", &t).await;
    r.assert_error(404, "not_found");
    let r = app.raw(Method::PUT, "/v1/webhooks", Some(&t), |r| r).await;
    r.assert_error(405, "method_not_allowed");
    for (path, field) in [
        ("/v1/webhooks?activ=true", "activ"),
        ("/v1/webhooks?limit=2&limit=3", "limit"),
    ] {
        app.get(path, &t).await.assert_invalid(field);
    }
}

#[tokio::test]
async fn operational_endpoints_need_no_token() {
    let app = TestApp::spawn().await;
    let r = app.raw(Method::GET, "/healthz", None, |r| r).await;
    r.assert(200);
    let r = app.raw(Method::GET, "/readyz", None, |r| r).await;
    r.assert(200);
    assert_eq!(r.body["checks"]["postgres"], "ok");
    assert_eq!(r.body["checks"]["broker"], "ok");
    let r = app.raw(Method::GET, "/openapi.json", None, |r| r).await;
    r.assert(200);
    assert!(r.body["paths"]["/v1/webhooks"].is_object());

    let res = reqwest::get(format!("{}/metrics", app.addr)).await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("waybill_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/readyz\""), "{text}");
    assert!(
        text.contains("waybill_subscription_changes_pending"),
        "{text}"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let r = app
        .raw(Method::GET, "/healthz", None, |r| {
            r.header("x-request-id", "trace-abc-123")
        })
        .await;
    assert_eq!(r.headers["x-request-id"], "trace-abc-123");
    let r = app.raw(Method::GET, "/healthz", None, |r| r).await;
    let generated = r.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

#[tokio::test]
async fn readiness_fails_while_the_broker_is_unreachable() {
    let app =
        TestApp::spawn_with(|s| s.broker.url = "amqp://guest:guest@127.0.0.1:1/%2f".into()).await;
    let r = app.raw(Method::GET, "/readyz", None, |r| r).await;
    r.assert_error(503, "unavailable");
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert!(r.message().contains("broker"), "{}", r.body);
}

#[tokio::test]
async fn nul_characters_are_refused_where_they_are_not_a_500() {
    let app = TestApp::spawn().await;
    let t = app.admin();
    let r = app
        .post(
            "/v1/webhooks",
            &t,
            json!({"url": "https://example.com/x", "events": ["order.shipped"], "name": "a\u{0}b", "headers": {"X-A": "\u{0}"}}),
        )
        .await;
    r.assert_invalid("name");
    r.assert_invalid("headers.X-A");
    app.post(
        "/v1/webhooks",
        &t,
        json!({"url": "https://example.com/x", "events": ["order.\u{0}"]}),
    )
    .await
    .assert_invalid("events[0]");
    app.patch_event(&t, "order.shipped", json!({"description": "\u{0}"}))
        .await
        .assert_invalid("description");
    for (path, field) in [
        ("/v1/events?group=%00", "group"),
        ("/v1/webhooks?sort=%00", "sort"),
    ] {
        app.get(path, &t).await.assert_invalid(field);
    }
    for path in [
        "/v1/events/%00",
        "/v1/events/order.%00",
        "/v1/webhooks/%FF",
        "/v1/webhooks/%00/secret",
    ] {
        let r = app.get(path, &t).await;
        r.assert_error(404, "not_found");
    }
    app.patch("/v1/events/%00", &t, json!({"active": true}))
        .await
        .assert(404);
    // Nothing was stored.
    assert_eq!(app.get("/v1/webhooks", &t).await.body["count"], 0);
}

#[tokio::test]
async fn type_errors_name_the_field_but_never_echo_the_value() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let r = app.post("/v1/webhooks", &t, json!({"url": "https://example.com/x", "events": ["order.shipped"], "auth": "Bearer sk_live_SECRET"})).await;
    r.assert(400);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert_eq!(msg, "Invalid value for `auth`: expected an object.");
    let r = app
        .post("/v1/webhooks", &t, json!({"url": "https://example.com/x", "events": ["order.shipped"], "auth": {"type": "basic", "username": "u", "password": 987654321}}))
        .await;
    r.assert(400);
    assert!(!r.body.to_string().contains("987654321"), "{}", r.body);
    assert!(
        r.message().contains("`auth.password`: expected a string"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn wrong_methods_say_which_are_allowed() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    for (method, path, allow) in [
        (Method::PUT, "/v1/webhooks", "GET, POST"),
        (Method::POST, "/v1/webhooks/x", "GET, PATCH, DELETE"),
        (Method::DELETE, "/v1/events", "GET"),
        (Method::GET, "/v1/webhooks/x/secret/rotate", "POST"),
    ] {
        let r = app.raw(method, path, Some(&t), |r| r).await;
        r.assert(405);
        assert_eq!(r.headers[header::ALLOW], allow, "{path}");
    }
}
