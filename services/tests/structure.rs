//! Module layering inside `services` (see `src/model/mod.rs`): `store` and `worker` never import
//! `api`, and `api` never imports `worker`. Shared types live in `model`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (run from the services crate)",
            dir.display()
        )
    });
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `file:line: text` for every line of the files below `dirs` that mentions one of `forbidden`.
fn offenders(dirs: &[&str], forbidden: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&src.join(dir), &mut files);
    }
    assert!(
        !files.is_empty(),
        "no sources found below {}",
        src.display()
    );
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if forbidden.iter().any(|f| code.contains(f)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, code));
            }
        }
    }
    found
}

#[test]
fn store_and_worker_do_not_import_api() {
    let found = offenders(&["store", "worker"], &["crate::api", "nekton::api"]);
    assert!(
        found.is_empty(),
        "store/worker must not depend on the API (move shared types to crate::model):\n{}",
        found.join("\n")
    );
}

#[test]
fn api_does_not_import_worker() {
    let found = offenders(&["api"], &["crate::worker", "nekton::worker"]);
    assert!(
        found.is_empty(),
        "the API must not depend on the worker (move shared helpers to crate::model):\n{}",
        found.join("\n")
    );
}
