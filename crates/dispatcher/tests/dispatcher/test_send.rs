//! `POST /v1/webhooks/{id}/test`: a signed `webhook.test` now, and its outcome.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Receiver, Reply, Stack, verify_with_standardwebhooks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_is_signed_answered_with_its_outcome_and_logged() {
    let stack = Stack::start_with(|_| {}, 0).await;
    let rx = Receiver::start().await;
    let id = stack
        .subscribe(
            "acme",
            json!({"url": rx.url("/t"), "events": ["order.*"], "active": false,
                   "auth": {"type": "token", "header": "X-Api-Key", "token": "k1"}}),
        )
        .await;
    let token = stack.token("acme");
    let path = format!("/v1/webhooks/{id}/test");
    rx.script([
        Reply::status(200).with_body("pong"),
        Reply::status(500).with_body("nope"),
    ]);

    let ok = stack.expect(Method::POST, &path, &token, None, 200).await;
    let ok = &ok["data"];
    assert_eq!(ok["succeeded"], true);
    assert_eq!(ok["status_code"], 200);
    assert_eq!(ok["response_body"], "pong");
    assert_eq!(ok["error"], serde_json::Value::Null);
    assert!(ok["duration_ms"].as_u64().is_some());
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.header("waybill-event-type"), Some("webhook.test"));
    assert_eq!(r.header("webhook-id"), ok["event_id"].as_str());
    assert_eq!(r.header("waybill-delivery-id"), ok["delivery_id"].as_str());
    assert_eq!(r.header("x-api-key"), Some("k1"));
    let body = r.json();
    assert_eq!(body["type"], "webhook.test");
    assert_eq!(body["data"]["webhook_id"], id.as_str());
    let secret = stack.secret("acme", &id).await;
    assert_eq!(verify_with_standardwebhooks(&[(secret, r)]), [true]);

    let bad = stack.expect(Method::POST, &path, &token, None, 200).await;
    assert_eq!(bad["data"]["succeeded"], false);
    assert_eq!(bad["data"]["status_code"], 500);
    assert_eq!(bad["data"]["error"], "HTTP 500");
    assert_eq!(bad["data"]["response_body"], "nope");

    // Both are in the delivery log.
    let (_, log) = stack
        .call(
            Method::GET,
            &format!("/v1/webhooks/{id}/deliveries"),
            &token,
            None,
        )
        .await;
    let statuses: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "succeeded"]);
    assert_eq!(log["data"][0]["event_type"], "webhook.test");

    stack
        .expect(Method::POST, &path, &stack.token("globex"), None, 404)
        .await;
}
