//! Tokens, scopes, tenancy and the per-tenant rate limit.

use reqwest::{Method, header};
use serde_json::json;
use waybill_domain::Scope;
use waybill_runtime::JwtKeys;

use crate::helpers::{TestApp, webhook};

#[tokio::test]
async fn missing_or_bad_tokens_are_401_with_a_challenge() {
    let app = TestApp::spawn().await;
    let r = app.raw(Method::GET, "/v1/webhooks", None, |r| r).await;
    r.assert_error(401, "unauthorized");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");

    let r = app
        .raw(Method::GET, "/v1/webhooks", None, |r| {
            r.header(header::AUTHORIZATION, "Basic dTpw")
        })
        .await;
    r.assert(401);
    app.get("/v1/webhooks", "not.a.jwt").await.assert(401);

    let foreign = JwtKeys::hs256(b"some-other-secret-some-other-secret")
        .mint(
            &waybill_domain::TenantId::parse("acme").unwrap(),
            &[Scope::Admin],
            chrono::Duration::hours(1),
        )
        .unwrap();
    let r = app.get("/v1/webhooks", &foreign).await;
    r.assert_message(401, "signature");

    let far = chrono::Utc::now().timestamp() + 3600;
    app.get(
        "/v1/webhooks",
        &app.sign(json!({"tenant": "acme", "scopes": ["admin"], "exp": 1000})),
    )
    .await
    .assert_message(401, "expired");
    for (claims, status) in [
        (json!({"tenant": "acme", "scopes": ["admin"]}), 401),
        (json!({"scopes": ["admin"], "exp": far}), 401),
        (
            json!({"tenant": "bad tenant!", "scopes": ["admin"], "exp": far}),
            401,
        ),
        (
            json!({"tenant": "a".repeat(65), "scopes": ["admin"], "exp": far}),
            401,
        ),
        // Unknown scopes are ignored, known ones still count.
        (
            json!({"tenant": "acme", "scopes": ["future:thing", "webhooks:read"], "exp": far}),
            200,
        ),
    ] {
        let r = app.get("/v1/webhooks", &app.sign(claims.clone())).await;
        assert_eq!(r.status, status, "{claims}: {}", r.body);
    }
}

#[tokio::test]
async fn scopes_are_enforced_per_action() {
    let (app, writer, id) = TestApp::with_webhook().await;
    let reader = app.token("acme", &[Scope::WebhooksRead]);
    let publisher = app.token("acme", &[Scope::EventsPublish]);
    let nothing = app.token("acme", &[]);

    app.get("/v1/webhooks", &reader).await.assert(200);
    app.get(&format!("/v1/webhooks/{id}"), &reader)
        .await
        .assert(200);
    let w = format!("/v1/webhooks/{id}");
    app.post("/v1/webhooks", &reader, webhook("https://example.com/b"))
        .await
        .assert_error(403, "forbidden");
    // Every write, and the secret, needs more than read.
    for r in [
        app.patch(&w, &reader, json!({"name": "x"})).await,
        app.delete(&w, &reader).await,
        app.get(&format!("{w}/secret"), &reader).await,
        app.post(&format!("{w}/secret/rotate"), &reader, json!({}))
            .await,
    ] {
        r.assert(403);
    }

    app.get("/v1/events", &publisher).await.assert(200);
    app.get("/v1/webhooks", &publisher).await.assert(403);
    app.get("/v1/events", &nothing).await.assert(403);

    app.patch_event(&writer, "order.shipped", json!({"active": false}))
        .await
        .assert(403);
    // admin covers every scope
    let admin = app.token("acme", &[Scope::Admin]);
    app.patch_event(&admin, "order.shipped", json!({"description": "d"}))
        .await
        .assert(200);
    app.get(&format!("{w}/secret"), &admin).await.assert(200);
}

#[tokio::test]
async fn another_tenants_webhook_is_a_404_everywhere() {
    let app = TestApp::spawn().await;
    let a = app.acme();
    let b = app.token("globex", &[Scope::WebhooksRead, Scope::WebhooksWrite]);
    let id = app
        .create_webhook_id(&a, webhook("https://example.com/a"))
        .await;

    for r in [
        app.get(&format!("/v1/webhooks/{id}"), &b).await,
        app.patch_webhook(&b, &id, json!({"name": "mine now"}))
            .await,
        app.delete(&format!("/v1/webhooks/{id}"), &b).await,
        app.get(&format!("/v1/webhooks/{id}/secret"), &b).await,
        app.rotate(&b, &id, json!({})).await,
    ] {
        r.assert_error(404, "not_found");
    }
    let r = app.get("/v1/webhooks", &b).await;
    assert_eq!(r.body["count"], 0);
    // The same url is no conflict for another tenant.
    app.post("/v1/webhooks", &b, webhook("https://example.com/a"))
        .await
        .assert(201);
    // And A's webhook is untouched.
    let r = app.get(&format!("/v1/webhooks/{id}"), &a).await;
    r.assert(200);
    assert_eq!(r.body["data"]["name"], "");
}

#[tokio::test]
async fn each_tenant_has_its_own_rate_limit() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 3;
    })
    .await;
    let a = app.acme();
    for _ in 0..3 {
        app.get("/v1/webhooks", &a).await.assert(200);
    }
    let r = app.get("/v1/webhooks", &a).await;
    r.assert_error(429, "rate_limited");
    let wait: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    app.get("/v1/webhooks", &app.token("globex", &[Scope::WebhooksRead]))
        .await
        .assert(200);
    // Probes are never limited.
    app.raw(Method::GET, "/healthz", None, |r| r)
        .await
        .assert(200);
}

#[tokio::test]
async fn scopes_and_existence_are_checked_before_the_body() {
    let app = TestApp::spawn().await;
    let reader = app.token("acme", &[Scope::WebhooksRead]);
    let garbage = |r: reqwest::RequestBuilder| {
        r.header(header::CONTENT_TYPE, "application/json")
            .body("{not json")
    };
    app.raw(Method::POST, "/v1/webhooks", Some(&reader), garbage)
        .await
        .assert(403);
    app.raw(
        Method::PATCH,
        "/v1/events/order.shipped",
        Some(&reader),
        garbage,
    )
    .await
    .assert(403);
    let missing = format!("/v1/webhooks/{}", uuid::Uuid::new_v4());
    let writer = app.acme();
    app.raw(Method::PATCH, &missing, Some(&writer), garbage)
        .await
        .assert(404);
    app.raw(
        Method::POST,
        &format!("{missing}/secret/rotate"),
        Some(&writer),
        garbage,
    )
    .await
    .assert(404);
    app.post(
        &format!("{missing}/secret/rotate"),
        &writer,
        json!({"grace_period_seconds": -5}),
    )
    .await
    .assert(404);
}

#[tokio::test]
async fn tokens_from_identity_providers_are_read_as_they_come() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let with_aud = app.sign(
        json!({"tenant": "acme", "scopes": ["webhooks:read"], "exp": now + 600, "aud": "waybill", "iss": "idp"}),
    );
    app.get("/v1/webhooks", &with_aud).await.assert(200);
    let not_yet = app.sign(
        json!({"tenant": "acme", "scopes": ["webhooks:read"], "exp": now + 600, "nbf": now + 300}),
    );
    app.get("/v1/webhooks", &not_yet).await.assert(401);
    let r = app
        .raw(Method::GET, "/v1/webhooks", None, |r| {
            r.header(header::AUTHORIZATION, format!("BEARER {with_aud}"))
        })
        .await;
    r.assert(200);
}
