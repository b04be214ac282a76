//! Embeds every event schema of `proto-schemas/events/` into the binary, so a deployed service
//! carries exactly the catalog it was built with.
use std::{env, fmt::Write as _, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = manifest.join("../../proto-schemas/events");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    let mut out = String::from("/// `(file name, contents)` of every embedded event schema.\n");
    out.push_str("pub(crate) const EMBEDDED: &[(&str, &str)] = &[\n");
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let abs = fs::canonicalize(&path).unwrap_or(path.clone());
        let _ = writeln!(
            out,
            "    ({file:?}, include_str!({:?})),",
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var("OUT_DIR").unwrap_or_default()).join("embedded_catalog.rs");
    if let Err(e) = fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}
