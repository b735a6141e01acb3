//! Converts the API contract (`openapi.yaml` at the repository root) to the JSON the binary
//! serves at `GET /openapi.json`: the YAML is the one written by hand, the JSON is never edited,
//! and a contract that does not parse fails the build.

use std::path::Path;

fn main() {
    // Read when the script runs, not when it was compiled: a build script binary can be reused by
    // another checkout sharing the target directory (a git worktree).
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let src = Path::new(&dir).join("../openapi.yaml");
    println!("cargo::rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(&src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let doc: serde_json::Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", src.display()));
    assert!(
        doc.get("openapi").and_then(|v| v.as_str()) == Some("3.1.0"),
        "{} must be an OpenAPI 3.1.0 document",
        src.display()
    );
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("openapi.json");
    std::fs::write(&out, serde_json::to_vec(&doc).expect("JSON"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
