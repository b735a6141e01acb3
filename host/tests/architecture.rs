//! ARCHITECTURE.md's layering, checked on the source: an allow-list of which top-level module may
//! name which. Every `use crate::…`, `crate::…` and `super::…` path in `host/src` (nested `{…}`
//! groups included; comments and string literals skipped) is an edge from the module the file is
//! in to the module the path reaches. An edge missing from [`EDGES`] fails, naming its file and
//! line; so does an entry of [`EDGES`] that no source uses (the table would say more than the
//! code does), and any difference between [`EDGES`] and the table in ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level module may name which. The core crate's modules (`a2a`, `config`, `console`,
/// `limiter`, `model`, `oracles`, `query`, `signature`, `ssrf`'s rules, `wire`) can name only each
/// other: Cargo keeps that. `lib` is the two `lib.rs` files (they declare the modules, and the
/// server's re-exports the core's); `ssrf` is the core's rules and the server's resolver, which
/// re-exports them. The wiring may name everything, and only the command line names the wiring.
const EDGES: &[(&str, &[&str])] = &[
    ("a2a", &["config", "model"]),
    (
        "a2a_client",
        &["a2a", "config", "metrics", "model", "ssrf", "tls"],
    ),
    ("agent_process", &["subreaper"]),
    (
        "approval",
        &[
            "events", "metrics", "model", "relay", "snapshot", "store", "turns",
        ],
    ),
    (
        "cli",
        &[
            "config", "listener", "log", "mcp", "model", "snapshot", "store", "tls", "token",
            "wire", "wiring",
        ],
    ),
    ("config", &["model", "signature"]),
    ("console", &["config"]),
    ("events", &["model"]),
    ("gateway", &["agent_process", "config", "tls"]),
    (
        "hooks",
        &["config", "metrics", "model", "plugins", "snapshot"],
    ),
    (
        "http",
        &[
            "a2a",
            "approval",
            "config",
            "console",
            "events",
            "hooks",
            "inbox",
            "limiter",
            "mcp",
            "metrics",
            "model",
            "pairing",
            "query",
            "reload",
            "router",
            "signature",
            "snapshot",
            "store",
            "wire",
        ],
    ),
    (
        "inbox",
        &[
            "a2a",
            "a2a_client",
            "approval",
            "config",
            "console",
            "events",
            "hooks",
            "metrics",
            "model",
            "rate",
            "relay",
            "router",
            "shutdown",
            "snapshot",
            "ssrf",
            "store",
            "token",
            "turns",
            "wire",
        ],
    ),
    (
        "lib",
        &[
            "a2a",
            "config",
            "console",
            "limiter",
            "model",
            "oracles",
            "signature",
            "wire",
        ],
    ),
    ("limiter", &[]),
    ("listener", &[]),
    ("log", &[]),
    ("mcp", &["wire"]),
    ("metrics", &[]),
    (
        "pairing",
        &["config", "model", "reload", "signature", "tls"],
    ),
    ("model", &[]),
    (
        "oracles",
        &["a2a", "config", "console", "limiter", "query", "ssrf"],
    ),
    ("plugins", &["model"]),
    ("prompt", &["model"]),
    ("query", &[]),
    ("rate", &[]),
    (
        "relay",
        &[
            "a2a",
            "a2a_client",
            "config",
            "events",
            "metrics",
            "model",
            "signature",
            "snapshot",
            "ssrf",
            "store",
            "tls",
            "wire",
        ],
    ),
    (
        "reload",
        &["config", "events", "metrics", "model", "snapshot"],
    ),
    ("router", &["config"]),
    ("server", &["http"]),
    ("shutdown", &[]),
    ("signature", &[]),
    ("snapshot", &["config", "model", "plugins", "router", "tls"]),
    ("ssrf", &[]),
    ("store", &["metrics", "model", "tls", "token"]),
    ("subreaper", &[]),
    ("tls", &[]),
    ("token", &["model"]),
    (
        "turns",
        &[
            "a2a",
            "a2a_client",
            "agent_process",
            "config",
            "events",
            "gateway",
            "hooks",
            "metrics",
            "model",
            "prompt",
            "relay",
            "shutdown",
            "snapshot",
            "store",
            "tls",
            "token",
        ],
    ),
    ("wire", &["model"]),
    (
        "wiring",
        &[
            "a2a_client",
            "approval",
            "config",
            "events",
            "http",
            "inbox",
            "listener",
            "metrics",
            "relay",
            "reload",
            "server",
            "shutdown",
            "snapshot",
            "store",
            "turns",
        ],
    ),
];

/// The source folders of the two crates: the server's, and the core crate's (its pure parts,
/// which the server re-exports under the same names, so both read as one tree of modules).
fn srcs() -> [PathBuf; 2] {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"));
    [host.join("src"), host.join("core/src")]
}

/// Every `.rs` file of both crates, with the folder it is under.
fn all_files() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for root in srcs() {
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        files.sort();
        out.extend(files.into_iter().map(|f| (root.clone(), f)));
    }
    out
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source with comments and the contents of string and char literals blanked (newlines
/// kept, so line numbers stay), so only code is read.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && !ident_before(&b, i) {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body_start = j + 1;
            let rest: String = b[body_start..].iter().collect();
            let len = rest.find(&close).map_or(rest.len(), |k| {
                rest[..k].chars().count() + close.chars().count()
            });
            for &c in &b[i..(body_start + len).min(b.len())] {
                out.push(blank(c));
            }
            i = body_start + len;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\''), or a lifetime ('a), which is kept.
            if next == Some('\\') {
                let end = (i + 2..b.len())
                    .find(|&k| b[k] == '\'')
                    .unwrap_or(b.len() - 1);
                for _ in i..=end {
                    out.push(' ');
                }
                i = end + 1;
            } else if b.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The module path of a file: `inbox/a2a/push.rs` is `[inbox, a2a, push]`, `inbox/mod.rs` is
/// `[inbox]`, `lib.rs` is `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The first segments of every path a `use` group names: `{a::b, c::{d, e}}` gives `a`, `c`.
/// `text` starts just after the `{`.
fn group_heads(text: &str) -> Vec<(String, usize)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    let mut i = 0;
    let chars: Vec<char> = text.chars().collect();
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => {
                depth += 1;
                at_start = false;
            }
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            c if c.is_whitespace() => {}
            _ if at_start => {
                let word: String = chars[i..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || **c == '_')
                    .collect();
                heads.push((word.clone(), i));
                at_start = false;
                i += word.len().max(1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

/// The spans of the inline modules (`mod tests { … }`) in `code`, which `super::` counts as a
/// level of its own.
fn inline_modules(code: &str) -> Vec<(usize, usize)> {
    let bytes = code.as_bytes();
    let mut spans = Vec::new();
    for (pos, _) in code.match_indices("mod ") {
        if pos > 0 && (bytes[pos - 1].is_ascii_alphanumeric() || bytes[pos - 1] == b'_') {
            continue;
        }
        let rest = &code[pos + 4..];
        let name_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after = rest[name_len..].trim_start();
        if name_len == 0 || !after.starts_with('{') {
            continue; // `mod x;`: a file of its own
        }
        let open = pos + 4 + name_len + (rest[name_len..].len() - after.len());
        let mut depth = 0;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        spans.push((open, open + i));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    spans
}

/// One path found in the source: the top-level module it reaches, and its line.
struct Edge {
    to: String,
    line: usize,
}

/// The top-level modules `code` (of a file at `module`) names through `crate::` and `super::`.
fn edges(code: &str, module: &[String]) -> Vec<Edge> {
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let inline = inline_modules(code);
    for keyword in ["crate::", "super::", "agent_inbox_core::"] {
        for (pos, _) in code.match_indices(keyword) {
            // Only at the start of a path (not `foo_crate::` or `x::super::`).
            if pos > 0 {
                let before = bytes[pos - 1] as char;
                if before.is_alphanumeric() || before == '_' || before == ':' || before == '$' {
                    continue;
                }
            }
            // Where the path starts resolving: the crate root, or `module` less one level per
            // `super::`.
            let mut base: Vec<String> = if keyword != "super::" {
                Vec::new()
            } else {
                let mut b = module.to_vec();
                let depth = inline.iter().filter(|(a, z)| *a < pos && pos < *z).count();
                b.extend(std::iter::repeat_n("(inline)".to_owned(), depth));
                b.pop();
                b
            };
            let mut rest = &code[pos + keyword.len()..];
            let mut offset = pos + keyword.len();
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
                offset += "super::".len();
            }
            let heads: Vec<(String, usize)> = if let Some(group) = rest.strip_prefix('{') {
                group_heads(group)
                    .into_iter()
                    .map(|(w, i)| (w, offset + 1 + i))
                    .collect()
            } else {
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                vec![(word, offset)]
            };
            for (head, at) in heads {
                // `self` in a group names the base itself.
                let top = match base.first() {
                    Some(top) => top.clone(),
                    None if head == "self" || head.is_empty() => continue,
                    None => head,
                };
                found.push(Edge {
                    to: top,
                    line: line_of(at),
                });
            }
        }
    }
    found
}

/// Every edge in `host/src`: (from, to) → where each is made.
fn graph() -> BTreeMap<(String, String), Vec<String>> {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut map: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (root, f) in all_files() {
        let rel = f.strip_prefix(&root).expect("under src");
        let shown = f.strip_prefix(host).expect("under host");
        let module = module_path(rel);
        let from = module.first().cloned().unwrap_or_else(|| "lib".to_owned());
        if from == "main" {
            continue; // the binary, a crate of its own: it names the library as `agent_inbox`
        }
        let text = std::fs::read_to_string(&f).expect("read");
        for e in edges(&code_only(&text), &module) {
            if e.to != from {
                map.entry((from.clone(), e.to)).or_default().push(format!(
                    "host/{}:{}",
                    shown.display(),
                    e.line
                ));
            }
        }
    }
    map
}

fn allowed() -> BTreeSet<(String, String)> {
    EDGES
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(|to| (from.to_string(), to.to_string())))
        .collect()
}

#[test]
fn every_edge_is_in_the_allow_list() {
    let graph = graph();
    assert!(graph.len() > 50, "only {} edges read", graph.len());
    let allowed = allowed();
    let missing: Vec<String> = graph
        .iter()
        .filter(|(edge, _)| !allowed.contains(*edge))
        .map(|((from, to), at)| format!("{from} names {to} at {}", at.join(", ")))
        .collect();
    assert!(
        missing.is_empty(),
        "edges ARCHITECTURE.md's table does not allow (add the edge to the table and to EDGES in \
         host/tests/architecture.rs, or remove it from the code):\n  {}",
        missing.join("\n  ")
    );
    let unused: Vec<String> = allowed
        .iter()
        .filter(|e| !graph.contains_key(*e))
        .map(|(from, to)| format!("{from} → {to}"))
        .collect();
    assert!(
        unused.is_empty(),
        "the allow-list has edges no source makes (remove them from EDGES and from the table): {unused:?}"
    );
}

#[test]
fn every_top_level_module_has_a_row() {
    let rows: BTreeSet<&str> = EDGES.iter().map(|(m, _)| *m).collect();
    let mut modules = BTreeSet::new();
    for root in srcs() {
        for e in std::fs::read_dir(root).expect("read src").flatten() {
            let name = e
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if name != "main" {
                modules.insert(name);
            }
        }
    }
    let modules: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    assert_eq!(
        rows, modules,
        "EDGES has a row for each top-level module, and no other"
    );
}

#[test]
fn only_the_command_line_names_the_wiring() {
    let names: Vec<&str> = EDGES
        .iter()
        .filter(|(_, tos)| tos.contains(&"wiring"))
        .map(|(m, _)| *m)
        .collect();
    assert_eq!(names, ["cli"]);
    let at: Vec<String> = graph()
        .into_iter()
        .filter(|((_, to), _)| to == "wiring")
        .flat_map(|(_, at)| at)
        .map(|a| a.split(':').next().unwrap_or_default().to_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        at,
        [
            "host/src/cli/check.rs",
            "host/src/cli/serve.rs",
            "host/src/cli/store.rs"
        ],
        "serve runs the wiring; check and store migrate take its store settings"
    );
}

#[test]
fn no_module_names_one_that_names_it_back() {
    let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, tos) in EDGES {
        names.insert(from, tos.to_vec());
    }
    for start in names.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = names[start].clone();
        while let Some(m) = todo.pop() {
            assert_ne!(m, *start, "{start} is part of an import cycle");
            if seen.insert(m) {
                todo.extend(names.get(m).cloned().unwrap_or_default());
            }
        }
    }
}

/// The table between the `edges` markers in ARCHITECTURE.md: module → what it may name.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let start = doc
        .find("<!-- edges:begin -->")
        .expect("ARCHITECTURE.md has an <!-- edges:begin --> marker");
    let end = doc
        .find("<!-- edges:end -->")
        .expect("ARCHITECTURE.md has an <!-- edges:end --> marker");
    let mut table = BTreeMap::new();
    for row in doc[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let module = cells[1].trim_matches('`').to_owned();
        let names: BTreeSet<String> = cells[2]
            .split(',')
            .map(|s| s.trim().trim_matches('`').to_owned())
            .filter(|s| !s.is_empty() && s != "nothing")
            .collect();
        table.insert(module, names);
    }
    table
}

#[test]
fn the_code_map_has_a_row_for_each_module() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let map = &doc[doc.find("## Code map").expect("a code map")..];
    let map = &map[..map.find("\n## ").unwrap_or(map.len())];
    let rows: BTreeSet<String> = map
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(|name| name.trim_end_matches('/').to_owned())
        .collect();
    let modules: BTreeSet<String> = EDGES
        .iter()
        .map(|(m, _)| m.to_string())
        .filter(|m| m != "lib")
        .collect();
    let missing: Vec<&String> = modules.difference(&rows).collect();
    let extra: Vec<&String> = rows.difference(&modules).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ARCHITECTURE.md's code map lacks {missing:?} and has rows for no module {extra:?}"
    );
}

#[test]
fn the_document_and_the_allow_list_agree() {
    let doc = documented();
    let code: BTreeMap<String, BTreeSet<String>> = EDGES
        .iter()
        .map(|(m, tos)| (m.to_string(), tos.iter().map(|t| t.to_string()).collect()))
        .collect();
    for (m, tos) in &code {
        assert_eq!(
            doc.get(m),
            Some(tos),
            "ARCHITECTURE.md's edge table row for `{m}` differs from EDGES"
        );
    }
    assert_eq!(
        doc.keys().collect::<Vec<_>>(),
        code.keys().collect::<Vec<_>>(),
        "ARCHITECTURE.md's edge table has other rows than EDGES"
    );
}

#[test]
fn only_the_store_names_the_database_library() {
    for (root, f) in all_files() {
        let code = code_only(&std::fs::read_to_string(&f).expect("read"));
        for db in ["rusqlite", "tokio_postgres", "deadpool_postgres"] {
            let uses = code.contains(&format!("{db}::")) || code.contains(&format!("use {db}"));
            assert!(
                f.starts_with(root.join("store")) || !uses,
                "{} names {db}",
                f.display()
            );
        }
    }
}

/// README: secrets are compared "in constant time". Every comparison goes through
/// `Secret::matches` (SHA-256 digests, `subtle`'s `ct_eq`): no source file compares a secret's
/// clear value with `==` or `!=`.
#[test]
fn no_clear_secret_is_compared_with_eq() {
    let files = all_files();
    assert!(files.len() > 20);
    for (_, f) in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for (n, line) in text.lines().enumerate() {
            let compares = line.contains("==") || line.contains("!=");
            assert!(
                !(compares && line.contains("expose()")),
                "{}:{}: a clear secret compared: {line}",
                f.display(),
                n + 1
            );
        }
    }
}

#[test]
fn the_reader_sees_paths_as_the_compiler_does() {
    let m = |s: &str| s.split('/').map(str::to_owned).collect::<Vec<_>>();
    let tos = |code: &str, module: &[String]| {
        edges(&code_only(code), module)
            .into_iter()
            .map(|e| e.to)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tos("use crate::{a::{b, c}, d::e, self};", &m("x")),
        ["a", "d"]
    );
    assert_eq!(tos("use super::y;", &m("x")), ["y"]);
    assert_eq!(tos("use super::y;", &m("x/z")), ["x"]);
    assert_eq!(tos("use super::super::q;", &m("x/z/w")), ["x"]);
    assert_eq!(tos("let a = crate::store::f();", &m("x")), ["store"]);
    assert_eq!(
        tos(
            "mod tests { use super::f; mod deeper { use super::super::g; } }",
            &m("x")
        ),
        ["x", "x"]
    );
    assert_eq!(tos("mod tests { use super::super::y; }", &m("x")), ["y"]);
    assert_eq!(
        tos(
            "// crate::store\nlet s = \"crate::store\"; let c = '\"'; /* crate::x */",
            &m("x")
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        tos("fn f<'a>(x: &'a str) { crate::y::g() }", &m("x")),
        ["y"]
    );
    assert_eq!(
        tos("let s = r#\"crate::no\"#; crate::yes::f()", &m("x")),
        ["yes"]
    );
}
