//! The committed OpenAPI document matches the code. Regenerate with
//! `UPDATE_OPENAPI=1 cargo test -p waybill-ingest --test ingest openapi`.

#[test]
fn committed_document_matches_the_code() {
    let update = "make openapi";
    let doc = waybill_ingest::openapi::document();
    waybill_testkit::openapi::assert_committed("waybill-ingest.json", &doc, update);
}
