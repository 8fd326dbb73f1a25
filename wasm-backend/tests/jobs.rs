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

/// Reads all of stdin (up to 60 KiB), then hashes it (FNV-1a, 32 bits) `rounds` times over,
/// printing the hash as 8 hex digits and a newline every 200 rounds and at the end.
fn fnv_guest(rounds: u32) -> Vec<u8> {
    wat(&format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "0123456789abcdef")
  ;; iovec at 0, nread/nwritten at 8, the hex line at 80..89, stdin from 4096 on
  (func $print_hex (param $h i32) (local $i i32)
    (loop $digit
      (i32.store8 (i32.add (i32.const 80) (local.get $i))
        (i32.load8_u (i32.add (i32.const 64)
          (i32.and
            (i32.shr_u (local.get $h) (i32.sub (i32.const 28) (i32.shl (local.get $i) (i32.const 2))))
            (i32.const 15)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $digit (i32.lt_u (local.get $i) (i32.const 8))))
    (i32.store8 (i32.const 88) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 80))
    (i32.store (i32.const 4) (i32.const 9))
    (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (then (unreachable))))
  (func (export "_start") (local $len i32) (local $n i32) (local $h i32) (local $round i32) (local $p i32)
    (loop $read
      (i32.store (i32.const 0) (i32.add (i32.const 4096) (local.get $len)))
      (i32.store (i32.const 4) (i32.sub (i32.const 61440) (local.get $len)))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)) (then (unreachable)))
      (local.set $n (i32.load (i32.const 8)))
      (local.set $len (i32.add (local.get $len) (local.get $n)))
      (br_if $read (i32.and (i32.ne (local.get $n) (i32.const 0))
                            (i32.lt_u (local.get $len) (i32.const 61440)))))
    (if (i32.eqz (local.get $len)) (then (unreachable)))
    (local.set $h (i32.const 0x811c9dc5))
    (loop $rounds
      (local.set $p (i32.const 0))
      (loop $byte
        (local.set $h (i32.mul
          (i32.xor (local.get $h) (i32.load8_u (i32.add (i32.const 4096) (local.get $p))))
          (i32.const 0x01000193)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br_if $byte (i32.lt_u (local.get $p) (local.get $len))))
      (local.set $round (i32.add (local.get $round) (i32.const 1)))
      (if (i32.eqz (i32.rem_u (local.get $round) (i32.const 200)))
        (then (call $print_hex (local.get $h))))
      (br_if $rounds (i32.lt_u (local.get $round) (i32.const {rounds}))))
    (call $print_hex (local.get $h))))
"#
    ))
}

/// What `fnv_guest(rounds)` prints for `input`.
fn fnv_expected(input: &[u8], rounds: u32) -> Vec<u8> {
    let mut h: u32 = 0x811c_9dc5;
    let mut out = Vec::new();
    for round in 1..=rounds {
        for &b in input {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        if round % 200 == 0 {
            out.extend_from_slice(format!("{h:08x}\n").as_bytes());
        }
    }
    out.extend_from_slice(format!("{h:08x}\n").as_bytes());
    out
}

/// Runs `req` `times` times, all at once (so epoch ticks, fuel-slice yields and host calls land at
/// different points of each run), and returns the results in order.
async fn run_many(
    backend: &std::sync::Arc<wasm_backend::WasmBackend>,
    req: &runtime_core::ExecRequest,
    times: usize,
) -> Vec<Finished> {
    let jobs: Vec<_> = (0..times)
        .map(|_| {
            let backend = backend.clone();
            let req = req.clone();
            tokio::spawn(async move { run(&backend, req).await })
        })
        .collect();
    let mut done = Vec::with_capacity(times);
    for job in jobs {
        done.push(job.await.unwrap());
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_consumed_and_the_verdict_are_the_same_on_every_run() {
    let store = MapStore::new();
    // A 1 ms epoch tick: the guest is interrupted (and yields) many times, at different points
    // on each run.
    let cache = tempfile::tempdir().unwrap();
    let config = wasm_backend::WasmConfig {
        epoch_tick: Duration::from_millis(1),
        ..common::config(cache.path())
    };
    let backend =
        std::sync::Arc::new(wasm_backend::WasmBackend::new(config, store.clone()).unwrap());
    let input: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
    // About 30 million units: dozens of fuel slices and, in a debug build, epoch ticks.
    let rounds = 2000;
    let digest = store.add(fnv_guest(rounds));
    let mut req = request(&digest);
    req.stdin = input.clone();
    req.limits.fuel = Some(1_000_000_000);
    let expected = fnv_expected(&input, rounds);

    let done = run_many(&backend, &req, 10).await;
    let first = done[0].report.usage.fuel_consumed.unwrap();
    assert!(first > 20_000_000, "the guest is not trivial: {first}");
    for (i, d) in done.iter().enumerate() {
        assert_eq!(d.report.outcome, Outcome::exited(0), "run {i}");
        assert_eq!(d.stdout, expected, "run {i}");
        assert_eq!(d.report.usage.fuel_consumed, Some(first), "run {i}");
    }
    // Without a budget the same work costs the same.
    req.limits.fuel = None;
    let unlimited = run(&backend, req.clone()).await;
    assert_eq!(unlimited.report.outcome, Outcome::exited(0));
    assert_eq!(unlimited.report.usage.fuel_consumed, Some(first));

    // Out of fuel halfway: the same verdict, the same figure and the same output every time.
    let budget = first / 2;
    req.limits.fuel = Some(budget);
    let done = run_many(&backend, &req, 10).await;
    let first_out = &done[0];
    assert_eq!(
        first_out.report.outcome.reason,
        OutcomeReason::CpuTimeout,
        "{:?}",
        first_out.report.outcome
    );
    assert!(
        !first_out.stdout.is_empty() && expected.starts_with(&first_out.stdout),
        "{:?}",
        String::from_utf8_lossy(&first_out.stdout)
    );
    assert_eq!(first_out.report.usage.fuel_consumed, Some(budget));
    for (i, d) in done.iter().enumerate() {
        assert_eq!(d.report.outcome, first_out.report.outcome, "run {i}");
        assert_eq!(d.stdout, first_out.stdout, "run {i}");
        assert_eq!(
            d.report.usage.fuel_consumed, first_out.report.usage.fuel_consumed,
            "run {i}"
        );
    }
    assert_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_peak_is_the_linear_memory_high_water_mark() {
    const PAGE: u64 = 65536;
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    // Starts with 3 pages, grows by 5 (2 then 3), then asks past its declared maximum of 8 pages
    // (memory.grow gives -1, nothing grows), checks its size and exits 0.
    let digest = store.add(wat(r#"
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 3 8)
  (func (export "_start")
    (if (i32.ne (memory.grow (i32.const 2)) (i32.const 3)) (then (call $proc_exit (i32.const 10))))
    (if (i32.ne (memory.grow (i32.const 3)) (i32.const 5)) (then (call $proc_exit (i32.const 11))))
    (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then (call $proc_exit (i32.const 12))))
    (if (i32.ne (memory.size) (i32.const 8)) (then (call $proc_exit (i32.const 13))))))
"#));
    let done = run(&backend, request(&digest)).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    let usage = &done.report.usage;
    assert_eq!(
        usage.wasm_memory_peak_bytes,
        Some((3 + 5) * PAGE),
        "{usage:?}"
    );
    // No table: the whole memory is the linear memory.
    assert_eq!(usage.memory_peak_bytes, Some((3 + 5) * PAGE), "{usage:?}");

    // A table counts in `memory_peak_bytes` (8 bytes an element), not in the linear memory.
    let digest = store.add(wat(r#"
(module
  (memory (export "memory") 2)
  (table $t 10 funcref)
  (func (export "_start")
    (drop (memory.grow (i32.const 4)))
    (drop (table.grow $t (ref.null func) (i32.const 90)))))
"#));
    let done = run(&backend, request(&digest)).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    let usage = &done.report.usage;
    assert_eq!(usage.wasm_memory_peak_bytes, Some(6 * PAGE), "{usage:?}");
    assert_eq!(
        usage.memory_peak_bytes,
        Some(6 * PAGE + 100 * 8),
        "{usage:?}"
    );

    // Stopped by the memory limit: the peak is what the guest had, not what it asked for. From
    // 1 page by 16 at a time under 16 MiB (256 pages): 241 pages granted, 257 refused.
    let digest = store.add(guest(
        "(loop $l (if (i32.ne (memory.grow (i32.const 16)) (i32.const -1)) (then (br $l)))) (call $proc_exit (i32.const 3))",
        "",
    ));
    let mut req = request(&digest);
    req.limits.memory_bytes = 256 * PAGE;
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::MemoryLimit);
    let usage = &done.report.usage;
    assert_eq!(usage.wasm_memory_peak_bytes, Some(241 * PAGE), "{usage:?}");
    assert_eq!(usage.memory_peak_bytes, Some(241 * PAGE), "{usage:?}");
    assert_hello_works(&backend, &store).await;
}

/// A pool slot keeps up to 1 MiB of a linear memory resident between jobs and resets it in place
/// (`engine.rs`, `KEEP_RESIDENT`): the next job on the slot still starts from the module's own
/// memory image — zeros, and its data segment as written — both inside the part kept resident and
/// past it. One slot, so every run reuses it.
#[tokio::test]
async fn a_pool_slot_shows_the_next_job_none_of_the_previous_jobs_memory() {
    let store = MapStore::new();
    let dir = tempfile::tempdir().unwrap();
    let config = wasm_backend::WasmConfig {
        max_concurrent_instances: 1,
        ..config(dir.path())
    };
    let backend = wasm_backend::WasmBackend::new(config, store.clone()).expect("backend");
    assert!(
        backend.uses_pooling_allocator(),
        "the pool should be available on this machine"
    );
    // Grows to 20 pages (1.25 MiB); exits 2 if its data segment is not as the module wrote it, 1
    // if any probed byte is not zero; then overwrites them all and exits 0.
    let probes = [2_000, 70_000, 1_000_000, 1_200_000];
    let seen = probes
        .iter()
        .map(|p| format!("(i32.load8_u (i32.const {p}))"))
        .reduce(|a, b| format!("(i32.or {a} {b})"))
        .unwrap();
    let dirty: String = probes
        .iter()
        .map(|p| format!("(i32.store8 (i32.const {p}) (i32.const 171))"))
        .collect();
    let digest = store.add(guest(
        &format!(
            "(if (i32.eq (memory.grow (i32.const 19)) (i32.const -1)) (then (unreachable)))
             (if (i32.ne (i32.load8_u (i32.const 1024)) (i32.const 104))
               (then (call $proc_exit (i32.const 2))))
             (if {seen} (then (call $proc_exit (i32.const 1))))
             (i32.store8 (i32.const 1024) (i32.const 88))
             {dirty}
             (call $proc_exit (i32.const 0))"
        ),
        "h",
    ));
    for i in 0..5 {
        let done = run(&backend, request(&digest)).await;
        assert_eq!(
            done.report.outcome,
            Outcome::exited(0),
            "run {i}: exit 1 = a byte of the previous job's memory, 2 = its data segment"
        );
    }
}
