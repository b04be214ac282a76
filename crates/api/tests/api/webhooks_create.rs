//! `POST /v1/webhooks`: every rule of the contract, with the field each error is keyed on.

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{TestApp, webhook};

/// A valid create body with `patch` applied: a key set to null is removed, any other is set.
fn valid_but(patch: Value) -> Value {
    let mut base = json!({"url": "https://example.com/hook", "events": ["order.shipped"]});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

/// `(what the case changes, the field the 422 must name, the change to a valid body)`.
// A case a line: the table is read down its columns, which wrapping would break.
#[rustfmt::skip]
fn invalid_cases() -> Vec<(&'static str, &'static str, Value)> {
    let many = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
    let headers = |n: usize| {
        (0..n)
            .map(|i| (format!("X-H{i}"), json!("v")))
            .collect::<serde_json::Map<_, _>>()
    };
    vec![
        ("url missing", "url", json!({"url": null})),
        ("url http", "url", json!({"url": "http://example.com/hook"})),
        ("url relative", "url", json!({"url": "/hook"})),
        ("url ftp", "url", json!({"url": "ftp://example.com/"})),
        ("url credentials", "url", json!({"url": "https://u:p@example.com/"})),
        ("url too long", "url", json!({"url": format!("https://example.com/{}", "a".repeat(2040))})),
        ("url private v4", "url", json!({"url": "https://10.0.0.5/hook"})),
        ("url loopback", "url", json!({"url": "https://127.0.0.1:8443/hook"})),
        ("url loopback v6", "url", json!({"url": "https://[::1]/hook"})),
        ("url link-local metadata", "url", json!({"url": "https://169.254.169.254/latest/meta-data"})),
        ("url cgnat", "url", json!({"url": "https://100.64.1.1/"})),
        ("url localhost", "url", json!({"url": "https://localhost/hook"})),
        ("events missing", "events", json!({"events": null})),
        ("events empty", "events", json!({"events": []})),
        ("events over 100", "events", json!({"events": many(101, &|i| format!("order.a{i}"))})),
        ("events duplicate", "events[1]", json!({"events": ["order.shipped", "order.shipped"]})),
        ("events unknown type", "events[0]", json!({"events": ["order.teleported"]})),
        ("events unknown group", "events[1]", json!({"events": ["order.shipped", "spaceship.*"]})),
        ("events bad syntax", "events[0]", json!({"events": ["Order Shipped"]})),
        ("events bare group", "events[0]", json!({"events": ["order"]})),
        ("name too long", "name", json!({"name": "n".repeat(256)})),
        ("description too long", "description", json!({"description": "d".repeat(1001)})),
        ("method GET", "method", json!({"method": "GET"})),
        ("method lower case", "method", json!({"method": "post"})),
        ("client_ids over 1000", "client_ids", json!({"client_ids": many(1001, &|i| format!("c{i}"))})),
        ("client_id empty", "client_ids[0]", json!({"client_ids": [""]})),
        ("client_id too long", "client_ids[1]", json!({"client_ids": ["ok", "c".repeat(129)]})),
        ("client_id duplicate", "client_ids[1]", json!({"client_ids": ["a", "a"]})),
        ("headers over 20", "headers", json!({"headers": headers(21)})),
        ("header host", "headers.Host", json!({"headers": {"Host": "evil.example"}})),
        ("header content-type", "headers.content-type", json!({"headers": {"content-type": "text/plain"}})),
        ("header transfer-encoding", "headers.Transfer-Encoding", json!({"headers": {"Transfer-Encoding": "chunked"}})),
        ("header proxy-", "headers.Proxy-Authorization", json!({"headers": {"Proxy-Authorization": "x"}})),
        ("header webhook-", "headers.webhook-signature", json!({"headers": {"webhook-signature": "v1,forged"}})),
        ("header user-agent", "headers.User-Agent", json!({"headers": {"User-Agent": "me"}})),
        ("header te", "headers.TE", json!({"headers": {"TE": "trailers"}})),
        ("header name not a token", "headers.X Bad", json!({"headers": {"X Bad": "v"}})),
        ("header value newline", "headers.X-A", json!({"headers": {"X-A": "a\r\nInjected: 1"}})),
        ("header value non-ascii", "headers.X-A", json!({"headers": {"X-A": "café"}})),
        ("header value too long", "headers.X-A", json!({"headers": {"X-A": "v".repeat(1025)}})),
        ("header same name twice", "headers.x-a", json!({"headers": {"X-A": "1", "x-a": "2"}})),
        ("header clashes with basic auth", "headers.Authorization", json!({"headers": {"Authorization": "x"}, "auth": {"type": "basic", "username": "u", "password": "p"}})),
        ("header clashes with token auth", "headers.x-api-key", json!({"headers": {"x-api-key": "x"}, "auth": {"type": "token", "header": "X-Api-Key", "token": "t"}})),
        ("auth type unknown", "auth.type", json!({"auth": {"type": "oauth2"}})),
        ("auth type missing", "auth.type", json!({"auth": {"username": "u"}})),
        ("auth basic without password", "auth.password", json!({"auth": {"type": "basic", "username": "u"}})),
        ("auth basic without username", "auth.username", json!({"auth": {"type": "basic", "password": "p"}})),
        ("auth basic colon", "auth.username", json!({"auth": {"type": "basic", "username": "a:b", "password": "p"}})),
        ("auth basic long password", "auth.password", json!({"auth": {"type": "basic", "username": "u", "password": "p".repeat(256)}})),
        ("auth basic with token field", "auth.token", json!({"auth": {"type": "basic", "username": "u", "password": "p", "token": "t"}})),
        ("auth token missing", "auth.token", json!({"auth": {"type": "token"}})),
        ("auth token too long", "auth.token", json!({"auth": {"type": "token", "token": "t".repeat(4097)}})),
        ("auth token reserved header", "auth.header", json!({"auth": {"type": "token", "header": "Content-Type", "token": "t"}})),
        ("auth token bad header", "auth.header", json!({"auth": {"type": "token", "header": "X Key", "token": "t"}})),
        ("auth none with extra", "auth.username", json!({"auth": {"type": "none", "username": "u"}})),
        ("secret too short", "secret", json!({"secret": "short"})),
        ("secret too long", "secret", json!({"secret": "s".repeat(129)})),
        ("secret not printable", "secret", json!({"secret": "tab\tsecret!"})),
        ("secret whsec bad base64", "secret", json!({"secret": "whsec_!!!not-base64!!!"})),
        ("secret whsec too few bytes", "secret", json!({"secret": format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([1u8; 16]))})),
        ("filter unknown operator", "filter", json!({"filter": {"data.status": {"$like": "ship%"}}})),
        ("filter empty", "filter", json!({"filter": {}})),
        ("unknown field", "retries", json!({"retries": 5})),
    ]
}

#[tokio::test]
async fn every_rule_is_enforced_with_its_field() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    for (case, field, patch) in invalid_cases() {
        let r = app.post("/v1/webhooks", &t, valid_but(patch)).await;
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
            json!({"url": "http://x", "events": [], "method": "GET", "typo": 1, "filter": {"data.qty": {"$gt": []}}}),
        )
        .await;
    r.assert(422);
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, ["events", "filter", "method", "typo", "url"]);
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
    assert!(d["filter"].is_null(), "no filter unless one is given");
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
    r.assert_error(409, "conflict");
    // Another method or another set of events is a different subscription.
    app.post("/v1/webhooks", &t, json!({"url": "https://example.com/a", "events": ["stock.*", "order.shipped"], "method": "PUT"})).await.assert(201);
    app.create_webhook(
        &t,
        json!({"url": "https://example.com/a", "events": ["stock.*"]}),
    )
    .await;
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
