//! `POST /v1/webhooks`: every rule of the contract, with the field each error is keyed on.

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{TestApp, webhook};

/// `(what the case changes, the body, the field the 422 must name)`.
fn invalid_cases() -> Vec<(&'static str, Value, &'static str)> {
    let ok = |patch: Value| {
        let mut base = json!({"url": "https://example.com/hook", "events": ["order.shipped"]});
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    let many = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
    let headers = |n: usize| {
        (0..n)
            .map(|i| (format!("X-H{i}"), json!("v")))
            .collect::<serde_json::Map<_, _>>()
    };
    vec![
        ("url missing", ok(json!({"url": null})), "url"),
        (
            "url http",
            ok(json!({"url": "http://example.com/hook"})),
            "url",
        ),
        ("url relative", ok(json!({"url": "/hook"})), "url"),
        ("url ftp", ok(json!({"url": "ftp://example.com/"})), "url"),
        (
            "url credentials",
            ok(json!({"url": "https://u:p@example.com/"})),
            "url",
        ),
        (
            "url too long",
            ok(json!({"url": format!("https://example.com/{}", "a".repeat(2040))})),
            "url",
        ),
        (
            "url private v4",
            ok(json!({"url": "https://10.0.0.5/hook"})),
            "url",
        ),
        (
            "url loopback",
            ok(json!({"url": "https://127.0.0.1:8443/hook"})),
            "url",
        ),
        (
            "url loopback v6",
            ok(json!({"url": "https://[::1]/hook"})),
            "url",
        ),
        (
            "url link-local metadata",
            ok(json!({"url": "https://169.254.169.254/latest/meta-data"})),
            "url",
        ),
        (
            "url cgnat",
            ok(json!({"url": "https://100.64.1.1/"})),
            "url",
        ),
        (
            "url localhost",
            ok(json!({"url": "https://localhost/hook"})),
            "url",
        ),
        ("events missing", ok(json!({"events": null})), "events"),
        ("events empty", ok(json!({"events": []})), "events"),
        (
            "events over 100",
            ok(json!({"events": many(101, &|i| format!("order.a{i}"))})),
            "events",
        ),
        (
            "events duplicate",
            ok(json!({"events": ["order.shipped", "order.shipped"]})),
            "events[1]",
        ),
        (
            "events unknown type",
            ok(json!({"events": ["order.teleported"]})),
            "events[0]",
        ),
        (
            "events unknown group",
            ok(json!({"events": ["order.shipped", "spaceship.*"]})),
            "events[1]",
        ),
        (
            "events bad syntax",
            ok(json!({"events": ["Order Shipped"]})),
            "events[0]",
        ),
        (
            "events bare group",
            ok(json!({"events": ["order"]})),
            "events[0]",
        ),
        (
            "name too long",
            ok(json!({"name": "n".repeat(256)})),
            "name",
        ),
        (
            "description too long",
            ok(json!({"description": "d".repeat(1001)})),
            "description",
        ),
        ("method GET", ok(json!({"method": "GET"})), "method"),
        ("method lower case", ok(json!({"method": "post"})), "method"),
        (
            "client_ids over 1000",
            ok(json!({"client_ids": many(1001, &|i| format!("c{i}"))})),
            "client_ids",
        ),
        (
            "client_id empty",
            ok(json!({"client_ids": [""]})),
            "client_ids[0]",
        ),
        (
            "client_id too long",
            ok(json!({"client_ids": ["ok", "c".repeat(129)]})),
            "client_ids[1]",
        ),
        (
            "client_id duplicate",
            ok(json!({"client_ids": ["a", "a"]})),
            "client_ids[1]",
        ),
        (
            "headers over 20",
            ok(json!({"headers": headers(21)})),
            "headers",
        ),
        (
            "header host",
            ok(json!({"headers": {"Host": "evil.example"}})),
            "headers.Host",
        ),
        (
            "header content-type",
            ok(json!({"headers": {"content-type": "text/plain"}})),
            "headers.content-type",
        ),
        (
            "header transfer-encoding",
            ok(json!({"headers": {"Transfer-Encoding": "chunked"}})),
            "headers.Transfer-Encoding",
        ),
        (
            "header proxy-",
            ok(json!({"headers": {"Proxy-Authorization": "x"}})),
            "headers.Proxy-Authorization",
        ),
        (
            "header webhook-",
            ok(json!({"headers": {"webhook-signature": "v1,forged"}})),
            "headers.webhook-signature",
        ),
        (
            "header user-agent",
            ok(json!({"headers": {"User-Agent": "me"}})),
            "headers.User-Agent",
        ),
        (
            "header te",
            ok(json!({"headers": {"TE": "trailers"}})),
            "headers.TE",
        ),
        (
            "header name not a token",
            ok(json!({"headers": {"X Bad": "v"}})),
            "headers.X Bad",
        ),
        (
            "header value newline",
            ok(json!({"headers": {"X-A": "a\r\nInjected: 1"}})),
            "headers.X-A",
        ),
        (
            "header value non-ascii",
            ok(json!({"headers": {"X-A": "café"}})),
            "headers.X-A",
        ),
        (
            "header value too long",
            ok(json!({"headers": {"X-A": "v".repeat(1025)}})),
            "headers.X-A",
        ),
        (
            "header same name twice",
            ok(json!({"headers": {"X-A": "1", "x-a": "2"}})),
            "headers.x-a",
        ),
        (
            "header clashes with basic auth",
            ok(
                json!({"headers": {"Authorization": "x"}, "auth": {"type": "basic", "username": "u", "password": "p"}}),
            ),
            "headers.Authorization",
        ),
        (
            "header clashes with token auth",
            ok(
                json!({"headers": {"x-api-key": "x"}, "auth": {"type": "token", "header": "X-Api-Key", "token": "t"}}),
            ),
            "headers.x-api-key",
        ),
        (
            "auth type unknown",
            ok(json!({"auth": {"type": "oauth2"}})),
            "auth.type",
        ),
        (
            "auth type missing",
            ok(json!({"auth": {"username": "u"}})),
            "auth.type",
        ),
        (
            "auth basic without password",
            ok(json!({"auth": {"type": "basic", "username": "u"}})),
            "auth.password",
        ),
        (
            "auth basic without username",
            ok(json!({"auth": {"type": "basic", "password": "p"}})),
            "auth.username",
        ),
        (
            "auth basic colon",
            ok(json!({"auth": {"type": "basic", "username": "a:b", "password": "p"}})),
            "auth.username",
        ),
        (
            "auth basic long password",
            ok(json!({"auth": {"type": "basic", "username": "u", "password": "p".repeat(256)}})),
            "auth.password",
        ),
        (
            "auth basic with token field",
            ok(json!({"auth": {"type": "basic", "username": "u", "password": "p", "token": "t"}})),
            "auth.token",
        ),
        (
            "auth token missing",
            ok(json!({"auth": {"type": "token"}})),
            "auth.token",
        ),
        (
            "auth token too long",
            ok(json!({"auth": {"type": "token", "token": "t".repeat(4097)}})),
            "auth.token",
        ),
        (
            "auth token reserved header",
            ok(json!({"auth": {"type": "token", "header": "Content-Type", "token": "t"}})),
            "auth.header",
        ),
        (
            "auth token bad header",
            ok(json!({"auth": {"type": "token", "header": "X Key", "token": "t"}})),
            "auth.header",
        ),
        (
            "auth none with extra",
            ok(json!({"auth": {"type": "none", "username": "u"}})),
            "auth.username",
        ),
        ("secret too short", ok(json!({"secret": "short"})), "secret"),
        (
            "secret too long",
            ok(json!({"secret": "s".repeat(129)})),
            "secret",
        ),
        (
            "secret not printable",
            ok(json!({"secret": "tab\tsecret!"})),
            "secret",
        ),
        (
            "secret whsec bad base64",
            ok(json!({"secret": "whsec_!!!not-base64!!!"})),
            "secret",
        ),
        (
            "secret whsec too few bytes",
            ok(
                json!({"secret": format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([1u8; 16]))}),
            ),
            "secret",
        ),
        ("unknown field", ok(json!({"retries": 5})), "retries"),
    ]
}

#[tokio::test]
async fn every_rule_is_enforced_with_its_field() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    for (case, body, field) in invalid_cases() {
        let r = app.post("/v1/webhooks", &t, body).await;
        assert_eq!(r.status, 422, "{case}: {}", r.body);
        assert!(
            r.error_fields().iter().any(|f| f == field),
            "{case}: expected `{field}` in {}",
            r.body
        );
    }
    // Nothing of the above was stored.
    assert_eq!(app.get("/v1/webhooks", &t).await.body["count"], 0);
}

#[tokio::test]
async fn several_errors_are_reported_together() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/v1/webhooks",
            &app.acme(),
            json!({"url": "http://x", "events": [], "method": "GET", "typo": 1}),
        )
        .await;
    r.assert(422);
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, ["events", "method", "typo", "url"]);
}

#[tokio::test]
async fn defaults_masks_and_location() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let r = app
        .post("/v1/webhooks", &t, webhook("https://example.com"))
        .await;
    r.assert(201);
    let d = &r.body["data"];
    let id = d["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(r.headers["location"], format!("/v1/webhooks/{id}").as_str());
    assert_eq!(d["url"], "https://example.com/");
    assert_eq!(d["method"], "POST");
    assert_eq!(d["name"], "");
    assert_eq!(d["description"], "");
    assert_eq!(d["client_ids"], json!([]));
    assert_eq!(d["headers"], json!({}));
    assert_eq!(d["auth"], json!({"type": "none"}));
    assert_eq!(d["secret"], "••••••••");
    assert_eq!(d["active"], true);
    assert!(d["disabled_reason"].is_null());
    assert_eq!(d["created_at"], d["updated_at"]);
    assert_eq!(r.body.as_object().unwrap().len(), 1, "only `data`");

    // The generated secret is whsec_ + base64 of 32 bytes.
    let s = app.get(&format!("/v1/webhooks/{id}/secret"), &t).await;
    let secret = s.body["data"]["secret"].as_str().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert_eq!(key.len(), 32);

    let full = json!({
        "url": "https://hooks.example.com/wms", "events": ["order.*", "stock.updated", "*"], "name": "Main WMS",
        "description": "Orders and stock", "method": "PUT", "client_ids": ["client-1", "client-2"],
        "headers": {"X-Env": "prod", "X-Trace": "a b c"},
        "auth": {"type": "token", "token": "tok-123"}, "secret": "my-own-secret-1", "active": false,
    });
    let d = app.create_webhook(&t, full).await;
    assert_eq!(d["method"], "PUT");
    assert_eq!(d["events"], json!(["order.*", "stock.updated", "*"]));
    assert_eq!(
        d["auth"],
        json!({"type": "token", "header": "Authorization", "token": "••••••••"})
    );
    assert_eq!(d["headers"]["X-Trace"], "a b c");
    assert_eq!(d["active"], false);
    let s = app
        .get(
            &format!("/v1/webhooks/{}/secret", d["id"].as_str().unwrap()),
            &t,
        )
        .await;
    assert_eq!(s.body["data"]["secret"], "my-own-secret-1");

    let d = app
        .create_webhook(&t, json!({"url": "https://example.com/basic", "events": ["order.shipped"], "auth": {"type": "basic", "username": "wms", "password": "pw"}}))
        .await;
    assert_eq!(
        d["auth"],
        json!({"type": "basic", "username": "wms", "password": "••••••••"})
    );
    // Nulls on create mean "default".
    let d = app.create_webhook(&t, json!({"url": "https://example.com/n", "events": ["order.shipped"], "name": null, "auth": null})).await;
    assert_eq!(d["name"], "");
    // A valid whsec_ secret of 24 bytes is accepted.
    let s = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 24])
    );
    app.create_webhook(
        &t,
        json!({"url": "https://example.com/w", "events": ["order.shipped"], "secret": s}),
    )
    .await;
}

#[tokio::test]
async fn duplicates_are_a_conflict_whatever_the_order_of_events() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    app.create_webhook(
        &t,
        json!({"url": "https://example.com/a", "events": ["order.shipped", "stock.*"]}),
    )
    .await;
    let r = app.post("/v1/webhooks", &t, json!({"url": "https://example.com/a", "events": ["stock.*", "order.shipped"], "name": "again"})).await;
    r.assert(409);
    assert_eq!(r.code(), "conflict");
    // Another method or another set of events is a different subscription.
    app.post("/v1/webhooks", &t, json!({"url": "https://example.com/a", "events": ["stock.*", "order.shipped"], "method": "PUT"})).await.assert(201);
    app.post(
        "/v1/webhooks",
        &t,
        json!({"url": "https://example.com/a", "events": ["stock.*"]}),
    )
    .await
    .assert(201);
}

#[tokio::test]
async fn operators_can_allow_http_and_private_ranges() {
    let app = TestApp::spawn_with(|s| {
        s.security.allow_http = true;
        s.security.allowed_private_ranges = vec!["10.20.0.0/16".parse().unwrap()];
    })
    .await;
    let t = app.acme();
    app.post("/v1/webhooks", &t, webhook("http://example.com/plain"))
        .await
        .assert(201);
    app.post("/v1/webhooks", &t, webhook("https://10.20.3.4/onprem"))
        .await
        .assert(201);
    app.post("/v1/webhooks", &t, webhook("https://10.21.3.4/onprem"))
        .await
        .assert_invalid("url");
}
