//! How late a wall-time limit stops a spinning Wasm guest, through [`WasmBackend`], in-process.
//!
//! Run it (release build) with:
//!
//! ```text
//! cargo bench -p wasm-backend --bench wall_timeout
//! NEKTON_BENCH_RUNS=200 cargo bench -p wasm-backend --bench wall_timeout   # more runs per limit
//! ```
//!
//! For each wall limit (100 ms and 500 ms) it runs `NEKTON_BENCH_RUNS` (default 50) jobs one after
//! the other, each a guest spinning in `(loop (br 0))` with no fuel budget, on a two-thread tokio
//! runtime (as the worker has) and the default epoch tick (10 ms). Every job must end as
//! `wall_timeout`. It prints p50, p90, p99 and max of the overshoot `usage.wall − limit` (the
//! bill's wall time: from the end of instantiation to the guest's end) and of the caller's view
//! (from calling `run` to its report, which also holds setup and teardown).
//!
//! It measures, it asserts nothing about time: the figures depend on how busy the machine is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime_core::{
    Backend, CancellationToken, ExecRequest, JobIo, Limits, ModuleStore, OutcomeReason, OutputSink,
    Program,
};
use wasm_backend::{WasmBackend, WasmConfig, module_digest};

const SPIN: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

struct OneModule(Vec<u8>);

#[async_trait::async_trait]
impl ModuleStore for OneModule {
    async fn load(&self, _digest: &str) -> Result<Vec<u8>, runtime_core::ModuleStoreError> {
        Ok(self.0.clone())
    }
}

/// Signed milliseconds `a − b`.
fn minus_ms(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() * 1e3 - b.as_secs_f64() * 1e3
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "p50 {:+.2} ms, p90 {:+.2} ms, p99 {:+.2} ms, max {:+.2} ms",
        percentile(&values, 0.50),
        percentile(&values, 0.90),
        percentile(&values, 0.99),
        values.last().copied().unwrap_or(f64::NAN),
    )
}

fn main() {
    let runs: usize = std::env::var("NEKTON_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .max(1);
    let bytes = wat::parse_str(SPIN).expect("spin WAT");
    let digest = module_digest(&bytes);
    let cache = tempfile::tempdir().expect("temp dir");
    let config = WasmConfig {
        cache_dir: cache.path().to_path_buf(),
        ..WasmConfig::default()
    };
    let epoch_tick = config.epoch_tick;
    let backend = WasmBackend::new(config, Arc::new(OneModule(bytes))).expect("backend");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let request = |wall_time: Duration| ExecRequest {
        job_id: "bench".into(),
        program: Program::WasmModule {
            digest: digest.clone(),
        },
        args: vec![],
        env: vec![],
        stdin: vec![],
        files: vec![],
        limits: Limits {
            wall_time,
            cpu_time: None,
            memory_bytes: 64 << 20,
            fuel: None,
            output_bytes: 1 << 20,
            pids: None,
            disk_bytes: None,
        },
        container: Default::default(),
        chain: Default::default(),
        artifacts: Default::default(),
        wasm: Default::default(),
    };
    let run = |req: ExecRequest| {
        let (sink, _rx) = OutputSink::channel(1 << 20, 16);
        let io = JobIo {
            output: sink,
            cancel: CancellationToken::new(),
        };
        let t0 = Instant::now();
        let report = runtime.block_on(backend.run(req, io));
        (report, t0.elapsed())
    };

    // Warm-up: compile and cache the module.
    run(request(Duration::from_millis(20)));
    println!(
        "wasm wall timeout of a spinning guest: {runs} runs per limit, epoch tick {epoch_tick:?}, pooling allocator: {}",
        backend.uses_pooling_allocator()
    );
    for limit in [Duration::from_millis(100), Duration::from_millis(500)] {
        let mut reported = Vec::with_capacity(runs);
        let mut observed = Vec::with_capacity(runs);
        let mut wrong = 0usize;
        for _ in 0..runs {
            let (report, elapsed) = run(request(limit));
            if report.outcome.reason != OutcomeReason::WallTimeout {
                wrong += 1;
            }
            reported.push(minus_ms(report.usage.wall, limit));
            observed.push(minus_ms(elapsed, limit));
        }
        println!("limit {limit:?}: {wrong} of {runs} jobs did not end as wall_timeout");
        println!("  reported wall − limit: {}", summary(reported));
        println!("  caller's time − limit: {}", summary(observed));
    }
}
