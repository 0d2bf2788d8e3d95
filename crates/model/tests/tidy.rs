//! Architecture invariant: the rules crate does no I/O. Its sources name no file, socket,
//! process or clock API, and it depends on nothing but serialisation and error helpers.

use std::path::Path;

const FORBIDDEN: [&str; 9] =
    ["std::fs", "std::net", "std::process", "std::io", "std::env", "std::thread", "SystemTime", "Instant", "tokio"];

#[test]
fn the_rules_crate_names_no_io_api() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offences = Vec::new();
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 5, "the model crate's sources were not found: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("a source file");
        for (n, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    offences.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "the model crate must do no I/O:\n{}", offences.join("\n"));
}

/// Every `.rs` file under `dir`, in sub-folders too (a module moved into a folder stays checked).
fn sources(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable folder") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn the_rules_crate_depends_only_on_serialisation_and_errors() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).expect("manifest");
    let deps = manifest.split("[dependencies]").nth(1).expect("a [dependencies] table");
    let deps = deps.split("\n[").next().unwrap_or_default();
    let names: Vec<&str> = deps
        .lines()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    for name in &names {
        assert!(
            ["serde", "serde_json", "thiserror"].contains(name),
            "unexpected dependency of the model crate: {name}"
        );
    }
}
