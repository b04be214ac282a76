//! The request a receiver gets: method, body, signature, our headers, custom and auth headers.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::SubsecRound;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Receiver, Stack, WAIT, verify_with_standardwebhooks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_the_contract_for_every_auth_type() {
    let stack = Stack::start().await;
    let rx = Receiver::start().await;
    let none = stack
        .subscribe(
            "acme",
            json!({"url": rx.url("/none?src=waybill"), "events": ["order.shipped"],
                   "headers": {"X-Team": "fulfilment", "X-Trace": "a b c"}}),
        )
        .await;
    let basic = stack
        .subscribe(
            "acme",
            json!({"url": rx.url("/basic"), "events": ["order.shipped"], "method": "PUT",
                   "auth": {"type": "basic", "username": "wms", "password": "s3cr3t pass"},
                   "secret": "a plain secret of mine"}),
        )
        .await;
    let token = stack
        .subscribe(
            "acme",
            json!({"url": rx.url("/token"), "events": ["order.shipped"],
                   "auth": {"type": "token", "header": "X-Api-Key", "token": "tok_123"}}),
        )
        .await;
    stack.wait_indexed(3).await;
    let event = stack
        .publish("acme", "order.shipped", "ord_1:shipped", Some("client-7"))
        .await;
    rx.wait_for(3, WAIT).await;

    let r_none = &rx.received_on("/none")[0];
    let r_basic = &rx.received_on("/basic")[0];
    let r_token = &rx.received_on("/token")[0];
    assert_eq!(r_none.method, "POST");
    assert_eq!(r_none.path, "/none?src=waybill");
    assert_eq!(r_basic.method, "PUT");
    assert_eq!(r_token.method, "POST");
    for r in [r_none, r_basic, r_token] {
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("user-agent"),
            Some(format!("Waybill/{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        assert_eq!(r.header("webhook-id"), Some("ord_1:shipped"));
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 30);
        assert!(r.header("webhook-signature").unwrap().starts_with("v1,"));
        assert_eq!(r.header("waybill-attempt"), Some("1"));
        assert_eq!(r.header("waybill-event-type"), Some("order.shipped"));
        let body = r.json();
        assert_eq!(
            body,
            json!({"id": "ord_1:shipped", "type": "order.shipped",
                   "timestamp": event.occurred_at.trunc_subsecs(6), "client_id": "client-7",
                   "data": serde_json::Value::Object(event.data.clone())})
        );
    }
    assert_eq!(r_none.header("x-team"), Some("fulfilment"));
    assert_eq!(r_none.header("x-trace"), Some("a b c"));
    assert_eq!(r_none.header("authorization"), None);
    assert_eq!(
        r_basic.header("authorization"),
        Some(format!("Basic {}", STANDARD.encode("wms:s3cr3t pass")).as_str())
    );
    assert_eq!(r_token.header("x-api-key"), Some("tok_123"));
    assert_eq!(r_token.header("authorization"), None);

    // The delivery id on the request is the one in the log.
    let d = stack
        .wait_delivery(&basic, "ord_1:shipped", "succeeded")
        .await;
    assert_eq!(r_basic.header("waybill-delivery-id"), Some(d.id.as_str()));
    assert_eq!((d.attempts, d.last_status_code), (1, Some(200)));

    // An independent implementation accepts every signature.
    let checks = vec![
        (stack.secret("acme", &none).await, r_none),
        (stack.secret("acme", &basic).await, r_basic),
        (stack.secret("acme", &token).await, r_token),
        // …and refuses one made with another subscription's key.
        (stack.secret("acme", &none).await, r_token),
    ];
    assert_eq!(
        verify_with_standardwebhooks(&checks),
        [true, true, true, false]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_both_keys_sign() {
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["stock.*"])).await;
    let old = stack.secret("acme", &id).await;
    stack
        .expect(
            Method::POST,
            &format!("/v1/webhooks/{id}/secret/rotate"),
            &stack.token("acme"),
            Some(json!({"grace_period_seconds": 3600})),
            200,
        )
        .await;
    let new = stack.secret("acme", &id).await;
    assert_ne!(old, new);
    // The rotation reaches the dispatcher through the change feed.
    let mut delivered = Vec::new();
    for n in 0..50 {
        let ev = format!("rot-{n}");
        stack.publish("acme", "stock.updated", &ev, None).await;
        stack.wait_delivery(&id, &ev, "succeeded").await;
        let r = rx.received().pop().unwrap();
        let two = r.header("webhook-signature").unwrap().split(' ').count() == 2;
        delivered.push(r);
        if two {
            break;
        }
    }
    let r = delivered.last().unwrap();
    assert_eq!(r.header("webhook-signature").unwrap().split(' ').count(), 2);
    assert_eq!(
        verify_with_standardwebhooks(&[(old.clone(), r), (new.clone(), r)]),
        [true, true]
    );

    // A rotation without grace revokes the old key at once.
    stack
        .expect(
            Method::POST,
            &format!("/v1/webhooks/{id}/secret/rotate"),
            &stack.token("acme"),
            Some(json!({"grace_period_seconds": 0, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})),
            200,
        )
        .await;
    let newest = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned();
    for n in 0..50 {
        let ev = format!("after-{n}");
        stack.publish("acme", "stock.updated", &ev, None).await;
        stack.wait_delivery(&id, &ev, "succeeded").await;
        let r = rx.received().pop().unwrap();
        if verify_with_standardwebhooks(&[(newest.clone(), &r)]) == [true] {
            assert_eq!(r.header("webhook-signature").unwrap().split(' ').count(), 1);
            assert_eq!(
                verify_with_standardwebhooks(&[(old.clone(), &r), (new.clone(), &r)]),
                [false, false]
            );
            return;
        }
    }
    panic!("the newest key never signed");
}
