//! Per-job cost of a hello-world Wasm job through [`WasmBackend`], in-process: a core module, and
//! the same job as WASI 0.2 components.
//!
//! Run it (release build) with:
//!
//! ```text
//! CARGO_TARGET_DIR=/var/cache/nekton/target cargo bench -p wasm-backend --bench hello
//! NEKTON_BENCH_JOBS=50000 cargo bench -p wasm-backend --bench hello   # more jobs
//! ```
//!
//! For each guest it compiles the program once (warm-up), then runs `NEKTON_BENCH_JOBS` (default
//! 20 000) jobs one after the other on a single-threaded tokio runtime — each with a fresh output
//! sink, a fresh `Store` and instance, live stdout, and an empty root directory (from the pool of
//! ready ones: the job leaves it empty) — and prints the mean, p50 and p99 latency per job in
//! microseconds and the resulting jobs per second on one core. The design target
//! (docs/sandbox.md) is 33–100 µs per job; a hello component must cost at most twice a hello core
//! module (issue 12). The guests, interleaved in rounds of 1000 jobs so that a change in the
//! machine's load hits them alike:
//!
//! - `core`: a WAT core module writing `hello, world\n` with one `fd_write`;
//! - `component`: a WAT component writing it with one `blocking-write-and-flush` on
//!   `wasi:cli/stdout` (the same work as a component);
//! - `rust-component`: `fn main() { println!("hello, world") }` built by `rustc --target
//!   wasm32-wasip2` (wasi-libc's start-up: arguments, environment, preopens, stdio), when the
//!   target is installed (`scripts/setup-test.sh`), skipped with a note otherwise.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime_core::{
    Backend, CancellationToken, ExecRequest, JobIo, Limits, ModuleStore, OutputSink, Program,
};
use wasm_backend::{WasmBackend, WasmConfig, module_digest};

const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello, world\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// `hello, world\n` on `wasi:cli/stdout` with one `blocking-write-and-flush`; `run` returns `ok`.
const HELLO_COMPONENT: &str = r#"
(component $C
  (import "wasi:io/error@0.2.0" (instance $error (export "error" (type (sub resource)))))
  (alias export $error "error" (type $error-t))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer $C $error-t (type $err))
    (export "error" (type $err2 (eq $err)))
    (export "output-stream" (type $os (sub resource)))
    (type $se (variant (case "last-operation-failed" (own $err2)) (case "closed")))
    (export "stream-error" (type $se2 (eq $se)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $os)) (param "contents" (list u8)) (result (result (error $se2)))))))
  (alias export $streams "output-stream" (type $os-t))
  (alias export $streams "[method]output-stream.blocking-write-and-flush" (func $bwf))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer $C $os-t (type $os))
    (export "get-stdout" (func (result (own $os))))))
  (core module $Mem (memory (export "memory") 1))
  (core instance $mem (instantiate $Mem))
  (alias core export $mem "memory" (core memory $m))
  (core func $bwf-lo (canon lower (func $bwf) (memory $m)))
  (core func $stdout-lo (canon lower (func $stdout "get-stdout")))
  (core module $Main
    (import "host" "memory" (memory 1))
    (import "host" "bwf" (func $bwf (param i32 i32 i32 i32)))
    (import "host" "stdout" (func $stdout (result i32)))
    (data (i32.const 64) "hello, world\n")
    (func (export "run") (result i32)
      (call $bwf (call $stdout) (i32.const 64) (i32.const 13) (i32.const 16))
      (i32.load8_u (i32.const 16))))
  (core instance $main (instantiate $Main (with "host" (instance
    (export "memory" (memory $m)) (export "bwf" (func $bwf-lo)) (export "stdout" (func $stdout-lo))))))
  (func $run (result (result)) (canon lift (core func $main "run")))
  (instance $runinst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $runinst)))
"#;

/// The guests by digest.
struct Modules(HashMap<String, Vec<u8>>);

#[async_trait::async_trait]
impl ModuleStore for Modules {
    async fn load(&self, digest: &str) -> Result<Vec<u8>, runtime_core::ModuleStoreError> {
        self.0
            .get(digest)
            .cloned()
            .ok_or_else(|| runtime_core::ModuleStoreError::Missing(digest.to_owned()))
    }
}

/// `println!("hello, world")` built for `wasm32-wasip2`, or why not.
fn rust_hello(dir: &Path) -> Result<Vec<u8>, String> {
    let src = dir.join("hello.rs");
    let out = dir.join("hello.wasm");
    std::fs::write(&src, "fn main() { println!(\"hello, world\"); }\n")
        .map_err(|e| e.to_string())?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = std::process::Command::new(rustc)
        .args(["--edition", "2021", "-O", "--target", "wasm32-wasip2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .map_err(|e| e.to_string())?;
    if !built.status.success() {
        return Err(format!(
            "rustc --target wasm32-wasip2 failed (`rustup target add wasm32-wasip2`): {}",
            String::from_utf8_lossy(&built.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    std::fs::read(&out).map_err(|e| e.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn request(digest: String) -> ExecRequest {
    ExecRequest {
        job_id: "bench".into(),
        program: Program::WasmModule { digest },
        args: vec![],
        env: vec![],
        stdin: vec![],
        files: vec![],
        limits: Limits {
            wall_time: Duration::from_secs(10),
            cpu_time: None,
            memory_bytes: 64 << 20,
            fuel: Some(10_000_000),
            output_bytes: 1 << 20,
            pids: None,
            // NEKTON_BENCH_DISK_BYTES=<n>: jobs with a disk cap (a tmpfs per job when root).
            disk_bytes: std::env::var("NEKTON_BENCH_DISK_BYTES")
                .ok()
                .and_then(|v| v.parse().ok()),
        },
        container: Default::default(),
        chain: Default::default(),
        artifacts: Default::default(),
        wasm: Default::default(),
    }
}

/// One job; whether it printed the hello line and succeeded.
async fn one(backend: &WasmBackend, request: &ExecRequest) -> bool {
    let (sink, mut rx) = OutputSink::channel(1 << 20, 16);
    let report = backend
        .run(
            request.clone(),
            JobIo {
                output: sink,
                cancel: CancellationToken::new(),
            },
        )
        .await;
    let mut out = 0;
    while let Ok(chunk) = rx.try_recv() {
        out += chunk.data.len();
    }
    report.outcome.is_success() && out == 13
}

struct Guest {
    name: &'static str,
    request: ExecRequest,
    latencies: Vec<Duration>,
    busy: Duration,
    failures: usize,
}

fn main() {
    let jobs: usize = std::env::var("NEKTON_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let work = tempfile::tempdir().expect("temp dir");
    let mut programs = vec![
        ("core", wat::parse_str(HELLO).expect("hello WAT")),
        (
            "component",
            wat::parse_str(HELLO_COMPONENT).expect("hello component WAT"),
        ),
    ];
    match rust_hello(work.path()) {
        Ok(bytes) => programs.push(("rust-component", bytes)),
        Err(why) => println!("rust-component skipped: {why}"),
    }
    let mut modules = HashMap::new();
    let mut guests: Vec<Guest> = programs
        .into_iter()
        .map(|(name, bytes)| {
            let digest = module_digest(&bytes);
            modules.insert(digest.clone(), bytes);
            Guest {
                name,
                request: request(digest),
                latencies: Vec::with_capacity(jobs),
                busy: Duration::ZERO,
                failures: 0,
            }
        })
        .collect();
    let config = WasmConfig {
        cache_dir: work.path().join("cache"),
        ..WasmConfig::default()
    };
    let backend = WasmBackend::new(config, Arc::new(Modules(modules))).expect("backend");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    runtime.block_on(async {
        // Warm-up: compile and cache each guest, touch the pool slots.
        for guest in &guests {
            for _ in 0..100 {
                one(&backend, &guest.request).await;
            }
        }
        let mut done = 0;
        while done < jobs {
            let round = (jobs - done).min(1000);
            for guest in &mut guests {
                let started = Instant::now();
                for _ in 0..round {
                    let t0 = Instant::now();
                    let ok = one(&backend, &guest.request).await;
                    guest.latencies.push(t0.elapsed());
                    guest.failures += usize::from(!ok);
                }
                guest.busy += started.elapsed();
            }
            done += round;
        }
    });

    println!(
        "wasm hello-world: {jobs} jobs per guest, pooling allocator: {}, disk_bytes: {:?}",
        backend.uses_pooling_allocator(),
        guests[0].request.limits.disk_bytes
    );
    let mut core_p50 = None;
    for guest in &mut guests {
        guest.latencies.sort();
        let p50 = percentile(&guest.latencies, 0.50);
        let ratio = match core_p50 {
            None => {
                core_p50 = Some(p50);
                String::new()
            }
            Some(core) => format!(
                ", p50 {:.2}× the core module's",
                p50.as_secs_f64() / core.as_secs_f64()
            ),
        };
        let mean = guest.busy / jobs.max(1) as u32;
        println!(
            "{:>14}: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs; {:.0} jobs/s on one thread; \
             failures: {}{ratio}",
            guest.name,
            mean.as_secs_f64() * 1e6,
            p50.as_secs_f64() * 1e6,
            percentile(&guest.latencies, 0.99).as_secs_f64() * 1e6,
            jobs as f64 / guest.busy.as_secs_f64(),
            guest.failures,
        );
    }
}
