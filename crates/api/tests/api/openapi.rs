//! The committed OpenAPI document matches the code. Regenerate it with
//! `UPDATE_OPENAPI=1 cargo test -p waybill-api --test api openapi`.

use std::path::PathBuf;

use crate::helpers::TestApp;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi/waybill-api.json")
}

#[test]
fn committed_document_matches_the_code() {
    let generated = waybill_api::openapi::document();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi/waybill-api.json is out of date; run `UPDATE_OPENAPI=1 cargo test -p waybill-api --test api openapi` and commit it"
    );
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let app = TestApp::spawn().await;
    let served = reqwest::get(format!("{}/openapi.json", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, waybill_api::openapi::document());
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    for path in [
        "/v1/events",
        "/v1/events/{name}",
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/secret",
        "/v1/webhooks/{id}/secret/rotate",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
