//! Module handling: caching in memory and on disk, coalesced loads, store failures, digest checks,
//! malformed modules and components, and `validate_module`.

mod common;

use std::time::Duration;

use common::*;
use runtime_core::OutcomeReason;
use wasm_backend::{ModuleKind, WasmBackend, module_digest, validate_module};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_is_fetched_once_and_then_served_from_memory_and_disk() {
    let store = MapStore::new();
    let cache = tempfile::tempdir().unwrap();
    let backend = WasmBackend::new(config(cache.path()), store.clone()).unwrap();
    let digest = store.add(wat(HELLO));

    for _ in 0..3 {
        let done = run(&backend, request(&digest)).await;
        assert!(
            done.report.outcome.is_success(),
            "{:?}",
            done.report.outcome
        );
        assert_eq!(done.stdout, b"hello, world\n");
    }
    assert_eq!(store.calls(), 1, "repeat jobs must not ask the store again");

    // The artifact is on disk under <cache_dir>/<engine hash>/<digest hex>.cwasm, with no temp files.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let cwasm = backend.module_cache_dir().join(format!("{hex}.cwasm"));
    assert!(cwasm.is_file(), "{} missing", cwasm.display());
    assert_eq!(backend.module_cache_dir().parent().unwrap(), cache.path());
    let names: Vec<_> = std::fs::read_dir(backend.module_cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![format!("{hex}.cwasm")]);
    drop(backend);

    // A fresh backend over the same cache directory loads the artifact without the store.
    let empty = MapStore::new();
    let backend = WasmBackend::new(config(cache.path()), empty.clone()).unwrap();
    let done = run(&backend, request(&digest)).await;
    assert!(
        done.report.outcome.is_success(),
        "{:?}",
        done.report.outcome
    );
    assert_eq!(done.stdout, b"hello, world\n");
    assert_eq!(empty.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cache_file_is_replaced_by_a_fresh_compile() {
    let store = MapStore::new();
    let cache = tempfile::tempdir().unwrap();
    let digest = store.add(wat(HELLO));
    let backend = WasmBackend::new(config(cache.path()), store.clone()).unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::write(
        backend.module_cache_dir().join(format!("{hex}.cwasm")),
        b"garbage",
    )
    .unwrap();
    let done = run(&backend, request(&digest)).await;
    assert!(
        done.report.outcome.is_success(),
        "{:?}",
        done.report.outcome
    );
    assert_eq!(store.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_loads_of_one_digest_compile_once() {
    let store = MapStore::new();
    *store.delay.lock().unwrap() = Some(Duration::from_millis(200));
    let (backend, _dir) = backend(store.clone());
    let backend = std::sync::Arc::new(backend);
    let digest = store.add(wat(HELLO));
    let jobs: Vec<_> = (0..8)
        .map(|_| {
            let backend = backend.clone();
            let req = request(&digest);
            tokio::spawn(async move { run(&backend, req).await })
        })
        .collect();
    for job in jobs {
        let done = job.await.unwrap();
        assert!(
            done.report.outcome.is_success(),
            "{:?}",
            done.report.outcome
        );
    }
    assert_eq!(store.calls(), 1);
}

/// An unreachable store (the worker's database restarting) is the worker's failure: the job ends
/// `internal_error` (which the queue retries), and nothing is remembered, so the next load works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_store_is_an_internal_error_not_remembered() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(wat(HELLO));
    *store.unavailable.lock().unwrap() = Some("connection reset".into());
    let done = run(&backend, request(&digest)).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::InternalError,
        "{:?}",
        done.report.outcome
    );
    assert!(done.report.outcome.reason.is_infrastructure_failure());
    assert!(
        done.report
            .outcome
            .detail
            .unwrap()
            .contains("connection reset")
    );
    *store.unavailable.lock().unwrap() = None;
    assert_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_and_digest_mismatches_are_image_errors_and_retried() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());

    let missing = module_digest(b"not stored");
    let done = run(&backend, request(&missing)).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::ImageError,
        "{:?}",
        done.report.outcome
    );
    assert!(done.report.outcome.detail.unwrap().contains("no module"));

    // The store hands back other bytes than the digest names.
    let claimed = module_digest(b"something else");
    store.add_as(&claimed, wat(HELLO));
    let done = run(&backend, request(&claimed)).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::ImageError,
        "{:?}",
        done.report.outcome
    );
    assert!(done.report.outcome.detail.unwrap().contains("digest"));

    // Not remembered: once the store is fixed, the module runs.
    let calls = store.calls();
    store.add_as(&missing, wat(HELLO)); // now present, but still not matching its digest
    let done = run(&backend, request(&missing)).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::ImageError);
    assert_eq!(store.calls(), calls + 1, "a store failure is retried");
    assert_hello_works(&backend, &store).await;

    // A malformed digest never reaches the store.
    let calls = store.calls();
    let done = run(&backend, request("sha256:xyz")).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::SpecError);
    let done = run(&backend, request(&format!("md5:{}", "0".repeat(32)))).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::SpecError);
    assert_eq!(store.calls(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_modules_are_spec_errors_remembered_per_digest() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\0asm\x01\0\0\0\x01\xff\xff".to_vec(), "compile"),
        // An empty component: valid, but not a command.
        (b"\0asm\x0d\0\x01\0".to_vec(), "wasi:cli/run"),
        (b"#!/bin/sh\necho hi\n".to_vec(), "not a WebAssembly binary"),
        (b"(module (func (export \"_start\")))".to_vec(), "WAT"),
        (wat(r#"(module (func (export "main")))"#), "_start"),
        (
            wat(r#"(module (func (export "_start") (param i32)))"#),
            "_start",
        ),
        (
            wat(r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#),
            "launch_missiles",
        ),
        (
            wat(
                r#"(module (import "wasi_snapshot_preview1" "no_such_call" (func)) (func (export "_start")))"#,
            ),
            "no_such_call",
        ),
    ];
    for (bytes, expected) in cases {
        let digest = store.add(bytes);
        let before = store.calls();
        for _ in 0..2 {
            let done = run(&backend, request(&digest)).await;
            let outcome = &done.report.outcome;
            assert_eq!(
                outcome.reason,
                OutcomeReason::SpecError,
                "{expected}: {outcome:?}"
            );
            let detail = outcome.detail.as_deref().unwrap_or_default();
            assert!(
                detail.contains(expected),
                "expected {expected:?} in {detail:?}"
            );
        }
        assert_eq!(
            store.calls(),
            before + 1,
            "{expected}: a bad module is fetched and compiled once"
        );
    }
    assert_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_modules_are_refused() {
    let store = MapStore::new();
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = config(cache.path());
    cfg.max_module_bytes = 100;
    let backend = WasmBackend::new(cfg, store.clone()).unwrap();
    let mut bytes = wat(HELLO);
    bytes.resize(200, 0); // trailing junk: size is checked before anything else
    let digest = store.add(bytes);
    let done = run(&backend, request(&digest)).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::SpecError);
    assert!(
        done.report
            .outcome
            .detail
            .unwrap()
            .contains("more than the 100 bytes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_time_is_bounded() {
    let store = MapStore::new();
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = config(cache.path());
    cfg.max_compile_time = Duration::from_nanos(1);
    let backend = WasmBackend::new(cfg, store.clone()).unwrap();
    // Many functions: compiling takes far longer than a nanosecond.
    let funcs: String = (0..3000)
        .map(|i| format!("(func $f{i} (result i32) (i32.add (i32.const {i}) (i32.const 1)))"))
        .collect();
    let digest = store.add(wat(&format!("(module {funcs} (func (export \"_start\")))")));
    let done = run(&backend, request(&digest)).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::SpecError,
        "{:?}",
        done.report.outcome
    );
    assert!(done.report.outcome.detail.unwrap().contains("longer than"));
}

#[test]
fn digests_are_sha256_hex() {
    assert_eq!(
        module_digest(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn validate_module_accepts_commands_and_explains_rejections() {
    let max = 1 << 20;
    assert_eq!(validate_module(&wat(HELLO), max), Ok(ModuleKind::Core));
    assert_eq!(
        validate_module(&guest("(call $sleep (i64.const 1))", "x"), max),
        Ok(ModuleKind::Core)
    );

    let expect = |bytes: &[u8], max: usize, needle: &str| {
        let err = validate_module(bytes, max).expect_err(needle);
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    };
    expect(&wat(HELLO), 10, "more than the 10 bytes");
    expect(b"", max, "empty");
    expect(
        b"\x7fELF\x02\x01\x01\0\0\0",
        max,
        "not a WebAssembly binary",
    );
    expect(b"(module)", max, "WAT");
    // Components are checked too (see tests/components.rs for real ones): an empty one is no
    // command.
    expect(b"\0asm\x0d\0\x01\0", max, "`wasi:cli/run@0.2.x`");
    expect(
        b"\0asm\x0d\0\x01\0\xff",
        max,
        "invalid WebAssembly component",
    );
    expect(b"\0asm\x02\0\0\0", max, "version");
    expect(
        b"\0asm\x01\0\0\0\x01\xff\xff",
        max,
        "invalid WebAssembly module",
    );
    expect(&wat(r#"(module (func (export "main")))"#), max, "_start");
    expect(
        &wat(r#"(module (memory (export "_start") 1))"#),
        max,
        "not as a function",
    );
    expect(
        &wat(r#"(module (func (export "_start") (result i32) (i32.const 0)))"#),
        max,
        "no parameters",
    );
    expect(
        &wat(r#"(module (import "env" "f" (func)) (func (export "_start")))"#),
        max,
        "`env::f`",
    );
    // Shared memory needs the threads proposal, which this wasmtime build leaves out.
    expect(
        &wat(r#"(module (memory 1 1 shared) (func (export "_start")))"#),
        max,
        "invalid WebAssembly module",
    );
}
