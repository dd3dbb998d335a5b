//! The library's layering, checked on its source: every `crate::<module>` path (in `use`
//! items, `use crate::{a, b}` groups and inline paths) and every `super::` chain that climbs
//! to the crate root must name the module itself or a module of a lower layer. Same-layer
//! siblings (`vidur_ext` and `real_bench`) may not import each other. docs/ARCHITECTURE.md
//! draws the same graph; this test is what keeps it true.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules of `src/`, lowest layer first.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["quantile", "scheduler"],
    &["io"],
    &["workloads"],
    &["config"],
    &["vidur_ext", "real_bench"],
    &["analysis"],
    &["stages"],
    &["pipeline"],
];

/// Items the crate root re-exports, and the module they come from.
const ROOT_REEXPORTS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Result", "error"),
    ("bail", "error"),
    ("ensure", "error"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Source text with comments removed (line comments, doc comments, block comments), so that
/// prose mentioning a path is not an import. String literals are kept: a `crate::` path in
/// one is reported, which errs on the side of failing loudly.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let bytes = src.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            out.push(c as char);
            if c == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1] as char);
                i += 2;
                continue;
            }
            in_string = c != b'"';
            i += 1;
        } else if c == b'"' {
            in_string = true;
            out.push('"');
            i += 1;
        } else if c == b'r'
            && !out.ends_with(|p: char| p.is_ascii_alphanumeric() || p == '_')
            && matches!(bytes.get(i + 1), Some(b'#' | b'"'))
        {
            // Raw string r#"..."#: copied whole, quotes inside included.
            let hashes = bytes[i + 1..].iter().take_while(|&&b| b == b'#').count();
            if bytes.get(i + 1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            let end = src[body..]
                .find(&close)
                .map_or(bytes.len(), |e| body + e + close.len());
            out.push_str(&src[i..end]);
            i = end;
        } else if c == b'\'' {
            // A char literal ('"', '\'', '\\') is copied whole; a lifetime is one quote.
            let len = match (bytes.get(i + 1), bytes.get(i + 2), bytes.get(i + 3)) {
                (Some(b'\\'), _, _) => src[i + 2..].find('\'').map_or(1, |e| e + 3),
                (Some(_), Some(b'\''), _) => 3,
                _ => 1,
            };
            out.push_str(&src[i..i + len]);
            i += len;
        } else if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let end = src[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            i = end;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each group member: `{io::x, config::{a, b}, Result}` gives
/// `io`, `config`, `Result`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expect_head = true;
    let mut rest = group;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => {
                depth += 1;
                expect_head = depth == 1;
            }
            '}' => {
                if depth == 1 {
                    break;
                }
                depth -= 1;
            }
            ',' if depth == 1 => expect_head = true,
            c if c.is_whitespace() => {}
            _ if expect_head && depth == 1 => {
                let ident = ident_at(rest);
                if !ident.is_empty() {
                    heads.push(ident.to_string());
                    rest = &rest[ident.len()..];
                    expect_head = false;
                    continue;
                }
            }
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    heads
}

/// How many inline `mod name { ... }` blocks enclose byte `at` of `code` (each adds a level
/// that `super::` climbs first, as `mod tests` does).
fn inline_modules_around(code: &str, at: usize) -> usize {
    let mut open: Vec<bool> = Vec::new();
    for (i, c) in code[..at].char_indices() {
        match c {
            '{' => {
                let before = code[..i].trim_end();
                let rest = before.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
                let keyword = rest.trim_end();
                let is_mod = rest.len() < before.len()
                    && rest.len() > keyword.len()
                    && keyword.ends_with("mod")
                    && !keyword[..keyword.len() - 3]
                        .ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
                open.push(is_mod);
            }
            '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    open.iter().filter(|&&m| m).count()
}

/// The crate-root modules `code` (comments stripped) names through `crate::` paths, and
/// through `super::` chains of more than `depth` steps (a file `depth` modules below the
/// root climbs to it with that many).
fn imported_roots(code: &str, depth: usize) -> BTreeSet<String> {
    let mut roots = BTreeSet::new();
    let mut add = |after: &str| {
        if after.starts_with('{') {
            roots.extend(group_heads(after));
        } else {
            let ident = ident_at(after);
            if !ident.is_empty() {
                roots.insert(ident.to_string());
            }
        }
    };
    for (at, _) in code.match_indices("crate::") {
        let preceded_by_ident = code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if !preceded_by_ident {
            add(&code[at + "crate::".len()..]);
        }
    }
    let mut at = 0;
    while let Some(found) = code[at..].find("super::") {
        let start = at + found;
        let mut end = start;
        let mut steps = 0;
        while code[end..].starts_with("super::") {
            steps += 1;
            end += "super::".len();
        }
        if steps >= depth + inline_modules_around(code, start) {
            add(&code[end..]);
        }
        at = end;
    }
    roots
}

/// `(top-level module, module depth below the crate root)` of a file under `src/`.
fn module_of(src: &Path, file: &Path) -> Option<(String, usize)> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let top = parts.first()?.trim_end_matches(".rs").to_string();
    let file_name = parts.last()?;
    // `a/b.rs` is module a::b (depth 2); `a/mod.rs` is module a (depth 1).
    let depth = parts.len() - usize::from(file_name == "mod.rs");
    Some((top, depth))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every import of a module of the same or a higher layer, as `file: module imports root`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let Some((module, depth)) = module_of(src, &file) else {
            continue;
        };
        // `lib.rs` declares the modules; `cli/` holds the binaries, which may use anything.
        if module == "lib" || module == "cli" {
            continue;
        }
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("{}: module `{module}` has no layer", file.display()));
        let code = strip_comments(&fs::read_to_string(&file).unwrap());
        for root in imported_roots(&code, depth) {
            let target = ROOT_REEXPORTS
                .iter()
                .find(|(item, _)| *item == root)
                .map_or(root.as_str(), |(_, m)| m);
            if target == module {
                continue;
            }
            let Some(layer) = layer_of(target) else {
                found.push(format!("{}: unknown module `{root}`", file.display()));
                continue;
            };
            if layer >= own {
                found.push(format!(
                    "{}: `{module}` (layer {own}) imports `{target}` (layer {layer})",
                    file.display()
                ));
            }
        }
    }
    found
}

#[test]
fn no_module_imports_its_own_layer_or_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "upward imports:\n{}", found.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert!(declared.len() >= 9, "{declared:?}");
    for m in declared {
        assert!(
            layer_of(m).is_some(),
            "`{m}` is declared in lib.rs but has no layer"
        );
    }
}

#[test]
fn the_scanner_sees_every_form_of_import() {
    // A quote in a char literal or a raw string, and `//` in a string, neither start nor
    // end anything: the imports after them are still seen.
    let code = strip_comments(
        r##"use crate::{io::x, analysis::{a, b}, Result};
        // use crate::pipeline::y;
        let q = '"'; let e = '\''; let l: &'static str = r#"a "b" c"#;
        /* crate::stages */ let v = crate::config::types::Device::Cpu;
        let url = "http://example.org"; use crate::workloads::Workload;
        use super::super::real_bench::model;
        fn f() -> $crate::ignored {}
        "##,
    );
    let roots = imported_roots(&code, 2);
    let expected: BTreeSet<String> = [
        "io",
        "analysis",
        "Result",
        "config",
        "real_bench",
        "workloads",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(roots, expected);
    // One level down, `super::super` does not reach the root; in a file's `mod tests`,
    // `super::` is the file's own module.
    assert!(!imported_roots("use super::super::x::y;", 3).contains("x"));
    assert!(imported_roots("use super::x::y;", 1).contains("x"));
    assert!(!imported_roots("mod tests { use super::x::y; }", 1).contains("x"));
    assert!(imported_roots("mod tests { use super::super::x; }", 1).contains("x"));
}

#[test]
fn an_upward_import_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    fs::create_dir_all(src.join("io")).unwrap();
    fs::create_dir_all(src.join("vidur_ext")).unwrap();
    fs::write(src.join("io/mod.rs"), "use crate::config::SimrealConfig;\n").unwrap();
    fs::write(
        src.join("vidur_ext/sim.rs"),
        "use crate::{io::read_csv, real_bench::model};\n",
    )
    .unwrap();
    let found = violations(src);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("`io` (layer 2) imports `config` (layer 4)"),
        "{found:?}"
    );
    assert!(
        found[1].contains("`vidur_ext` (layer 5) imports `real_bench` (layer 5)"),
        "{found:?}"
    );
}
