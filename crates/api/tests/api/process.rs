//! The `waybill-api` binary as an operator runs it: the token subcommand, refusing unsafe
//! production settings, and a graceful stop on SIGTERM.

use std::time::Duration;

use waybill_testkit::{ServiceProcess, eventually, service::command};

const BIN: &str = env!("CARGO_BIN_EXE_waybill-api");

#[tokio::test]
async fn the_binary_mints_tokens_serves_and_stops_cleanly_on_sigterm() {
    let svc = ServiceProcess::start(BIN).await;
    let out = svc.token(&[
        "--tenant",
        "acme",
        "--scopes",
        "webhooks:read",
        "--ttl",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let bad = svc.token(&["--tenant", "acme", "--scopes", "webhooks:everything"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope `webhooks:everything`"));

    let ready = eventually(Duration::from_secs(30), || {
        let url = format!("{}/readyz", svc.base);
        async move { reqwest::get(url).await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(ready.is_some(), "the binary did not become ready");
    let r = reqwest::Client::new()
        .get(format!("{}/v1/webhooks", svc.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the minted token is accepted");

    let (status, logs) = svc.sigterm().await;
    assert!(status.success(), "exit status {status:?}; logs:\n{logs}");
    assert!(logs.contains("stopping background tasks"), "{logs}");
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
            "not JSON: {line}"
        );
    }
}

/// Runs `serve` with one setting from the environment; asserts it refuses to start and returns
/// what it said.
fn refused_with(key: &str, value: &str) -> String {
    let out = command(BIN).arg("serve").env(key, value).output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn production_refuses_development_secrets() {
    let err = refused_with("WAYBILL_ENVIRONMENT", "production");
    assert!(err.contains("encryption_key"), "{err}");
    let err = refused_with("WAYBILL_DATABASE__PORT", "5432");
    assert!(err.contains("unknown field `port`"));
}
