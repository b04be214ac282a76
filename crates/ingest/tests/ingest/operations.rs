//! The same runtime pieces as the api: probes, metrics, OpenAPI, JSON errors for unknown routes,
//! the token subcommand, JSON logs and a clean exit on SIGTERM.

use std::time::Duration;

use serde_json::json;
use waybill_testkit::{ServiceProcess, eventually};

use crate::helpers::{TestIngest, example};

const BIN: &str = env!("CARGO_BIN_EXE_waybill-ingest");

#[tokio::test]
async fn probes_metrics_and_documents_need_no_token() {
    let app = TestIngest::spawn().await;
    app.post(
        "/v1/events",
        &app.publisher(),
        &json!({"type": "stock.updated", "data": example("stock.updated")}),
    )
    .await
    .assert(202);
    let get = |path: &str| reqwest::get(format!("{}{path}", app.addr));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready: serde_json::Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(
        (
            ready["checks"]["postgres"].as_str(),
            ready["checks"]["broker"].as_str()
        ),
        (Some("ok"), Some("ok"))
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    let counted = metrics.lines().any(|l| {
        l.starts_with("waybill_http_requests_total")
            && [
                r#"route="/v1/events""#,
                r#"status="202""#,
                r#"service="ingest""#,
            ]
            .iter()
            .all(|label| l.contains(label))
    });
    assert!(counted, "{metrics}");
    let doc: serde_json::Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/v1/events/batch"]["post"].is_object());
    let r = get("/v1/nothing").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let r = reqwest::Client::new()
        .get(format!("{}/v1/events", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
}

#[tokio::test]
async fn the_binary_mints_tokens_publishes_and_stops_cleanly_on_sigterm() {
    let svc = ServiceProcess::start(BIN).await;
    let out = svc.token(&["--tenant", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let client = reqwest::Client::new();
    let accepted = eventually(Duration::from_secs(30), || {
        let (client, token, url) = (
            client.clone(),
            token.clone(),
            format!("{}/v1/events", svc.base),
        );
        async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"type": "stock.updated", "data": example("stock.updated")}))
                .send()
                .await
                .ok()?;
            (r.status() == 202).then_some(())
        }
    })
    .await;
    assert!(
        accepted.is_some(),
        "the binary accepts an event with its own token"
    );
    let (status, logs) = svc.sigterm().await;
    assert!(status.success(), "exit status {status:?}; logs:\n{logs}");
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
            "not JSON: {line}"
        );
    }
}
