//! The committed OpenAPI documents under `docs/openapi/`, checked against the code.

use std::path::PathBuf;

/// Asserts that `docs/openapi/{file}` is `generated`; with `UPDATE_OPENAPI` set, writes it first.
/// `update` says how to regenerate the document.
#[track_caller]
pub fn assert_committed(file: &str, generated: &str, update: &str) {
    // The testkit crate sits beside the services, so its manifest directory finds the docs.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/openapi")
        .join(file);
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi/{file} is out of date; run `{update}` and commit it"
    );
}
