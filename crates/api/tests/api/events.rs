//! The event catalog: listing, filters, admin changes and their survival across restarts.

use serde_json::json;
use waybill_domain::catalog::CONTRACT_TYPES;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_catalog_lists_every_type_with_its_schema() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let r = app.get("/v1/events?limit=200", &t).await;
    r.assert(200);
    let count = r.body["count"].as_i64().unwrap();
    assert!(count >= 40, "{count}");
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len() as i64, count);
    assert!(r.body["next"].is_null() && r.body["previous"].is_null());
    let names: Vec<&str> = data.iter().map(|e| e["name"].as_str().unwrap()).collect();
    for n in CONTRACT_TYPES.iter().chain(&["webhook.test"]) {
        assert!(names.contains(n), "{n} missing");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    for e in data {
        let (name, group, action) = (
            e["name"].as_str().unwrap(),
            e["group"].as_str().unwrap(),
            e["action"].as_str().unwrap(),
        );
        assert_eq!(format!("{group}.{action}"), name);
        assert_eq!(e["schema"]["type"], "object", "{name}");
        assert!(!e["description"].as_str().unwrap().is_empty());
        assert_eq!(e["active"], true);
        assert!(e["created_at"].as_str().unwrap().ends_with('Z'));
    }

    let r = app.get("/v1/events?group=order", &t).await;
    assert!(
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["group"] == "order")
    );
    assert!(r.body["count"].as_i64().unwrap() >= 5);
    let r = app.get("/v1/events?limit=10&page=2", &t).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 10);
    assert_eq!(r.body["previous"], "/v1/events?limit=10&page=1");
    assert_eq!(r.body["next"], "/v1/events?limit=10&page=3");
    assert_eq!(
        app.get("/v1/events?group=nothing", &t).await.body["count"],
        0
    );
    for (path, field) in [
        ("/v1/events?active=maybe", "active"),
        ("/v1/events?limit=0", "limit"),
    ] {
        app.get(path, &t).await.assert_invalid(field);
    }

    let r = app.get("/v1/events/order.shipped", &t).await;
    r.assert(200);
    assert_eq!(r.body["data"]["schema"]["title"], "order.shipped");
    assert!(
        r.body["data"]["schema"]["required"]
            .as_array()
            .unwrap()
            .len()
            >= 3
    );
    let r = app.get("/v1/events/order.teleported", &t).await;
    r.assert(404);
}

#[tokio::test]
async fn deactivated_types_cannot_be_subscribed_and_the_flag_survives_a_restart() {
    let app = TestApp::spawn().await;
    let (t, admin) = (app.acme(), app.admin());
    // A subscription made before the type goes inactive keeps working for unrelated edits.
    let before = app
        .create_webhook(
            &t,
            json!({"url": "https://example.com/a", "events": ["stock.updated"]}),
        )
        .await;

    let r = app
        .patch_event(
            &admin,
            "stock.updated",
            json!({"active": false, "description": "Retired in favour of inventory.adjusted."}),
        )
        .await;
    r.assert(200);
    assert_eq!(r.body["data"]["active"], false);

    let r = app
        .post(
            "/v1/webhooks",
            &t,
            json!({"url": "https://example.com/b", "events": ["order.shipped", "stock.updated"]}),
        )
        .await;
    r.assert_invalid("events[1]");
    assert!(
        r.body["error"]["errors"]["events[1]"][0]
            .as_str()
            .unwrap()
            .contains("inactive")
    );
    // Its group still exists, so a wildcard is fine.
    app.create_webhook(
        &t,
        json!({"url": "https://example.com/c", "events": ["stock.*"]}),
    )
    .await;
    app.patch_webhook(
        &t,
        before["id"].as_str().unwrap(),
        json!({"name": "renamed"}),
    )
    .await
    .assert(200);

    let r = app.get("/v1/events?active=false", &t).await;
    let names = r.pluck("name");
    assert_eq!(names, ["stock.updated"]);

    // A restart re-syncs the catalog from the schemas but keeps the operator's choices.
    let restarted = app.sibling(|_| {}).await;
    let r = restarted.get("/v1/events/stock.updated", &t).await;
    assert_eq!(r.body["data"]["active"], false);
    assert_eq!(
        r.body["data"]["description"],
        "Retired in favour of inventory.adjusted."
    );

    restarted
        .patch("/v1/events/stock.updated", &admin, json!({"active": true}))
        .await
        .assert(200);
    restarted
        .create_webhook(
            &t,
            json!({"url": "https://example.com/b", "events": ["stock.updated"]}),
        )
        .await;
}

#[tokio::test]
async fn event_type_patch_is_strict() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    for (body, field) in [
        (json!({"activ": false}), "activ"),
        (json!({"active": null}), "active"),
        (json!({"description": "x".repeat(1001)}), "description"),
    ] {
        app.patch_event(&admin, "order.shipped", body)
            .await
            .assert_invalid(field);
    }
    app.patch("/v1/events/order.shipped", &admin, json!({"active": "no"}))
        .await
        .assert(400);
    app.patch("/v1/events/order.nothing", &admin, json!({"active": false}))
        .await
        .assert(404);
    let r = app
        .patch("/v1/events/order.shipped", &admin, json!({}))
        .await;
    r.assert(200);
    assert_eq!(r.body["data"]["active"], true);
}
