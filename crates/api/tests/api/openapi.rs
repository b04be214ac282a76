//! The committed OpenAPI document matches the code. Regenerate it with
//! `UPDATE_OPENAPI=1 cargo test -p waybill-api --test api openapi`.

use crate::helpers::TestApp;

#[test]
fn committed_document_matches_the_code() {
    let update = "UPDATE_OPENAPI=1 cargo test -p waybill-api --test api openapi";
    let doc = waybill_api::openapi::document();
    waybill_testkit::openapi::assert_committed("waybill-api.json", &doc, update);
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
        "/v1/filters/test",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // A subscription's filter and the trial endpoint share one description of the language.
    let filter = "#/components/schemas/Filter";
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["FilterTestRequest"]["properties"]["filter"]["$ref"],
        filter
    );
    for object in ["WebhookView", "WebhookCreate", "WebhookUpdate"] {
        let one_of = schemas[object]["properties"]["filter"]["oneOf"]
            .as_array()
            .unwrap();
        assert!(
            one_of.iter().any(|s| s["$ref"] == filter)
                && one_of.iter().any(|s| s["type"] == "null"),
            "{object}.filter is a Filter or null"
        );
    }
    assert_eq!(schemas["Filter"]["examples"].as_array().unwrap().len(), 4);
}

#[test]
fn every_operation_has_an_id_of_its_own() {
    // Client generators name their methods after operation ids; two alike collide.
    let doc: serde_json::Value = serde_json::from_str(&waybill_api::openapi::document()).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("{id} names both {other} and {method} {path}");
            }
        }
    }
}
