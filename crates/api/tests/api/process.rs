//! The `waybill-api` binary as an operator runs it: the token subcommand, refusing unsafe
//! production settings, and a graceful stop on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{DbGuard, broker_url, create_database, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_waybill-api");

/// The binary, with none of the caller's `WAYBILL_*` settings, so the test says exactly what it
/// configures.
fn waybill_api() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WAYBILL_")) {
        cmd.env_remove(k);
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_mints_tokens_serves_and_stops_cleanly_on_sigterm() {
    let db = create_database().await;
    let db_url = format!(
        "{}/{db}",
        crate::helpers::admin_url().rsplit_once('/').unwrap().0
    );
    let port = free_port();
    let prefix = format!("wbp{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let _guard = DbGuard {
        db: db.clone(),
        topology: {
            let mut s = crate::helpers::base_settings();
            s.broker.prefix = prefix.clone();
            s.topology().unwrap()
        },
    };
    let env = [
        ("WAYBILL_DATABASE__URL", db_url.as_str()),
        ("WAYBILL_BROKER__URL", &broker_url()),
        ("WAYBILL_BROKER__PREFIX", &prefix),
        ("WAYBILL_HTTP__PORT", &port.to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));

    let out = waybill_api()
        .args([
            "token",
            "--tenant",
            "acme",
            "--scopes",
            "webhooks:read",
            "--ttl",
            "1h",
        ])
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let bad = waybill_api()
        .args([
            "token",
            "--tenant",
            "acme",
            "--scopes",
            "webhooks:everything",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope `webhooks:everything`"));

    let mut child = waybill_api()
        .arg("serve")
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let ready = eventually(Duration::from_secs(30), || {
        let url = format!("{base}/readyz");
        async move { reqwest::get(url).await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(ready.is_some(), "the binary did not become ready");
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/webhooks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the minted token is accepted");

    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    let logs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "exit status {status:?}; logs:\n{logs}");
    assert!(logs.contains("stopping background tasks"), "{logs}");
    // Every log line is a JSON object.
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
            "not JSON: {line}"
        );
    }
}

#[test]
fn production_refuses_development_secrets() {
    let out = waybill_api()
        .arg("serve")
        .env("WAYBILL_ENVIRONMENT", "production")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("encryption_key"), "{err}");
    let out = waybill_api()
        .arg("serve")
        .env("WAYBILL_DATABASE__PORT", "5432")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `port`"));
}
