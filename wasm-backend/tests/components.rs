//! WASI 0.2 components through the same backend API as core modules: output, stdin, exit codes,
//! fuel, memory, wall time, cancel, the bill, the job's filesystem, the on-disk cache, and the
//! refusal of network imports. The Rust guest (`guests/component.rs`) is compiled at test time
//! for `wasm32-wasip2` (installed by `scripts/setup-test.sh`); the small hand-written ones are WAT.

mod common;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use runtime_core::{Backend, CancellationToken, JobIo, Outcome, OutcomeReason, OutputSink};
use wasm_backend::{ModuleKind, WasmBackend, validate_module};

#[path = "guests/build_component.rs"]
mod build;

/// The test component, built once per test binary.
fn component() -> Vec<u8> {
    static BUILT: OnceLock<Vec<u8>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build::build_component(Path::new(env!("CARGO_TARGET_TMPDIR")), "wasm-backend")
        })
        .clone()
}

fn with_args(digest: &str, args: &[&str]) -> runtime_core::ExecRequest {
    let mut req = request(digest);
    req.args = args.iter().map(|a| a.to_string()).collect();
    req
}

/// A component whose `run` calls `wasi:cli/exit.exit-with-code(code)`.
fn exit_with_code(code: u8) -> Vec<u8> {
    wat(&format!(
        r#"
(component
  (import "wasi:cli/exit@0.2.0" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $ewc (canon lower (func $exit "exit-with-code")))
  (core module $m
    (import "host" "ewc" (func $ewc (param i32)))
    (func (export "run") (result i32) (call $ewc (i32.const {code})) (i32.const 0)))
  (core instance $i (instantiate $m (with "host" (instance (export "ewc" (func $ewc))))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $runinst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $runinst)))
"#
    ))
}

/// A component whose `run` returns `err` (exit code 1) or `ok` (0) without any import.
fn run_returns(error: bool) -> Vec<u8> {
    wat(&format!(
        r#"
(component
  (core module $m (func (export "run") (result i32) (i32.const {})))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $runinst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $runinst)))
"#,
        u8::from(error)
    ))
}

/// A command component that imports `import` (an instance with one function, never called).
fn importing(import: &str) -> Vec<u8> {
    wat(&format!(
        r#"
(component
  (import "{import}" (instance (export "f" (func))))
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $runinst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $runinst)))
"#
    ))
}

async fn assert_component_hello_works(backend: &WasmBackend, store: &MapStore) {
    let digest = store.add(component());
    let done = run(backend, with_args(&digest, &["hello"])).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    assert_eq!(done.stdout, b"hello from a component\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_prints_and_exits_zero_with_a_bill() {
    let bytes = component();
    assert_eq!(validate_module(&bytes, 64 << 20), Ok(ModuleKind::Component));
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(bytes);
    let done = run(&backend, with_args(&digest, &["hello"])).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    assert_eq!(done.stdout, b"hello from a component\n");
    assert_eq!(done.stderr, b"and its stderr\n");
    let usage = &done.report.usage;
    assert!(usage.fuel_consumed.is_some_and(|f| f > 0), "{usage:?}");
    assert!(
        usage.wasm_memory_peak_bytes.is_some_and(|m| m >= 65536),
        "{usage:?}"
    );
    assert!(usage.wall > Duration::ZERO, "{usage:?}");

    // Compiled once: a second backend over the same cache loads it from disk, without the store.
    let calls = store.calls();
    let cache = backend.module_cache_dir().to_path_buf();
    drop(backend);
    let again = WasmBackend::new(config(cache.parent().unwrap()), store.clone()).unwrap();
    let done = run(&again, with_args(&digest, &["hello"])).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    assert_eq!(done.stdout, b"hello from a component\n");
    assert_eq!(store.calls(), calls, "the component was fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_reads_stdin_args_and_env() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(component());
    let mut req = with_args(&digest, &["cat"]);
    req.stdin = b"line one\nline two\n".to_vec();
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    assert_eq!(done.stdout, b"line one\nline two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_exit_codes_are_reported_exactly() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let rust = store.add(component());
    // Rust's `process::exit` on wasip2 goes through `wasi:cli/exit.exit`: 0 or 1.
    for (code, expected) in [("0", 0), ("1", 1)] {
        let done = run(&backend, with_args(&rust, &["exit", code])).await;
        assert_eq!(
            done.report.outcome,
            Outcome::exited(expected),
            "exit {code}"
        );
    }
    // `exit-with-code` gives any u8, including those a native shell reads as signals.
    for code in [0u8, 3, 126, 127, 134, 255] {
        let digest = store.add(exit_with_code(code));
        let done = run(&backend, request(&digest)).await;
        assert_eq!(
            done.report.outcome,
            Outcome::exited(i32::from(code)),
            "exit-with-code {code}"
        );
    }
    // `run` returning its error is exit code 1; returning ok is 0.
    for (error, expected) in [(true, 1), (false, 0)] {
        let digest = store.add(run_returns(error));
        let done = run(&backend, request(&digest)).await;
        assert_eq!(done.report.outcome, Outcome::exited(expected));
    }
    // A panic is a trap: signaled, with the trap in the detail.
    let done = run(&backend, with_args(&rust, &["panic"])).await;
    let outcome = &done.report.outcome;
    assert_eq!(
        (outcome.reason, outcome.signal),
        (OutcomeReason::Signaled, Some(libc_sigabrt())),
        "{outcome:?}"
    );
    assert!(
        outcome
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("unreachable")),
        "{outcome:?}"
    );
    assert!(String::from_utf8_lossy(&done.stderr).contains("panicked on purpose"));
}

fn libc_sigabrt() -> i32 {
    6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_hits_its_fuel_budget() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(component());
    let mut req = with_args(&digest, &["spin"]);
    req.limits.fuel = Some(5_000_000);
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::CpuTimeout,
        "{:?}",
        done.report.outcome
    );
    let consumed = done.report.usage.fuel_consumed.unwrap();
    assert!(
        (4_900_000..=5_000_000).contains(&consumed),
        "consumed {consumed}"
    );
    assert_component_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_hits_its_memory_limit_and_wall_time() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(component());
    let mut req = with_args(&digest, &["alloc"]);
    req.limits.memory_bytes = 32 << 20;
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::MemoryLimit,
        "{:?}",
        done.report.outcome
    );
    let peak = done.report.usage.memory_peak_bytes.unwrap();
    assert!((16 << 20..=32 << 20).contains(&peak), "peak {peak}");

    let mut req = with_args(&digest, &["spin"]);
    req.limits.wall_time = Duration::from_millis(200);
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome.reason,
        OutcomeReason::WallTimeout,
        "{:?}",
        done.report.outcome
    );
    assert_component_hello_works(&backend, &store).await;
}

/// What a report says apart from the numbers: the outcome's fields (digits in `detail` as `#`)
/// and which parts of the bill are measured.
fn record_shape(report: &runtime_core::ExecReport) -> (String, String, [bool; 10]) {
    let outcome = &report.outcome;
    let detail: String = outcome
        .detail
        .as_deref()
        .unwrap_or("<none>")
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let mut detail = detail;
    while detail.contains("##") {
        detail = detail.replace("##", "#");
    }
    let u = &report.usage;
    let measured = [
        u.setup > Duration::ZERO,
        u.wall > Duration::ZERO,
        u.memory_peak_bytes.is_some(),
        u.pids_peak.is_some(),
        u.pids_limit_hit.is_some(),
        u.disk_used_bytes.is_some(),
        u.fuel_consumed.is_some(),
        u.wasm_memory_peak_bytes.is_some(),
        u.net_rx_bytes.is_some(),
        u.net_tx_bytes.is_some(),
    ];
    let head = format!(
        "{:?} exit {:?} signal {:?}",
        outcome.reason, outcome.exit_code, outcome.signal
    );
    (head, detail, measured)
}

/// The fuel and memory limits give a component the same records as a core module: the same
/// reason, exit code and signal, the same detail but for its numbers, the same parts of the bill
/// measured, and the numbers within the same bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_and_memory_limits_give_a_component_the_records_of_a_core_module() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let rust = store.add(component());
    let core_spin = store.add(guest("(loop $l (br $l))", ""));
    let core_grow = store.add(guest(
        "(loop $l (if (i32.ne (memory.grow (i32.const 16)) (i32.const -1)) (then (br $l)))) \
         (call $proc_exit (i32.const 3))",
        "",
    ));

    let budget = 5_000_000;
    let mut fuel = Vec::new();
    for mut req in [request(&core_spin), with_args(&rust, &["spin"])] {
        req.limits.fuel = Some(budget);
        fuel.push(run(&backend, req).await.report);
    }
    let (core, comp) = (&fuel[0], &fuel[1]);
    assert_eq!(core.outcome.reason, OutcomeReason::CpuTimeout, "{core:?}");
    assert_eq!(
        record_shape(comp),
        record_shape(core),
        "{comp:?}\nvs\n{core:?}"
    );
    for report in [core, comp] {
        let consumed = report.usage.fuel_consumed.unwrap();
        assert!(
            (budget - 100_000..=budget).contains(&consumed),
            "consumed {consumed}: {report:?}"
        );
    }

    let limit = 32u64 << 20;
    let mut memory = Vec::new();
    for mut req in [request(&core_grow), with_args(&rust, &["alloc"])] {
        req.limits.memory_bytes = limit;
        memory.push(run(&backend, req).await.report);
    }
    let (core, comp) = (&memory[0], &memory[1]);
    assert_eq!(core.outcome.reason, OutcomeReason::MemoryLimit, "{core:?}");
    assert_eq!(
        record_shape(comp),
        record_shape(core),
        "{comp:?}\nvs\n{core:?}"
    );
    for report in [core, comp] {
        let peak = report.usage.memory_peak_bytes.unwrap();
        let wasm_peak = report.usage.wasm_memory_peak_bytes.unwrap();
        assert!(
            (limit - (2 << 20)..=limit).contains(&peak),
            "peak {peak}: {report:?}"
        );
        assert!(wasm_peak <= peak, "{report:?}");
    }
    assert_component_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_streams_live_and_is_cancelled() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(component());
    for mode in ["ticks", "spin"] {
        let (sink, mut rx) = OutputSink::channel(1 << 20, 64);
        let cancel = CancellationToken::new();
        let io = JobIo {
            output: sink.clone(),
            cancel: cancel.clone(),
        };
        let job = {
            let req = with_args(&digest, &[mode]);
            let backend = &backend;
            async move { backend.run(req, io).await }
        };
        tokio::pin!(job);
        let report = if mode == "ticks" {
            // The first line arrives while the job still runs.
            let first = tokio::select! {
                chunk = rx.recv() => chunk.expect("a first chunk"),
                report = &mut job => panic!("the job ended before printing: {report:?}"),
            };
            assert!(first.data.starts_with(b"tick 0\n"), "{:?}", first.data);
            cancel.cancel();
            job.await
        } else {
            let canceller = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                canceller.cancel();
            });
            job.await
        };
        assert_eq!(
            report.outcome.reason,
            OutcomeReason::Cancelled,
            "{mode}: {:?}",
            report.outcome
        );
    }
    assert_component_hello_works(&backend, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_sees_the_job_files_at_the_root_and_nothing_else() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    let digest = store.add(component());
    let mut req = with_args(&digest, &["files"]);
    req.files = vec![file("in/data.txt", b"input")];
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome,
        Outcome::exited(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "ls / = in\ndata = input\nout = written\n"
    );
    // A later job does not see the first one's files.
    let done = run(&backend, with_args(&digest, &["files"])).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.starts_with("ls / = \n"), "{stdout}");
}

/// The mount points at or below `dir` (from `/proc/self/mountinfo`).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
        .filter(|point| point.starts_with(&dir))
        .collect()
}

/// Bytes of the regular files below `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            total += bytes_under(&entry.path());
        } else if kind.is_file() {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}

/// A component writing 1 GiB under `disk_bytes` 16 MiB: the write fails inside the guest at the
/// cap, the job ends with the guest's own exit code, the bill shows about the cap, and the job's
/// tmpfs is gone afterwards (no mount, no byte left under the backend's scratch directory).
///
/// The host hands the guest the ENOSPC: a component that asks `wasi:filesystem/types.
/// filesystem-error-code` about the failed stream write gets `insufficient-space` (the WAT
/// component). wasi-libc's wasip2 `write` (what Rust's `std` uses on `wasm32-wasip2`) never asks:
/// it turns every `stream-error::last-operation-failed` into EIO (errno 29), so the Rust guest
/// sees EIO — a loss inside the guest's libc, which the backend cannot change
/// (docs/sandbox.md, "Components and ENOSPC").
///
/// Needs root (to mount the tmpfs), as the worker has in production; like `filesystem.rs`'s
/// `writes_past_disk_bytes_fail_with_enospc_inside_the_guest`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_writing_1_gib_under_16_mib_gets_enospc_and_exits_by_itself() {
    let store = MapStore::new();
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut config = config(cache.path());
    config.scratch_dir = Some(scratch.path().to_path_buf());
    let backend = WasmBackend::new(config, store.clone()).unwrap();
    let cap = 16u64 << 20;
    let mounts_before = mounts_under(scratch.path());
    let bytes_before = bytes_under(scratch.path());

    let raw = store.add(component_wat::fill(1024));
    let rust = store.add(component());
    for (digest, args) in [(&raw, vec![]), (&rust, vec!["fill", "1024"])] {
        let mut req = with_args(digest, &args);
        req.limits.disk_bytes = Some(cap);
        let done = run(&backend, req).await;
        let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
        if digest == &raw {
            assert_eq!(
                done.report.outcome,
                Outcome::exited(100 + i32::from(component_wat::INSUFFICIENT_SPACE)),
                "the failed write's filesystem-error-code must be insufficient-space (needs \
                 root to mount the tmpfs): {done:?}",
                done = done.report
            );
        } else {
            // Rust's own exit code after the failed write; the errno is wasi-libc's EIO.
            assert_eq!(done.report.outcome, Outcome::exited(1), "{stdout}");
            let written: u64 = stdout
                .strip_prefix("fill: errno 29 after ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("the write must fail with EIO past the cap: {stdout}"));
            assert!(written <= cap, "{stdout}");
        }
        let used = done
            .report
            .usage
            .disk_used_bytes
            .expect("a capped directory is measured");
        assert!((cap - (1 << 20)..=cap).contains(&used), "used {used}");
        // The job's tmpfs, and the 16 MiB in it, are gone.
        assert_eq!(mounts_under(scratch.path()), mounts_before);
        assert_eq!(bytes_under(scratch.path()), bytes_before);
        assert_no_job_files(scratch.path());
    }
    // Within the cap the same writes succeed.
    let mut req = request(&store.add(component_wat::fill(8)));
    req.limits.disk_bytes = Some(cap);
    assert_eq!(run(&backend, req).await.report.outcome, Outcome::exited(0));
    let mut req = with_args(&rust, &["fill", "8"]);
    req.limits.disk_bytes = Some(cap);
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    assert_eq!(done.stdout, b"fill: ok, 8388608 bytes\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_imports_and_non_commands_are_spec_errors() {
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    for import in [
        "wasi:sockets/tcp@0.2.0",
        "wasi:sockets/instance-network@0.2.0",
        "wasi:http/outgoing-handler@0.2.0",
    ] {
        let bytes = importing(import);
        let refused = validate_module(&bytes, 1 << 20).unwrap_err();
        assert!(
            refused.contains(import) && refused.contains("network"),
            "{refused}"
        );
        let digest = store.add(bytes);
        let done = run(&backend, request(&digest)).await;
        let outcome = &done.report.outcome;
        assert_eq!(
            outcome.reason,
            OutcomeReason::SpecError,
            "{import}: {outcome:?}"
        );
        assert!(
            outcome
                .detail
                .as_deref()
                .is_some_and(|d| d.contains(import) && d.contains("network")),
            "{outcome:?}"
        );
    }
    // Not a command: no `wasi:cli/run` export.
    let library = wat(r#"(component (core module $m (func (export "f"))))"#);
    assert!(
        validate_module(&library, 1 << 20)
            .unwrap_err()
            .contains("wasi:cli/run")
    );
    let digest = store.add(library);
    let outcome = run(&backend, request(&digest)).await.report.outcome;
    assert_eq!(outcome.reason, OutcomeReason::SpecError, "{outcome:?}");
    assert!(
        outcome
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("wasi:cli/run")),
        "{outcome:?}"
    );
    // An import nobody provides: refused at upload, a link error at run time.
    let unknown = importing("example:thing/api@1.0.0");
    assert!(
        validate_module(&unknown, 1 << 20)
            .unwrap_err()
            .contains("example:thing/api")
    );
    let digest = store.add(unknown);
    let outcome = run(&backend, request(&digest)).await.report.outcome;
    assert_eq!(outcome.reason, OutcomeReason::SpecError, "{outcome:?}");
    assert_component_hello_works(&backend, &store).await;
}
