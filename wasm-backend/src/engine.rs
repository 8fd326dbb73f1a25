//! The shared wasmtime [`Engine`] and the thread that advances its epoch.
//!
//! One engine per backend: fuel metering and epoch interruption are both compiled into every
//! module (a job without a fuel budget simply gets `u64::MAX` fuel), and instances come from the
//! pooling allocator sized by [`WasmConfig::max_concurrent_instances`]. The pool reserves a lot of
//! address space up front; when the host refuses (small `vm.max_map_count`, `ulimit -v`, ...) the
//! engine is created with on-demand allocation instead and the reason is logged.
//!
//! When a job ends, its pool slot's linear memory and tables are reset for the next job: up to
//! [`KEEP_RESIDENT`] bytes of each in place (with `PAGEMAP_SCAN` where the kernel has it, Linux
//! ≥ 6.7: only the pages the job touched), the rest returned to the kernel with `madvise`. An
//! `madvise` unmaps pages, and unmapping pages that other threads of the process may have cached
//! costs an inter-processor interrupt to flush their TLBs: one per job, on every core running a
//! worker thread. Resetting in place skips that for small guests (load-tests/README.md, "Wasm
//! pool slots kept resident": nekton's CPU per hello job −17 %). Either way the next job
//! starts from the module's own image (`tests/jobs.rs`,
//! `a_pool_slot_shows_the_next_job_none_of_the_previous_jobs_memory`). The cost: a slot that ran
//! a job keeps what that job touched of the first MiB of its memory and of each table resident
//! (a table holds at most [`POOL_TABLE_ELEMENTS`] × 8 bytes ≈ 800 KB): at most ≈ 1.8 MiB per pool
//! slot for a module, ≈ 4.2 MiB for a component (up to [`TABLES_PER_COMPONENT`] tables).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, WasmBacktraceDetails,
};

use crate::{WasmConfig, WasmError};

/// Largest number of elements a pooled table slot holds. A job's tables also count against its
/// memory limit (8 bytes per element), see [`crate::limits::JobLimiter`].
const POOL_TABLE_ELEMENTS: usize = 100_000;

/// Core instances one component job may have in the pool (a `wasm32-wasip2` program has its
/// module and two or three small shims); the pool holds this many per slot.
pub(crate) const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Tables one component job may have (its module's, and the shims' indirect-call tables).
const TABLES_PER_COMPONENT: u32 = 4;

/// Bytes of a pooled linear memory (and of a table) reset in place when its job ends instead of
/// returned to the kernel with `madvise` (see the module docs). A hello job's memory is one
/// 64 KiB page; a small Rust or C guest's stack and heap fit in 1 MiB.
const KEEP_RESIDENT: usize = 1 << 20;

/// The configuration shared by the pooled and the on-demand engine.
fn base_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .consume_fuel(true)
        // Don't let the worker's environment (`WASMTIME_BACKTRACE_DETAILS`) change compiled code
        // and the cache key; backtraces still name functions.
        .wasm_backtrace_details(WasmBacktraceDetails::Disable);
    config
}

/// Creates the engine: pooling allocator if possible, on-demand allocation otherwise.
pub(crate) fn create_engine(config: &WasmConfig) -> Result<Engine, WasmError> {
    let slots = config.max_concurrent_instances;
    let max_memory = usize::try_from(config.max_memory_bytes_per_instance).unwrap_or(usize::MAX);
    let mut pool = PoolingAllocationConfig::new();
    // A job is one core module instance, or one component instance made of up to
    // `CORE_INSTANCES_PER_COMPONENT` core instances with one linear memory between them; the
    // slot semaphore (`run.rs`) keeps the number of jobs at `slots`, so the pool always fits them.
    pool.total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots)
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(slots)
        .total_component_instances(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(1)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memories_per_module(1)
        .max_memory_size(max_memory)
        .table_elements(POOL_TABLE_ELEMENTS)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut pooled = base_config();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(engine) => {
            tracing::debug!(slots, max_memory, "wasm engine uses the pooling allocator");
            Ok(engine)
        }
        Err(pool_error) => {
            tracing::warn!(
                error = %crate::classify::render_error(&pool_error),
                slots,
                max_memory,
                "cannot reserve the wasmtime pooling allocator; falling back to on-demand instance allocation"
            );
            Engine::new(&base_config())
                .map_err(|e| WasmError::Engine(crate::classify::render_error(&e)))
        }
    }
}

/// A hex string naming the engine's compiled-code compatibility: artifacts compiled by an engine
/// with another hash cannot be loaded by this one.
pub(crate) fn compatibility_hash_hex(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: stable for a given toolchain, which is all the cache needs (wasmtime
    // additionally checks version and configuration when deserializing).
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The epoch ticker thread. Dropping the handle stops the thread (within one tick at most: it is
/// woken up at once).
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Ticker {
    /// Starts a thread that calls `engine.increment_epoch()` every `tick`. The thread holds only a
    /// weak reference to the engine, and ends when the handle is dropped or the engine is gone.
    pub(crate) fn spawn(engine: &Engine, tick: Duration) -> std::io::Result<Self> {
        let weak = engine.weak();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                let mut next = Instant::now() + tick;
                loop {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let now = Instant::now();
                    if now < next {
                        std::thread::park_timeout(next - now);
                        continue;
                    }
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    next += tick;
                    if next <= now {
                        // The thread was descheduled for several ticks: don't fire a burst.
                        next = now + tick;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: handle.thread().clone(),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}
