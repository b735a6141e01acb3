//! `tests/README-promises.md` stays true: every test a row names exists.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("read a source folder")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The files a reference's file part names: `name` is tests/e2e/name.rs, `path.rs` any
/// file under host/ (either crate's src or tests) whose path ends so.
fn files_for(file: &str, root: &Path, host: &[PathBuf]) -> Vec<PathBuf> {
    if let Some(stem) = file.strip_suffix(".rs") {
        let suffix = format!("/{stem}.rs");
        host.iter()
            .filter(|p| p.to_string_lossy().ends_with(&suffix))
            .cloned()
            .collect()
    } else {
        vec![root.join("tests/e2e").join(format!("{file}.rs"))]
    }
}

/// Whether one of `files` defines a function `name` (or, for a prefix, one starting so).
fn defined(files: &[PathBuf], name: &str, prefix: bool) -> bool {
    files.iter().any(|f| {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        text.split("fn ").skip(1).any(|rest| {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if prefix {
                ident.starts_with(name)
            } else {
                ident == name
            }
        })
    })
}

#[test]
fn every_named_test_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let table = std::fs::read_to_string(root.join("tests/README-promises.md")).expect("the table");
    let mut host = Vec::new();
    sources(&root.join("host/src"), &mut host);
    sources(&root.join("host/tests"), &mut host);
    sources(&root.join("host/core/src"), &mut host);
    sources(&root.join("host/core/tests"), &mut host);
    let mut missing = Vec::new();
    let mut checked = 0;
    let tested = table.split("## Untested").next().expect("the tested part");
    for row in tested
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
    {
        let cells: Vec<&str> = row.split(" | ").collect();
        let Some(tests) = cells.get(2) else { continue };
        let mut file = String::new();
        for part in tests.split([';', ',']) {
            // `file::fn`, `path.rs::fn` or `::fn`, possibly followed by words in parentheses.
            let Some((f, rest)) = part.trim().split_once("::") else {
                continue;
            };
            // The file is the last word before `::` ("a2a_client.py via a2a::…" names a2a).
            if let Some(f) = f.split_whitespace().last() {
                file = f.to_owned();
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let after = &rest[name.len()..];
            let prefix = after.starts_with('…') || after.starts_with('*');
            if name.is_empty() && !prefix {
                continue;
            }
            checked += 1;
            let files = files_for(&file, &root, &host);
            if !defined(&files, &name, prefix) {
                missing.push(format!("{file}::{name}{}", if prefix { "…" } else { "" }));
            }
        }
    }
    assert!(
        checked > 200,
        "only {checked} test names read: is the table's format the same?"
    );
    assert!(
        missing.is_empty(),
        "tests/README-promises.md names tests that do not exist: {missing:#?}"
    );
}
