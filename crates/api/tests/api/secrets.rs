//! Reading and rotating signing secrets.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn rotation_replaces_the_secret_and_keeps_the_old_one_for_the_grace_period() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let id = app.create_webhook_id(&t, json!({"url": "https://example.com/a", "events": ["order.shipped"], "secret": "first-secret-1"})).await;
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

    for (body, field) in [
        (
            json!({"grace_period_seconds": 604_801}),
            "grace_period_seconds",
        ),
        (json!({"grace_period_seconds": -1}), "grace_period_seconds"),
        (json!({"secret": "short"}), "secret"),
        (json!({"grace": 10}), "grace"),
    ] {
        app.post(&format!("{base}/rotate"), &t, body)
            .await
            .assert_invalid(field);
    }
    for (body, status) in [
        (json!({"grace_period_seconds": "1"}), 400),
        (json!({"grace_period_seconds": 604_800}), 200),
    ] {
        app.post(&format!("{base}/rotate"), &t, body)
            .await
            .assert(status);
    }
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

async fn live_keys(app: &TestApp, id: &str) -> Vec<waybill_domain::change::SecretSnapshot> {
    let pool = waybill_store::pool(&app.settings.database.url, 1).unwrap();
    let mut conn = waybill_store::conn(&pool).await.unwrap();
    let all = waybill_store::webhooks::snapshots(&mut conn, None, 10)
        .await
        .unwrap();
    all.into_iter()
        .find(|s| s.id.to_string() == id)
        .unwrap()
        .secrets
}

#[tokio::test]
async fn revoking_with_no_grace_retires_every_earlier_key_and_old_keys_are_capped() {
    let (app, t, id) = TestApp::with_webhook().await;
    let rotate = format!("/v1/webhooks/{id}/secret/rotate");
    let mut last_expiry = String::new();
    for _ in 0..7 {
        let r = app
            .post(&rotate, &t, json!({"grace_period_seconds": 3600}))
            .await;
        r.assert(200);
        last_expiry = r.body["data"]["previous_secret_expires_at"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let keys = live_keys(&app, &id).await;
    assert_eq!(
        keys.len(),
        5,
        "the current key and the four newest old ones"
    );
    // The answer's expiry is exactly what is stored.
    let stored = keys.iter().filter_map(|k| k.expires_at).max().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&last_expiry).unwrap(),
        stored
    );

    // A leak: rotate with no grace; only the new key signs from now on.
    let r = app
        .post(&rotate, &t, json!({"grace_period_seconds": 0}))
        .await;
    r.assert(200);
    let keys = live_keys(&app, &id).await;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].expires_at.is_none());
}

#[tokio::test]
async fn an_empty_rotate_request_works_whatever_its_content_type() {
    let (app, t, id) = TestApp::with_webhook().await;
    let r = app
        .raw(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{id}/secret/rotate"),
            Some(&t),
            |r| {
                r.header("content-type", "application/x-www-form-urlencoded")
                    .body("")
            },
        )
        .await;
    r.assert(200);
}
