//! Clients that send their bodies slowly hold only their own requests: no database connection is
//! taken while a body is still arriving, and a body that does not arrive in time is a 408.

use std::time::Duration;

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    task::JoinHandle,
};
use waybill_testkit::slow_client::{read_answer, start_request};

use crate::helpers::{TestApp, webhook};

/// Feeds every stream one more byte of its body every 100 ms until `stop` turns, then hands the
/// streams back. `fed` counts the rounds.
fn trickle(
    mut streams: Vec<TcpStream>,
    mut stop: watch::Receiver<bool>,
    fed: watch::Sender<usize>,
) -> JoinHandle<Vec<TcpStream>> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return streams,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            for s in &mut streams {
                // A stream the server closed shows when its answer is read.
                let _ = s.write_all(b"x").await;
            }
            fed.send_modify(|n| *n += 1);
        }
    })
}

#[tokio::test]
async fn bodies_still_arriving_hold_no_connection_others_need() {
    // Held bodies stay unfinished for the whole test: more of them than the pool (4) has
    // connections, on an existing subscription, with the methods that take a body.
    let app = TestApp::spawn_with(|s| s.http.body_read_timeout = "60s".into()).await;
    let t = app.acme();
    let id = app
        .create_webhook_id(&t, webhook("https://example.com/a"))
        .await;
    let mut held = Vec::new();
    for i in 0..12 {
        let (method, path) = match i % 3 {
            0 => ("PATCH", format!("/v1/webhooks/{id}")),
            1 => ("POST", format!("/v1/webhooks/{id}/secret/rotate")),
            _ => ("POST", "/v1/webhooks".to_owned()),
        };
        held.push(start_request(&app.addr, method, &path, Some(&t)).await);
    }
    let (stop, stopped) = watch::channel(false);
    let (fed, mut rounds) = watch::channel(0);
    let feeder = trickle(held, stopped, fed);
    // The server has had every head and several bytes of each body.
    rounds.wait_for(|n| *n >= 3).await.unwrap();

    let r = app.get(&format!("/v1/webhooks/{id}"), &t).await;
    r.assert(200);
    assert_eq!(r.body["data"]["id"], id.as_str());
    let created = app
        .create_webhook(&t, webhook("https://example.com/b"))
        .await;
    assert_eq!(created["url"], "https://example.com/b");
    app.patch_webhook(&t, &id, json!({"name": "renamed"}))
        .await
        .assert(200);
    let r = app.raw(reqwest::Method::GET, "/readyz", None, |r| r).await;
    r.assert(200);
    assert_eq!(r.body["checks"]["postgres"], "ok");
    let r = app.get("/v1/webhooks", &t).await;
    r.assert(200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);

    // The held requests were still waiting for their bodies all along.
    stop.send(true).unwrap();
    let held = feeder.await.unwrap();
    for s in &held {
        let mut buf = [0u8; 1];
        assert!(
            matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a held request was answered before its body arrived"
        );
    }
}

#[tokio::test]
async fn a_body_not_complete_in_time_is_a_408() {
    let app = TestApp::spawn_with(|s| s.http.body_read_timeout = "1s".into()).await;
    let t = app.acme();
    let id = app
        .create_webhook_id(&t, webhook("https://example.com/a"))
        .await;
    let before = app.get(&format!("/v1/webhooks/{id}"), &t).await;
    let stream = start_request(&app.addr, "PATCH", &format!("/v1/webhooks/{id}"), Some(&t)).await;
    let (mut read, mut write) = stream.into_split();
    // Still sending, a byte every 100 ms, while the answer is awaited.
    let feeder = tokio::spawn(async move {
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let answer = read_answer(&mut read).await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(
        answer.body["error"]["code"], "request_timeout",
        "{answer:?}"
    );
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1s"),
        "{answer:?}"
    );
    // The connection is closed after the answer: what is left of the body is never read as a
    // request of its own.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut rest))
        .await
        .expect("the connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest));
    feeder.abort();
    // Nothing of the late body was applied.
    let after = app.get(&format!("/v1/webhooks/{id}"), &t).await;
    assert_eq!(after.body, before.body);
}

#[tokio::test]
async fn the_token_and_scope_are_checked_before_the_body_arrives() {
    let app = TestApp::spawn_with(|s| s.http.body_read_timeout = "60s".into()).await;
    let mut stream = start_request(&app.addr, "POST", "/v1/webhooks", None).await;
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], "unauthorized");
    let reader = app.token("acme", &[waybill_domain::Scope::WebhooksRead]);
    let mut stream = start_request(&app.addr, "POST", "/v1/webhooks", Some(&reader)).await;
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], "forbidden");
}
