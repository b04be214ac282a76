//! Every subscription change reaches the `<prefix>.subscriptions` fanout exchange, in revision
//! order, publisher-confirmed; a broker outage delays the feed but loses nothing.

use std::time::Duration;

use base64::Engine;
use lapin::{
    Channel, Connection,
    options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde_json::json;
use waybill_domain::change::SubscriptionChange;
use waybill_store::{Cipher, crypto::secret_context};

use crate::helpers::{TestApp, broker_url, eventually, webhook};

fn change_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../proto-schemas/broker/subscription-change.schema.json"
    ))
    .unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&serde_json::from_str(&text).unwrap())
        .unwrap()
}

/// A private queue bound to the app's change exchange, as a dispatcher replica would have.
async fn listen(settings: &waybill_runtime::Settings) -> (Connection, Channel, String) {
    let conn = Connection::connect(&broker_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let exchange = format!("{}.subscriptions", settings.broker.prefix);
    settings.topology().unwrap().declare(&ch).await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let name = q.name().to_string();
    ch.queue_bind(
        name.as_str().into(),
        exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    (conn, ch, name)
}

async fn next(ch: &Channel, queue: &str) -> (SubscriptionChange, lapin::BasicProperties) {
    let msg = eventually(Duration::from_secs(15), || async {
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    })
    .await
    .expect("a change message within 15 s");
    let raw: serde_json::Value = serde_json::from_slice(&msg.delivery.data).expect("JSON");
    let errors: Vec<String> = change_schema()
        .iter_errors(&raw)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "message violates proto-schemas/broker/subscription-change.schema.json: {errors:?}\n{raw}"
    );
    let change: SubscriptionChange = serde_json::from_value(raw).expect("a valid change message");
    (change, msg.delivery.properties.clone())
}

#[tokio::test]
async fn each_kind_of_change_is_published_in_revision_order() {
    let app = TestApp::spawn().await;
    let (_conn, ch, queue) = listen(&app.settings).await;
    let t = app.acme();
    let created = app
        .create_webhook(&t, json!({"url": "https://example.com/a", "events": ["order.*"], "secret": "first-secret-1",
            "auth": {"type": "token", "token": "tk"}, "headers": {"X-A": "1"}, "client_ids": ["c1"]}))
        .await;
    let id = created["id"].as_str().unwrap();
    let wid: waybill_domain::WebhookId = id.parse().unwrap();

    let (c, props) = next(&ch, &queue).await;
    assert_eq!(
        (c.kind.as_str(), c.revision, c.webhook_id, c.tenant.as_str()),
        ("created", 1, wid, "acme")
    );
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        props.message_id().as_ref().map(|m| m.to_string()),
        Some(format!("{id}:1"))
    );
    let s = c.subscription.expect("snapshot");
    assert_eq!(
        (
            s.url.as_str(),
            s.method.as_str(),
            s.events.clone(),
            s.client_ids.clone()
        ),
        (
            "https://example.com/a",
            "POST",
            vec!["order.*".to_string()],
            vec!["c1".to_string()]
        )
    );
    assert_eq!(s.auth.kind, "token");
    assert_eq!(s.secrets.len(), 1);
    // The snapshot carries ciphertext that the dispatchers' key opens.
    let cipher = Cipher::new(&app.settings.encryption_key().unwrap()).unwrap();
    let ct = base64::engine::general_purpose::STANDARD
        .decode(&s.secrets[0].secret_encrypted)
        .unwrap();
    assert_eq!(
        cipher.decrypt_string(&ct, &secret_context(wid)).unwrap(),
        "first-secret-1"
    );
    assert!(
        !serde_json::to_string(&s)
            .unwrap()
            .contains("first-secret-1")
    );

    app.patch_webhook(&t, id, json!({"active": false}))
        .await
        .assert(200);
    let (c, _) = next(&ch, &queue).await;
    assert_eq!((c.kind.as_str(), c.revision), ("updated", 2));
    assert!(!c.subscription.unwrap().active);

    // A patch that changes nothing publishes nothing: the next message is the rotation.
    app.patch_webhook(&t, id, json!({"active": false}))
        .await
        .assert(200);
    app.rotate(&t, id, json!({"secret": "second-secret-2"}))
        .await
        .assert(200);
    let (c, _) = next(&ch, &queue).await;
    assert_eq!((c.kind.as_str(), c.revision), ("secret_rotated", 3));
    let last = c.subscription.unwrap();
    let secrets = &last.secrets;
    assert_eq!(
        secrets.len(),
        2,
        "new and old key both sign during the grace period"
    );
    assert_eq!(secrets.iter().filter(|s| s.expires_at.is_none()).count(), 1);

    // A resync from Postgres sees exactly what the last message said.
    let pool = waybill_store::pool(&app.settings.database.url, 1).unwrap();
    let mut conn = waybill_store::conn(&pool).await.unwrap();
    let from_db = waybill_store::webhooks::snapshots(&mut conn, None, 100)
        .await
        .unwrap();
    assert_eq!(from_db, vec![last]);
    let after = waybill_store::webhooks::snapshots(&mut conn, Some(wid), 100)
        .await
        .unwrap();
    assert!(after.is_empty(), "paging continues after the last id");
    drop(conn);

    app.delete(&format!("/v1/webhooks/{id}"), &t)
        .await
        .assert(204);
    let (c, _) = next(&ch, &queue).await;
    assert_eq!((c.kind.as_str(), c.revision), ("deleted", 4));
    assert!(c.subscription.is_none());
}

#[tokio::test]
async fn changes_made_while_the_broker_is_away_are_published_when_it_is_back() {
    // The api starts with an unreachable broker: it still serves, and keeps the changes.
    let app =
        TestApp::spawn_with(|s| s.broker.url = "amqp://guest:guest@127.0.0.1:1/%2f".into()).await;
    let t = app.acme();
    let a = app
        .create_webhook(&t, webhook("https://example.com/a"))
        .await;
    let b = app
        .create_webhook(&t, webhook("https://example.com/b"))
        .await;
    app.patch_webhook(&t, a["id"].as_str().unwrap(), json!({"name": "renamed"}))
        .await
        .assert(200);
    let metrics = app.metrics().await.unwrap();
    let pending = eventually(Duration::from_secs(5), || async {
        let text = app.metrics().await?;
        text.lines()
            .find(|l| l.starts_with("waybill_subscription_changes_pending"))
            .filter(|l| l.ends_with(" 3"))
            .map(str::to_owned)
    })
    .await;
    assert!(pending.is_some(), "3 changes pending, metrics: {metrics}");

    // The broker "comes back": a replica that reaches it drains the outbox.
    let (_conn, ch, queue) = listen(&app.settings).await;
    let _healthy = app.sibling(|s| s.broker.url = broker_url()).await;
    let mut got: Vec<(String, i64)> = Vec::new();
    for _ in 0..3 {
        let (c, _) = next(&ch, &queue).await;
        got.push((c.webhook_id.to_string(), c.revision));
    }
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(got, vec![(a.clone(), 1), (b, 1), (a, 2)], "oldest first");
    let extra = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(extra.is_none(), "each change once");
}

/// The backlog the api reports on `/metrics`.
async fn pending(app: &TestApp) -> Option<i64> {
    let text = app.metrics().await?;
    text.lines()
        .find(|l| l.starts_with("waybill_subscription_changes_pending"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn the_same_api_catches_up_once_its_broker_connection_is_back() {
    let proxy = waybill_testkit::BrokerProxy::start().await;
    let url = proxy.url();
    let app = TestApp::spawn_with(|s| s.broker.url = url).await;
    let (_conn, ch, queue) = listen(&app.settings).await;
    let t = app.acme();
    let a = app
        .create_webhook_id(&t, webhook("https://example.com/a"))
        .await;
    assert_eq!(
        next(&ch, &queue).await.0.revision,
        1,
        "published while connected"
    );

    proxy.cut();
    let b = app
        .create_webhook_id(&t, webhook("https://example.com/b"))
        .await;
    app.patch_webhook(&t, &a, json!({"name": "renamed"}))
        .await
        .assert(200);
    let backlog = eventually(Duration::from_secs(10), || async {
        pending(&app).await.filter(|n| *n == 2)
    })
    .await;
    assert_eq!(backlog, Some(2), "both changes wait in Postgres");
    let ready = reqwest::get(format!("{}/readyz", app.addr)).await.unwrap();
    assert_eq!(ready.status(), 503);

    proxy.restore();
    let mut got = Vec::new();
    for _ in 0..2 {
        let (c, _) = next(&ch, &queue).await;
        got.push((c.webhook_id.to_string(), c.revision));
    }
    assert_eq!(got, vec![(b, 1), (a, 2)]);
    let drained = eventually(Duration::from_secs(10), || async {
        pending(&app).await.filter(|n| *n == 0)
    })
    .await;
    assert_eq!(drained, Some(0));
    assert_eq!(
        reqwest::get(format!("{}/readyz", app.addr))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_snapshot_carries_the_filter_as_stored() {
    let app = TestApp::spawn().await;
    let (_conn, ch, queue) = listen(&app.settings).await;
    let t = app.acme();
    let filter =
        json!({"data.warehouse.country": {"$in": ["DE", "NL"]}, "$not": {"client_id": null}});
    let mut body = webhook("https://example.com/a");
    body["filter"] = filter.clone();
    let id = app.create_webhook_id(&t, body).await;
    let (c, _) = next(&ch, &queue).await;
    assert_eq!(c.revision, 1);
    assert_eq!(c.subscription.unwrap().filter, Some(filter));

    let replaced = json!({"data.available": {"$lt": 10}});
    app.patch_webhook(&t, &id, json!({"filter": replaced}))
        .await
        .assert(200);
    let (c, _) = next(&ch, &queue).await;
    assert_eq!(c.revision, 2);
    assert_eq!(c.subscription.unwrap().filter, Some(replaced));

    app.patch_webhook(&t, &id, json!({"filter": null}))
        .await
        .assert(200);
    let (c, _) = next(&ch, &queue).await;
    assert_eq!(c.revision, 3);
    let last = c.subscription.unwrap();
    assert_eq!(last.filter, None);

    // A resync from Postgres agrees.
    let pool = waybill_store::pool(&app.settings.database.url, 1).unwrap();
    let mut conn = waybill_store::conn(&pool).await.unwrap();
    let from_db = waybill_store::webhooks::snapshots(&mut conn, None, 100)
        .await
        .unwrap();
    assert_eq!(from_db, vec![last]);
}

#[test]
fn a_message_of_an_earlier_version_without_a_filter_still_validates_and_reads_as_none() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../proto-schemas/broker/subscription-change.schema.json"
    ))
    .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let example = &schema["examples"][0];
    assert!(
        example["subscription"]["filter"].is_object(),
        "the example shows a filter"
    );
    assert!(change_schema().is_valid(example));
    let mut earlier = example.clone();
    earlier["subscription"]
        .as_object_mut()
        .unwrap()
        .remove("filter");
    assert!(change_schema().is_valid(&earlier));
    let change: SubscriptionChange = serde_json::from_value(earlier).unwrap();
    assert_eq!(change.subscription.unwrap().filter, None);
    let mut wrong = example.clone();
    wrong["subscription"]["filter"] = json!("data.status=shipped");
    assert!(!change_schema().is_valid(&wrong), "a filter is an object");
}
