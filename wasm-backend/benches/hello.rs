//! Per-job cost of a hello-world Wasm job through [`WasmBackend`], in-process.
//!
//! Run it (release build) with:
//!
//! ```text
//! CARGO_TARGET_DIR=/var/cache/nekton/target cargo bench -p wasm-backend --bench hello
//! NEKTON_BENCH_JOBS=50000 cargo bench -p wasm-backend --bench hello   # more jobs
//! ```
//!
//! It compiles the module once (warm-up), then runs `NEKTON_BENCH_JOBS` (default 20 000) jobs one
//! after the other on a single-threaded tokio runtime — each with a fresh output sink, a fresh
//! `Store` and instance, live stdout, and an empty root directory (from the pool of ready ones:
//! the job leaves it empty) — and prints the mean, p50 and p99 latency per job in
//! microseconds and the resulting jobs per second on one core. The design target
//! (docs/sandbox.md) is 33–100 µs per job.

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

struct OneModule(Vec<u8>);

#[async_trait::async_trait]
impl ModuleStore for OneModule {
    async fn load(&self, _digest: &str) -> Result<Vec<u8>, runtime_core::ModuleStoreError> {
        Ok(self.0.clone())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    let jobs: usize = std::env::var("NEKTON_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let bytes = wat::parse_str(HELLO).expect("hello WAT");
    let digest = module_digest(&bytes);
    let cache = tempfile::tempdir().expect("temp dir");
    let config = WasmConfig {
        cache_dir: cache.path().to_path_buf(),
        ..WasmConfig::default()
    };
    let backend = WasmBackend::new(config, Arc::new(OneModule(bytes))).expect("backend");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let request = ExecRequest {
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
            fuel: Some(1_000_000),
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
    };

    let mut latencies = Vec::with_capacity(jobs);
    let mut failures = 0usize;
    let total = runtime.block_on(async {
        // Warm-up: compile and cache the module, touch the pool slots.
        for _ in 0..100 {
            let (sink, _rx) = OutputSink::channel(1 << 20, 16);
            backend
                .run(
                    request.clone(),
                    JobIo {
                        output: sink,
                        cancel: CancellationToken::new(),
                    },
                )
                .await;
        }
        let started = Instant::now();
        for _ in 0..jobs {
            let t0 = Instant::now();
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
            latencies.push(t0.elapsed());
            if !report.outcome.is_success() || out != 13 {
                failures += 1;
            }
        }
        started.elapsed()
    });

    latencies.sort();
    let mean = total / jobs.max(1) as u32;
    println!(
        "wasm hello-world: {jobs} jobs, pooling allocator: {}, disk_bytes: {:?}, failures: {failures}",
        backend.uses_pooling_allocator(),
        request.limits.disk_bytes
    );
    println!(
        "per job: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs; {:.0} jobs/s on one thread",
        mean.as_secs_f64() * 1e6,
        percentile(&latencies, 0.50).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        jobs as f64 / total.as_secs_f64(),
    );
}
