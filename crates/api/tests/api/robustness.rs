//! When Postgres goes away under a request, the answer is a 503 to retry, not a 500.

use std::time::Duration;

use diesel::{QueryableByName, sql_types::Integer};
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde_json::json;

use crate::helpers::TestApp;

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[tokio::test]
async fn a_connection_lost_mid_request_is_a_503() {
    let (app, t, id) = TestApp::with_webhook().await;
    // Hold the row so the api's update waits on it, then cut the api's connection.
    let mut holder = app.sql().await;
    holder.begin_test_transaction().await.unwrap();
    diesel::sql_query(format!(
        "SELECT id FROM webhooks WHERE id = '{id}' FOR UPDATE"
    ))
    .execute(&mut holder)
    .await
    .unwrap();
    let patch = {
        let (addr, t, id) = (app.addr.clone(), t.clone(), id.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .patch(format!("{addr}/v1/webhooks/{id}"))
                .bearer_auth(t)
                .json(&json!({"name": "blocked"}))
                .send()
                .await
                .unwrap()
        })
    };
    let mut admin = app.sql().await;
    let db = app.db.clone();
    let q = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{db}' AND wait_event_type = 'Lock'"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        if let Some(p) = diesel::sql_query(&q)
            .load::<Pid>(&mut admin)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the update never waited on the row lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    diesel::sql_query(format!("SELECT pg_terminate_backend({})", waiting.pid))
        .execute(&mut admin)
        .await
        .unwrap();
    let res = patch.await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    drop(holder);
    // The pool replaces the dead connection; the next request works.
    app.patch_webhook(&t, &id, json!({"name": "after"}))
        .await
        .assert(200);
}
