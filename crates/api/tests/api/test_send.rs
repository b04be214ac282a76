//! `POST /v1/webhooks/{id}/test` to a receiver the address guard refuses: the tenant is told the
//! host was refused, never the internal addresses it resolved to.

use diesel_async::RunQueryDsl;
use reqwest::Method;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_refused_test_send_names_the_host_but_no_internal_address() {
    let (app, t, id) = TestApp::with_webhook().await;
    // A name that resolves to loopback; the api refuses `localhost` in a URL, so the row is
    // changed behind its back.
    diesel::sql_query(format!(
        "UPDATE webhooks SET url = 'https://localhost:9/hook' WHERE id = '{id}'"
    ))
    .execute(&mut app.sql().await)
    .await
    .unwrap();
    let r = app
        .raw(
            Method::POST,
            &format!("/v1/webhooks/{id}/test"),
            Some(&t),
            |r| r,
        )
        .await;
    r.assert(200);
    let outcome = &r.body["data"];
    assert_eq!(outcome["succeeded"], false);
    let error = outcome["error"].as_str().unwrap();
    assert!(
        error.contains("localhost resolves only to non-public addresses"),
        "{error}"
    );

    let delivery = outcome["delivery_id"].as_str().unwrap();
    let logged = app.get(&format!("/v1/deliveries/{delivery}"), &t).await;
    logged.assert(200);
    let mut told = vec![error.to_owned()];
    told.extend(
        logged.body["data"]["last_error"]
            .as_str()
            .map(str::to_owned),
    );
    for attempt in logged.body["data"]["attempts"].as_array().unwrap() {
        told.extend(attempt["error"].as_str().map(str::to_owned));
    }
    assert!(told.len() >= 2, "{:?}", logged.body);
    for text in told {
        assert!(
            !text.contains("127.0.0.1") && !text.contains("::1"),
            "{text}"
        );
    }
}
