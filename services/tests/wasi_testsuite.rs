//! The official WebAssembly wasi-testsuite (preview 1), run through nekton's API with nekton's
//! defaults: each test is uploaded with `POST /v1/modules` and run with `POST /v1/jobs`, with the
//! spec's `args` and `env`, and its fixture directory (`root`) as the job's `files` — which the
//! Wasm backend preopens read-write at `/`, as the suite's own runner does with
//! `wasmtime --dir <root>::/`. The exit code must match the spec's `exit_code` (default 0), and
//! stdout its `stdout` where it has one (compared stripped, as the suite's runner does).
//! All 72 pass ([`EXPECTED_FAILURES`] is empty).
//!
//! The C and AssemblyScript tests run from the prebuilt binaries in `tests/wasi-testsuite/`
//! (copied from the suite's `prod/testsuite-base` branch, see `tests/wasi-testsuite/SOURCE`).
//! The Rust tests are built here from their sources (`tests/wasi-testsuite/rust/`) for
//! `wasm32-wasip1`: that needs `cargo`, the `wasm32-wasip1` target
//! (`rustup target add wasm32-wasip1`) and crates.io (or a warm cargo cache).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use common::Harness;
use nekton::api::types::{Encoding, InputFileSpec, JobSpec};

const SUITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wasi-testsuite");

/// Tests that fail by design, with why (like the suite's own `expectations/<runtime>/*.toml`).
/// The runner asserts that these fail and that every other test passes. None today:
/// `c/sock_shutdown-invalid_fd`, which expects descriptor 3 not to exist, passes because a
/// module that imports neither `fd_prestat_get` nor a `path_*` function and has no files gets
/// no preopen (docs/sandbox.md).
const EXPECTED_FAILURES: &[(&str, &str)] = &[];
const TIMEOUT: Duration = Duration::from_secs(300);

/// One test: its module and its spec (the `.json` beside it, all fields optional).
struct Case {
    name: String,
    wasm: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    root: Option<PathBuf>,
    exit_code: i32,
    stdout: Option<String>,
}

fn load_cases(dir: &Path, suite: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
    for entry in entries {
        let wasm = entry.expect("directory entry").path();
        if wasm.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let stem = wasm.file_stem().unwrap().to_string_lossy().into_owned();
        let spec_path = wasm.with_extension("json");
        let spec: serde_json::Value = if spec_path.exists() {
            let text = std::fs::read_to_string(&spec_path).unwrap();
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{spec_path:?}: {e}"))
        } else {
            serde_json::json!({})
        };
        let args = spec["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().expect("args are strings").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let env = spec["env"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().expect("env values are strings").into(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let root = spec["root"].as_str().map(|r| dir.join(r));
        let exit_code = spec["exit_code"]
            .as_i64()
            .map_or(0, |c| i32::try_from(c).expect("exit code fits i32"));
        let stdout = spec["stdout"].as_str().map(str::to_owned);
        cases.push(Case {
            name: format!("{suite}/{stem}"),
            wasm,
            args,
            env,
            root,
            exit_code,
            stdout,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Every regular file under `root` as a job input file, path relative to `root`.
fn fixture_files(root: &Path) -> Vec<InputFileSpec> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<InputFileSpec>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}")) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let content = std::fs::read(&path).unwrap();
                out.push(InputFileSpec {
                    path: rel,
                    content: base64::engine::general_purpose::STANDARD.encode(content),
                    encoding: Some(Encoding::Base64),
                    mode: None,
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// Builds the Rust tests from their sources for `wasm32-wasip1`; returns the directory of
/// `<test>.wasm` + `<test>.json` beside the copied `fs-tests.dir`.
fn build_rust_tests() -> PathBuf {
    let src = Path::new(SUITE).join("rust");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasi-testsuite-rust");
    let project = work.join("project");
    std::fs::create_dir_all(project.join("src/bin")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        r#"[package]
name = "wasi_tests"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
libc = "0.2"
once_cell = "1"
wasip1 = "1"

[profile.release]
debug = false
"#,
    )
    .unwrap();
    for f in ["lib.rs", "config.rs"] {
        std::fs::copy(src.join("src").join(f), project.join("src").join(f)).unwrap();
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(src.join("src/bin")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            std::fs::copy(
                &path,
                project.join("src/bin").join(path.file_name().unwrap()),
            )
            .unwrap();
            names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = work.join("target");
    let status = std::process::Command::new(&cargo)
        .args(["build", "--release", "--bins", "--target", "wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(project.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-Awarnings")
        .status()
        .unwrap_or_else(|e| panic!("running {cargo} to build the wasi-testsuite Rust tests: {e}"));
    assert!(
        status.success(),
        "building the wasi-testsuite Rust tests failed ({status}); they need the wasm32-wasip1 \
         target (`rustup target add wasm32-wasip1`) and crates.io or a warm cargo cache"
    );
    let out = work.join("cases");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("fs-tests.dir")).unwrap();
    let built = target_dir.join("wasm32-wasip1/release");
    for name in names {
        std::fs::copy(
            built.join(format!("{name}.wasm")),
            out.join(format!("{name}.wasm")),
        )
        .unwrap_or_else(|e| panic!("the built {name}.wasm: {e}"));
        let spec = src.join("src/bin").join(format!("{name}.json"));
        if spec.exists() {
            std::fs::copy(&spec, out.join(format!("{name}.json"))).unwrap();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasi_testsuite_preview1_passes_with_nektons_defaults() {
    let suite = Path::new(SUITE);
    let mut cases = load_cases(&suite.join("assemblyscript"), "assemblyscript");
    cases.extend(load_cases(&suite.join("c"), "c"));
    let rust_dir = build_rust_tests();
    cases.extend(load_cases(&rust_dir, "rust"));
    assert_eq!(
        cases.len(),
        72,
        "expected the suite's 72 preview-1 tests (14 AssemblyScript, 12 C, 46 Rust)"
    );

    let h = Harness::start().await;
    let mut submitted = Vec::new();
    for case in &cases {
        let digest = h.push(std::fs::read(&case.wasm).unwrap()).await;
        let spec = JobSpec {
            module: Some(digest),
            args: case.args.clone(),
            env: case.env.clone(),
            files: case.root.as_deref().map(fixture_files).unwrap_or_default(),
            ..Default::default()
        };
        submitted.push(h.submit(&spec).await.id);
    }

    let mut failed = Vec::new();
    let mut passed = Vec::new();
    for (case, id) in cases.iter().zip(submitted) {
        let job = h.wait_finished(id, TIMEOUT).await;
        let outcome = job.outcome.expect("a finished job has an outcome");
        let stdout = h
            .http
            .get(format!("{}/v1/jobs/{id}/logs?stream=stdout", h.base))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("stdout of the job")
            .text()
            .await
            .expect("stdout text");
        let mut problems = Vec::new();
        if (outcome.reason.as_str(), outcome.exit_code) != ("exited", Some(case.exit_code)) {
            problems.push(format!(
                "expected exit code {}, got {} {:?} ({})",
                case.exit_code,
                outcome.reason,
                outcome.exit_code,
                outcome.detail.as_deref().unwrap_or("")
            ));
        }
        if let Some(expected) = &case.stdout
            && stdout.trim() != expected.trim()
        {
            problems.push(format!("expected stdout {expected:?}, got {stdout:?}"));
        }
        let expected_failure = EXPECTED_FAILURES.iter().find(|(n, _)| *n == case.name);
        match (problems.is_empty(), expected_failure) {
            (true, None) => passed.push(case.name.clone()),
            (false, Some((_, why))) => {
                println!("  expected failure {}: {why}", case.name);
            }
            (true, Some(_)) => failed.push(format!(
                "{}: passes but is listed in EXPECTED_FAILURES: remove it there",
                case.name
            )),
            (false, None) => failed.push(format!("{}: {}", case.name, problems.join("; "))),
        }
    }
    println!(
        "wasi-testsuite preview 1: {} of {} passed",
        passed.len(),
        cases.len()
    );
    for name in &passed {
        println!("  pass {name}");
    }
    assert_eq!(passed.len() + EXPECTED_FAILURES.len(), cases.len());
    assert!(
        failed.is_empty(),
        "{} of {} wasi-testsuite tests failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}
