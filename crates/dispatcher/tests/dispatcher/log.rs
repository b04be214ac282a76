//! The delivery log of the api, filled by a real dispatcher.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Receiver, Reply, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_lists_filters_pages_and_details_deliveries() {
    // One attempt only: a 500 makes a delivery `failed` at once.
    let stack = Stack::start_with(|s| s.delivery.retry_schedule = vec![], 1).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(200).with_body("thanks"));
    let id = stack
        .subscribe_at(&rx, "/a", json!(["order.*", "stock.*"]))
        .await;
    stack.wait_indexed(1).await;
    rx.script([Reply::status(500).with_body("boom")]);
    stack.publish("acme", "stock.updated", "e1", None).await;
    stack.wait_delivery(&id, "e1", "failed").await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    stack
        .publish("acme", "order.shipped", "e2", Some("c1"))
        .await;
    stack.wait_delivery(&id, "e2", "succeeded").await;
    stack.deliver(&id, "stock.updated", "e3").await;

    let token = stack.token("acme");
    let get = |path: String| {
        let token = token.clone();
        let stack = &stack;
        async move { stack.call(Method::GET, &path, &token, None).await }
    };
    let base = format!("/v1/webhooks/{id}/deliveries");
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, all) = get(base.clone()).await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(ids(&all), ["e3", "e2", "e1"]);
    assert_eq!(
        (all["count"].as_i64(), &all["next"], &all["previous"]),
        (Some(3), &Value::Null, &Value::Null)
    );
    let e1 = &all["data"][2];
    assert_eq!(e1["status"], "failed");
    assert_eq!(e1["attempts"], 1);
    assert_eq!(e1["last_status_code"], 500);
    assert_eq!(e1["last_error"], "HTTP 500");
    assert_eq!(e1["webhook_id"], id.as_str());
    assert_eq!(e1["event_type"], "stock.updated");
    assert!(e1["created_at"].is_string() && e1["updated_at"].is_string());

    let (_, failed) = get(format!("{base}?status=failed")).await;
    assert_eq!(ids(&failed), ["e1"]);
    let (_, stock) = get(format!("{base}?event_type=stock.updated")).await;
    assert_eq!(ids(&stock), ["e3", "e1"]);
    let since = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, later) = get(format!("{base}?since={}", since.replace('+', "%2B"))).await;
    assert_eq!(ids(&later), ["e3", "e2"]);
    let (_, earlier) = get(format!("{base}?until={}", since.replace('+', "%2B"))).await;
    assert_eq!(ids(&earlier), ["e1"]);

    let (_, page1) = get(format!("{base}?limit=2")).await;
    assert_eq!(ids(&page1), ["e3", "e2"]);
    assert_eq!(page1["count"], 3);
    let next = page1["next"].as_str().unwrap().to_owned();
    let (_, page2) = get(next).await;
    assert_eq!(ids(&page2), ["e1"]);
    assert_eq!(page2["next"], Value::Null);
    assert!(page2["previous"].as_str().unwrap().contains("page=1"));

    for (query, field) in [
        ("status=lost", "status"),
        ("event_type=order.teleported", "event_type"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("colour=red", "colour"),
    ] {
        let (s, body) = get(format!("{base}?{query}")).await;
        assert_eq!(s, 422, "{query}: {body}");
        assert!(body["error"]["errors"][field].is_array(), "{query}: {body}");
    }

    // One delivery with its event and attempts, as the receiver saw them.
    let e2 = all["data"][1]["id"].as_str().unwrap().to_owned();
    let (s, detail) = get(format!("/v1/deliveries/{e2}")).await;
    assert_eq!(s, 200, "{detail}");
    let d = &detail["data"];
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["event"]["id"], "e2");
    assert_eq!(d["event"]["type"], "order.shipped");
    assert_eq!(d["event"]["client_id"], "c1");
    let seen = rx
        .received()
        .into_iter()
        .find(|r| r.header("webhook-id") == Some("e2"))
        .unwrap();
    assert_eq!(seen.header("waybill-delivery-id"), Some(e2.as_str()));
    assert_eq!(d["event"]["data"], seen.json()["data"]);
    assert_eq!(d["event"]["timestamp"], seen.json()["timestamp"]);
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["number"], 1);
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["response_body"], "thanks");
    assert_eq!(attempts[0]["error"], Value::Null);
    assert!(attempts[0]["duration_ms"].as_i64().unwrap() >= 0);

    // Another tenant sees none of it; a malformed or unknown id is a 404 too.
    let other = stack.token("globex");
    stack.expect(Method::GET, &base, &other, None, 404).await;
    stack
        .expect(
            Method::GET,
            &format!("/v1/deliveries/{e2}"),
            &other,
            None,
            404,
        )
        .await;
    let (s, _) = get("/v1/deliveries/not-a-uuid".into()).await;
    assert_eq!(s, 404);
    let (s, body) = get(format!("/v1/deliveries/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    stack
        .expect(
            Method::POST,
            &format!("/v1/deliveries/{e2}"),
            &token,
            None,
            405,
        )
        .await;
}
