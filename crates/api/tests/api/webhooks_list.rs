//! `GET /v1/webhooks`: pagination edges, sorting and filters.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn pagination_edges() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let r = app.get("/v1/webhooks", &t).await;
    r.assert(200);
    assert_eq!(
        r.body,
        json!({"data": [], "count": 0, "next": null, "previous": null})
    );

    for i in 0..5 {
        app.create_webhook(
            &t,
            json!({"url": format!("https://example.com/{i}"), "events": ["order.shipped"]}),
        )
        .await;
    }
    let r = app.get("/v1/webhooks?limit=2", &t).await;
    assert_eq!(r.body["count"], 5);
    assert_eq!(
        r.pluck("url"),
        ["https://example.com/4", "https://example.com/3"],
        "newest first by default"
    );
    assert_eq!(r.body["next"], "/v1/webhooks?limit=2&page=2");
    assert!(r.body["previous"].is_null());

    let r = app.get("/v1/webhooks?limit=2&page=3", &t).await;
    assert_eq!(r.pluck("url"), ["https://example.com/0"]);
    assert!(r.body["next"].is_null(), "last page");
    assert_eq!(r.body["previous"], "/v1/webhooks?limit=2&page=2");

    let r = app.get("/v1/webhooks?limit=2&page=9", &t).await;
    assert_eq!(r.body["data"], json!([]));
    assert_eq!(r.body["count"], 5);
    assert!(r.body["next"].is_null());
    assert_eq!(
        r.body["previous"], "/v1/webhooks?limit=2&page=3",
        "points back at the last page"
    );

    let r = app.get("/v1/webhooks?limit=200", &t).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 5);
    for bad in ["limit=0", "limit=201", "limit=abc", "page=0", "page=-1"] {
        let field = bad.split('=').next().unwrap();
        app.get(&format!("/v1/webhooks?{bad}"), &t)
            .await
            .assert_invalid(field);
    }
    // Links keep the other parameters.
    let r = app
        .get(
            "/v1/webhooks?limit=1&sort=url&direction=asc&active=true",
            &t,
        )
        .await;
    assert_eq!(
        r.body["next"],
        "/v1/webhooks?limit=1&sort=url&direction=asc&active=true&page=2"
    );
}

#[tokio::test]
async fn sorting_and_filters() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    let mk = |url: &str, name: &str, events: serde_json::Value, active: bool| json!({"url": url, "name": name, "events": events, "active": active});
    app.create_webhook(
        &t,
        mk(
            "https://b.example.com/",
            "charlie",
            json!(["order.shipped"]),
            true,
        ),
    )
    .await;
    app.create_webhook(
        &t,
        mk("https://c.example.com/", "alpha", json!(["order.*"]), true),
    )
    .await;
    app.create_webhook(
        &t,
        mk("https://a.example.com/", "bravo", json!(["*"]), false),
    )
    .await;
    app.create_webhook(
        &t,
        mk(
            "https://d.example.com/",
            "delta",
            json!(["stock.updated"]),
            true,
        ),
    )
    .await;

    let r = app.get("/v1/webhooks?sort=name&direction=asc", &t).await;
    let names = r.pluck("name");
    assert_eq!(names, ["alpha", "bravo", "charlie", "delta"]);
    let r = app.get("/v1/webhooks?sort=url&direction=desc", &t).await;
    assert_eq!(
        r.pluck("url"),
        [
            "https://d.example.com/",
            "https://c.example.com/",
            "https://b.example.com/",
            "https://a.example.com/"
        ]
    );
    let r = app
        .get("/v1/webhooks?sort=created_at&direction=asc", &t)
        .await;
    assert_eq!(r.pluck("url")[0], "https://b.example.com/");
    app.get("/v1/webhooks?sort=updated_at", &t)
        .await
        .assert(200);

    let r = app
        .get(
            "/v1/webhooks?event=order.shipped&sort=url&direction=asc",
            &t,
        )
        .await;
    assert_eq!(
        r.body["count"], 3,
        "exact, group wildcard and * all receive order.shipped"
    );
    assert_eq!(
        r.pluck("url"),
        [
            "https://a.example.com/",
            "https://b.example.com/",
            "https://c.example.com/"
        ]
    );
    let r = app
        .get("/v1/webhooks?event=stock.updated&active=true", &t)
        .await;
    assert_eq!(r.pluck("url"), ["https://d.example.com/"]);
    let r = app.get("/v1/webhooks?active=false", &t).await;
    assert_eq!(r.pluck("url"), ["https://a.example.com/"]);

    for (query, field) in [
        ("sort=events", "sort"),
        ("direction=up", "direction"),
        ("active=yes", "active"),
        ("event=order.teleported", "event"),
    ] {
        app.get(&format!("/v1/webhooks?{query}"), &t)
            .await
            .assert_invalid(field);
    }
}

#[tokio::test]
async fn has_filter_keeps_subscriptions_with_or_without_one() {
    let app = TestApp::spawn().await;
    let t = app.acme();
    for (url, filter, active) in [
        (
            "https://a.example.com/",
            json!({"data.status": "shipped"}),
            true,
        ),
        ("https://b.example.com/", json!(null), true),
        (
            "https://c.example.com/",
            json!({"data.available": {"$lt": 10}}),
            false,
        ),
        (
            "https://d.example.com/",
            json!({"client_id": "shop-7"}),
            true,
        ),
        ("https://e.example.com/", json!(null), false),
    ] {
        app.create_webhook(
            &t,
            json!({"url": url, "events": ["order.shipped"], "filter": filter, "active": active}),
        )
        .await;
    }
    // Another tenant's filtered subscription is never counted.
    app.create_webhook(
        &app.token("globex", &[waybill_domain::Scope::WebhooksWrite]),
        json!({"url": "https://x.example.com/", "events": ["*"], "filter": {"type": "order.shipped"}}),
    )
    .await;

    let r = app
        .get("/v1/webhooks?has_filter=true&sort=url&direction=asc", &t)
        .await;
    assert_eq!(r.body["count"], 3);
    assert_eq!(
        r.pluck("url"),
        [
            "https://a.example.com/",
            "https://c.example.com/",
            "https://d.example.com/"
        ]
    );
    assert!(
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["filter"].is_object())
    );
    let r = app
        .get("/v1/webhooks?has_filter=false&sort=url&direction=asc", &t)
        .await;
    assert_eq!(
        r.pluck("url"),
        ["https://b.example.com/", "https://e.example.com/"]
    );
    assert!(
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["filter"].is_null())
    );

    // With the other filters, and through the pages.
    let r = app
        .get("/v1/webhooks?has_filter=true&active=true&event=order.shipped&sort=url&direction=asc&limit=1", &t)
        .await;
    assert_eq!(r.body["count"], 2);
    assert_eq!(r.pluck("url"), ["https://a.example.com/"]);
    let next = r.body["next"].as_str().unwrap().to_owned();
    assert_eq!(
        next,
        "/v1/webhooks?has_filter=true&active=true&event=order.shipped&sort=url&direction=asc&limit=1&page=2"
    );
    let r = app.get(&next, &t).await;
    assert_eq!(r.body["count"], 2);
    assert_eq!(r.pluck("url"), ["https://d.example.com/"]);
    assert!(r.body["next"].is_null());
    assert_eq!(
        r.body["previous"],
        "/v1/webhooks?has_filter=true&active=true&event=order.shipped&sort=url&direction=asc&limit=1&page=1"
    );

    for bad in ["yes", "1", "", "TRUE"] {
        let r = app.get(&format!("/v1/webhooks?has_filter={bad}"), &t).await;
        r.assert_invalid("has_filter");
        assert_eq!(r.errors_on("has_filter"), ["must be `true` or `false`"]);
    }
}
