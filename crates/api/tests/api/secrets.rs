//! Reading and rotating signing secrets.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn rotation_replaces_the_secret_and_keeps_the_old_one_for_the_grace_period() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let id = app.create_webhook(&t, json!({"url": "https://example.com/a", "events": ["order.shipped"], "secret": "first-secret-1"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("/v1/webhooks/{id}/secret");

    let r = app.get(&base, &t).await;
    assert_eq!(r.body, json!({"data": {"secret": "first-secret-1"}}));

    // No body at all: generated secret, default grace of one day.
    let r = app
        .raw(
            reqwest::Method::POST,
            &format!("{base}/rotate"),
            Some(&t),
            |r| r,
        )
        .await;
    r.assert(200);
    let new = r.body["data"]["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_"));
    let until = chrono::DateTime::parse_from_rfc3339(
        r.body["data"]["previous_secret_expires_at"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let hours =
        (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!((23.9..=24.1).contains(&hours), "{hours}");
    assert_eq!(
        app.get(&base, &t).await.body["data"]["secret"],
        new.as_str()
    );

    let r = app
        .post(
            &format!("{base}/rotate"),
            &t,
            json!({"secret": "third-secret-3", "grace_period_seconds": 0}),
        )
        .await;
    r.assert(200);
    assert_eq!(r.body["data"]["secret"], "third-secret-3");
    assert!(r.body["data"].get("previous_secret_expires_at").is_none());
    assert_eq!(
        app.get(&base, &t).await.body["data"]["secret"],
        "third-secret-3"
    );

    app.post(
        &format!("{base}/rotate"),
        &t,
        json!({"grace_period_seconds": 604_801}),
    )
    .await
    .assert_invalid("grace_period_seconds");
    app.post(
        &format!("{base}/rotate"),
        &t,
        json!({"grace_period_seconds": -1}),
    )
    .await
    .assert_invalid("grace_period_seconds");
    app.post(&format!("{base}/rotate"), &t, json!({"secret": "short"}))
        .await
        .assert_invalid("secret");
    app.post(&format!("{base}/rotate"), &t, json!({"grace": 10}))
        .await
        .assert_invalid("grace");
    app.post(
        &format!("{base}/rotate"),
        &t,
        json!({"grace_period_seconds": "1"}),
    )
    .await
    .assert(400);
    app.post(
        &format!("{base}/rotate"),
        &t,
        json!({"grace_period_seconds": 604_800}),
    )
    .await
    .assert(200);
    app.post(
        &format!("/v1/webhooks/{}/secret/rotate", uuid::Uuid::new_v4()),
        &t,
        json!({}),
    )
    .await
    .assert(404);

    // The masked view never changes.
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}"), &t).await.body["data"]["secret"],
        "••••••••"
    );
}
