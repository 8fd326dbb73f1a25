//! Wasm-specific job semantics: the input directory, fuel, memory and table limits, the trap kinds,
//! the module cache under concurrency. What every backend promises (exit codes, args/env/stdin,
//! output caps, timeouts, cancellation, streaming...) is the conformance suite's
//! (tests/conformance.rs). Every hostile job is followed by a hello job on the same backend.

mod common;

use std::time::Duration;

use common::*;
use runtime_core::{Backend, Outcome, OutcomeReason, Program};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_prints_exact_bytes_and_exits_zero() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    assert_eq!(backend.name(), "wasm");
    assert!(
        backend.uses_pooling_allocator(),
        "the pool should be available on this machine"
    );
    let digest = store.add(wat(HELLO));
    assert!(backend.accepts(&Program::WasmModule {
        digest: digest.clone()
    }));
    assert!(!backend.accepts(&Program::Image {
        reference: "alpine".into()
    }));

    let done = run(&backend, request(&digest)).await;
    assert_eq!(done.report.outcome, runtime_core::Outcome::exited(0));
    assert_eq!(done.stdout, b"hello, world\n");
    assert!(done.stderr.is_empty());
    assert_eq!(done.stats.stdout_bytes, 13);
    let usage = &done.report.usage;
    assert!(
        usage.fuel_consumed.is_some_and(|f| f > 0),
        "fuel is always metered: {usage:?}"
    );
    assert_eq!(usage.wasm_memory_peak_bytes, Some(65536));
    assert!(usage.memory_peak_bytes.is_some_and(|m| m >= 65536));
    assert!(usage.setup > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_program_is_a_spec_error() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let mut req = request("sha256:00");
    req.program = Program::Image {
        reference: "alpine".into(),
    };
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::SpecError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_files_are_readable_at_the_root_and_removed_afterwards() {
    let store = MapStore::new();
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut config = common::config(cache.path());
    config.scratch_dir = Some(scratch.path().to_path_buf());
    let backend = wasm_backend::WasmBackend::new(config, store.clone()).unwrap();

    let digest = store.add(cat_input("in/hello.txt"));
    let mut req = request(&digest);
    req.files = vec![
        file("in/hello.txt", b"file content\0\xff\n"),
        file("other", b"x"),
    ];
    let done = run(&backend, req).await;
    assert!(
        done.report.outcome.is_success(),
        "{:?}",
        done.report.outcome
    );
    assert_eq!(done.stdout, b"file content\0\xff\n");
    assert_no_job_files(scratch.path());

    // Without input files fd 3 is an empty directory: the file does not exist (ENOENT = 44).
    let done = run(&backend, request(&digest)).await;
    assert_eq!(done.report.outcome, runtime_core::Outcome::exited(64));
    assert_no_job_files(scratch.path());

    // Paths escaping the directory are refused before anything runs.
    for bad in ["../escape", "/etc/passwd", "a/../../b"] {
        let mut req = request(&digest);
        req.files = vec![file(bad, b"x")];
        let done = run(&backend, req).await;
        assert_eq!(
            done.report.outcome.reason,
            OutcomeReason::SpecError,
            "{bad}: {:?}",
            done.report.outcome
        );
        assert!(done.report.outcome.detail.unwrap().contains(bad));
    }
    assert_no_job_files(scratch.path());
    assert_hello_works(&backend, &store).await;
    drop(backend);
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_outside_the_input_directory_cannot_be_read() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    for path in [
        "../../../../etc/passwd",
        "/etc/passwd",
        "in/../../etc/hostname",
    ] {
        let digest = store.add(cat_input(path));
        let mut req = request(&digest);
        req.files = vec![file("in/hello.txt", b"x")];
        let done = run(&backend, req).await;
        let outcome = &done.report.outcome;
        assert_eq!(outcome.reason, OutcomeReason::Exited, "{path}: {outcome:?}");
        assert!(
            outcome.exit_code.is_some_and(|c| c > 20),
            "{path}: the open must fail: {outcome:?}"
        );
        assert!(
            done.stdout.is_empty(),
            "{path}: leaked {:?}",
            String::from_utf8_lossy(&done.stdout)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_directory_is_writable() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    // path_open with O_CREAT (oflags 1) and fd_write rights (1 << 6) must fail.
    let create = wat(r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "planted")
  (func (export "_start")
    (call $proc_exit (call $path_open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const 7)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 600)))))
"#);
    let digest = store.add(create);
    let mut req = request(&digest);
    req.files = vec![file("input", b"x")];
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome,
        runtime_core::Outcome::exited(0),
        "creating a file in the job's directory (`/`) must succeed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_is_metered_without_a_budget_while_spinning() {
    // The wall timeout and the bill's wall and CPU of a spinning guest are the conformance
    // suite's `wall_timeout_while_spinning` (tests/conformance.rs); fuel is Wasm's own.
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(guest("(loop $l (br $l))", ""));
    let mut req = request(&digest);
    req.limits.wall_time = Duration::from_millis(300);
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::WallTimeout,
        "{:?}",
        done.report.outcome
    );
    // Fuel is metered without a budget too, and flushed at least every slice while spinning.
    assert!(
        done.report.usage.fuel_consumed.unwrap() > 1_000_000,
        "{:?}",
        done.report.usage
    );
    assert_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_exhaustion_is_a_cpu_timeout() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(guest(
        "(local $i i32) (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l))",
        "",
    ));
    let mut req = request(&digest);
    req.limits.fuel = Some(1_000_000);
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::CpuTimeout,
        "{:?}",
        done.report.outcome
    );
    let consumed = done.report.usage.fuel_consumed.unwrap();
    assert!(
        (990_000..=1_000_000).contains(&consumed),
        "consumed {consumed}"
    );
    assert_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_grow_bomb_hits_the_memory_limit() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    // Grows by 1 MiB until memory.grow fails, then exits 3 (it must be stopped before that).
    let digest = store.add(guest(
        "(loop $l (if (i32.ne (memory.grow (i32.const 16)) (i32.const -1)) (then (br $l)))) (call $proc_exit (i32.const 3))",
        "",
    ));
    let mut req = request(&digest);
    req.limits.memory_bytes = 16 << 20;
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::MemoryLimit,
        "{:?}",
        done.report.outcome
    );
    let peak = done.report.usage.wasm_memory_peak_bytes.unwrap();
    assert!((15 << 20..=16 << 20).contains(&peak), "peak {peak}");

    // A module whose initial memory is already over the limit fails at instantiation.
    let big = store.add(wat(
        r#"(module (memory (export "memory") 1000) (func (export "_start")))"#,
    ));
    let mut req = request(&big);
    req.limits.memory_bytes = 16 << 20;
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::MemoryLimit,
        "{:?}",
        done.report.outcome
    );
    assert_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_count_against_the_memory_limit() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(wat(
        r#"(module (memory (export "memory") 1) (table $t 0 funcref)
             (func (export "_start")
               (loop $l (if (i32.ne (table.grow $t (ref.null func) (i32.const 50000)) (i32.const -1))
                            (then (br $l))))))"#,
    ));
    let mut req = request(&digest);
    req.limits.memory_bytes = 512 << 10; // 64 KiB of memory + 50 000 elements * 8 bytes is over
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::MemoryLimit,
        "{:?}",
        done.report.outcome
    );
    assert!(done.report.outcome.detail.unwrap().contains("table"));
    assert_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_become_signals_with_the_trap_message() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let cases = [
        (
            "(func $f (export \"_start\") (call $f))",
            11,
            "call stack exhausted",
        ),
        ("(func (export \"_start\") unreachable)", 6, "unreachable"),
        (
            "(func (export \"_start\") (drop (i32.div_s (i32.const 1) (i32.const 0))))",
            8,
            "divide by zero",
        ),
        (
            "(func (export \"_start\") (drop (i32.load (i32.const 70000))))",
            11,
            "out of bounds memory access",
        ),
    ];
    for (func, signal, message) in cases {
        let digest = store.add(wat(&format!(
            "(module (memory (export \"memory\") 1) {func})"
        )));
        let done = run(&backend, request(&digest)).await;
        let outcome = &done.report.outcome;
        assert_eq!(
            outcome.reason,
            OutcomeReason::Signaled,
            "{func}: {outcome:?}"
        );
        assert_eq!(outcome.signal, Some(signal), "{func}: {outcome:?}");
        let detail = outcome.detail.as_deref().unwrap_or_default();
        assert!(detail.contains(message), "{func}: {detail}");
        assert!(
            detail.len() <= 4200,
            "detail is bounded: {} bytes",
            detail.len()
        );
        assert_hello_works(&backend, &store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_jobs_all_succeed() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let backend = std::sync::Arc::new(backend);
    let digest = store.add(wat(HELLO));
    // More jobs than instance slots (16): the extra ones wait for a slot.
    let jobs: Vec<_> = (0..40)
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
        assert_eq!(done.stdout, b"hello, world\n");
    }
    assert_eq!(store.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_exit_codes_are_reported_exactly_and_traps_as_signals() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    // 126 and above used to be refused by wasmtime-wasi's `proc_exit` (a trap: signaled 6).
    for code in [0, 1, 125, 126, 127, 128, 134, 137, 200, 255] {
        let digest = store.add(guest(&format!("(call $proc_exit (i32.const {code}))"), ""));
        let done = run(&backend, request(&digest)).await;
        assert_eq!(
            done.report.outcome,
            Outcome::exited(code),
            "proc_exit({code})"
        );
    }
    // WASI's exit code is a u32; past 255 the job reads as a failure (255), with the value kept.
    for code in [256i64, 1000, 4_294_967_295] {
        let digest = store.add(guest(
            &format!("(call $proc_exit (i32.const {}))", code as u32 as i32),
            "",
        ));
        let outcome = run(&backend, request(&digest)).await.report.outcome;
        assert_eq!(
            (outcome.reason, outcome.exit_code),
            (OutcomeReason::Exited, Some(255)),
            "{outcome:?}"
        );
        assert!(
            outcome
                .detail
                .as_deref()
                .is_some_and(|d| d.contains(&format!("proc_exit({code})"))),
            "{outcome:?}"
        );
    }
    // A trap is a signal, with the trap in the detail.
    let digest = store.add(guest("unreachable", ""));
    let outcome = run(&backend, request(&digest)).await.report.outcome;
    assert_eq!(
        (outcome.reason, outcome.exit_code, outcome.signal),
        (OutcomeReason::Signaled, None, Some(6))
    );
    assert!(
        outcome
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("unreachable")),
        "{outcome:?}"
    );
    assert_hello_works(&backend, &store).await;
}
