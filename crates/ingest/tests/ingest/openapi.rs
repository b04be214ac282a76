//! The committed OpenAPI document matches the code. Regenerate with
//! `UPDATE_OPENAPI=1 cargo test -p waybill-ingest --test ingest openapi`.

#[test]
fn committed_document_matches_the_code() {
    let generated = waybill_ingest::openapi::document();
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/openapi/waybill-ingest.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi/waybill-ingest.json is out of date; run `make openapi` and commit it"
    );
}
