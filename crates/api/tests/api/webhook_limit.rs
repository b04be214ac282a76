//! `limits.max_webhooks_per_tenant`: a tenant's subscriptions never outnumber the limit, also
//! when creates race on several replicas; a deleted subscription frees its place.

use futures_util::future::join_all;

use crate::helpers::{TestApp, webhook};

#[tokio::test]
async fn one_more_than_the_limit_is_a_conflict_until_one_is_deleted() {
    let app = TestApp::spawn_with(|s| s.limits.max_webhooks_per_tenant = 3).await;
    let t = app.acme();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.create_webhook_id(&t, webhook(&format!("https://example.com/{i}")))
                .await,
        );
    }
    let r = app
        .post("/v1/webhooks", &t, webhook("https://example.com/over"))
        .await;
    r.assert_error(409, "conflict")
        .assert_message(409, "3 subscriptions");
    // Other tenants have places of their own.
    let other = app.token("globex", waybill_testkit::READ_WRITE);
    app.create_webhook(&other, webhook("https://example.com/0"))
        .await;
    // A deleted subscription frees its place, once.
    app.delete(&format!("/v1/webhooks/{}", ids[0]), &t)
        .await
        .assert(204);
    app.create_webhook(&t, webhook("https://example.com/over"))
        .await;
    app.post("/v1/webhooks", &t, webhook("https://example.com/again"))
        .await
        .assert(409);
    let r = app.get("/v1/webhooks?limit=200", &t).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn concurrent_creates_on_two_replicas_never_pass_the_limit() {
    let app = TestApp::spawn_with(|s| s.limits.max_webhooks_per_tenant = 5).await;
    let replica = app.sibling(|_| {}).await;
    let t = app.acme();
    let creates = (0..24).map(|i| {
        let on = if i % 2 == 0 { &app } else { &replica };
        let body = webhook(&format!("https://example.com/race/{i}"));
        let t = t.clone();
        async move { on.post("/v1/webhooks", &t, body).await }
    });
    let answers = join_all(creates).await;
    let created = answers.iter().filter(|r| r.status == 201).count();
    for r in answers.iter().filter(|r| r.status != 201) {
        r.assert_error(409, "conflict")
            .assert_message(409, "5 subscriptions");
    }
    assert_eq!(created, 5);
    let r = app.get("/v1/webhooks?limit=200", &t).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 5);
}
