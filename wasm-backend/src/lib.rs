//! nekton's in-process WebAssembly backend.
//!
//! [`WasmBackend`] runs [`Program::WasmModule`] jobs — WASI preview 1 *command* modules and WASI
//! 0.2 *command components* (exporting `wasi:cli/run`), named by the sha256 digest of their
//! bytes — inside the worker process with wasmtime:
//!
//! - One shared [`wasmtime::Engine`] per backend, with the pooling instance allocator (falling back to
//!   on-demand allocation when the pool cannot be reserved), epoch interruption and fuel metering.
//!   A background thread advances the engine's epoch every [`WasmConfig::epoch_tick`].
//! - Modules and components are compiled once per digest: the bytes from the [`ModuleStore`] are
//!   checked against the digest, bounded in size, told apart by their header, compiled on a
//!   blocking thread under a time limit, and the compiled artifact is cached on disk
//!   (`cache_dir/<engine hash>/<digest hex>.cwasm`) and in memory, ready to instantiate (imports
//!   resolved once). Repeat jobs only create a `Store` and instantiate. A component importing
//!   `wasi:sockets` or `wasi:http` is refused before instantiation (`spec_error`): jobs have no
//!   network.
//! - Each job gets a fresh `Store` with one WASI context (args, env, stdin, and an empty
//!   directory of its own holding its input files, preopened read-write at `/` (or as the job's
//!   `wasm.preopens` lay it out), a tmpfs capped
//!   at `limits.disk_bytes` when the worker may mount; see `jobdir`), reached through WASI
//!   preview 1 by a core module and through the WASI 0.2 interfaces by a component;
//!   stdout/stderr streamed live through the job's [`OutputSink`](runtime_core::OutputSink),
//!   and its limits: linear memory and tables ([`ResourceLimiter`](wasmtime::ResourceLimiter)),
//!   wall time (epoch deadline + a timer), a fuel budget (deterministic CPU), the output cap,
//!   and cancellation.
//! - Every way a job can end becomes an [`Outcome`](runtime_core::Outcome); a trap or a limit never
//!   panics the worker and leaves the backend ready for the next job. Exit codes are reported
//!   exactly (0..=255; see `classify::exit_outcome`).
//!
//! The free functions [`validate_module`] and [`module_digest`] let the API refuse bad uploads before
//! storing anything and name modules the way this backend expects.

mod cache;
mod classify;
mod engine;
mod jobdir;
mod limits;
mod run;
mod validate;
mod wasi_io;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runtime_core::{Backend, ExecReport, ExecRequest, JobIo, ModuleStore, Program};

pub use validate::{ModuleKind, module_digest, validate_module};

/// Most empty job directories (of each kind: plain, tmpfs) kept ready between jobs.
const MAX_IDLE_JOB_DIRS: usize = 64;

/// Configuration of a [`WasmBackend`]. Every field has a default (see [`WasmConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmConfig {
    /// Where compiled modules are cached on disk, as
    /// `cache_dir/<engine compatibility hash>/<digest hex>.cwasm`. Only this backend should write
    /// there: cached artifacts are loaded as trusted native code.
    /// Default: `$TMPDIR/nekton-wasm-cache`.
    pub cache_dir: PathBuf,
    /// Where per-job directories are created: in a private `nekton-wasm-jobs-<pid>.<start>.XXXXXX`
    /// directory made when the backend starts and removed with it (or, if the process is killed,
    /// by the next backend that starts here). Each job gets an empty one of its own,
    /// preopened at the guest's `/`; one the job left empty is kept for a later job, any other
    /// removed when the job ends (see `jobdir.rs`). `None` means the system temporary directory.
    /// Default: `None`.
    pub scratch_dir: Option<PathBuf>,
    /// Largest module accepted from the module store, in bytes. Default: 64 MiB.
    pub max_module_bytes: usize,
    /// Longest a module compilation may take; past it the job ends with `spec_error`.
    /// Default: 30 s.
    pub max_compile_time: Duration,
    /// Instances that may run at once (the size of the pooling allocator); further jobs wait for a
    /// free slot. Default: 256.
    pub max_concurrent_instances: u32,
    /// Ceiling on one instance's linear memory, whatever a job asks for (the pool reserves address
    /// space for this much per slot). A job's own limit is `ExecRequest.limits.memory_bytes`.
    /// Default: 4 GiB.
    pub max_memory_bytes_per_instance: u64,
    /// How often the engine's epoch advances: the granularity of wall-time checks, cancellation of
    /// a spinning guest, and cooperative yields. Default: 10 ms.
    pub epoch_tick: Duration,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            cache_dir: std::env::temp_dir().join("nekton-wasm-cache"),
            scratch_dir: None,
            max_module_bytes: 64 << 20,
            max_compile_time: Duration::from_secs(30),
            max_concurrent_instances: 256,
            max_memory_bytes_per_instance: 4 << 30,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// Why a [`WasmBackend`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// A configuration value is out of range.
    #[error("invalid wasm backend configuration: {0}")]
    InvalidConfig(String),
    /// The module cache directory could not be created.
    #[error("cannot create the module cache directory {path}: {source}")]
    CacheDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// wasmtime refused the engine configuration (even without the pooling allocator).
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// The WASI preview 1 host functions could not be registered.
    #[error("cannot register the WASI preview 1 host functions: {0}")]
    Linker(String),
    /// The directory for job directories could not be created.
    #[error("cannot create the wasm job directories under {path}: {source}")]
    ScratchDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The epoch ticker thread could not be started.
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(#[source] std::io::Error),
}

/// The in-process wasmtime backend. See the [crate documentation](crate).
///
/// Cheap to share (`Arc<WasmBackend>`) and safe to call from many tasks at once. Dropping it stops
/// the epoch ticker thread.
pub struct WasmBackend {
    inner: Arc<run::Shared>,
    _ticker: engine::Ticker,
}

impl WasmBackend {
    /// Creates the engine (pooling allocator if possible), the WASI linker and the module cache,
    /// and starts the epoch ticker thread. Module bytes not yet cached are fetched from `modules`.
    pub fn new(config: WasmConfig, modules: Arc<dyn ModuleStore>) -> Result<Self, WasmError> {
        if config.epoch_tick.is_zero() {
            return Err(WasmError::InvalidConfig(
                "epoch_tick must be greater than zero".into(),
            ));
        }
        if config.max_concurrent_instances == 0 {
            return Err(WasmError::InvalidConfig(
                "max_concurrent_instances must be at least 1".into(),
            ));
        }
        if config.max_module_bytes == 0 {
            return Err(WasmError::InvalidConfig(
                "max_module_bytes must be greater than zero".into(),
            ));
        }
        let engine = engine::create_engine(&config)?;
        let linkers = run::create_linkers(&engine)?;
        let cache = cache::ModuleCache::new(&config, engine.clone(), linkers, modules)?;
        let ticker =
            engine::Ticker::spawn(&engine, config.epoch_tick).map_err(WasmError::Ticker)?;
        let max_idle = usize::try_from(config.max_concurrent_instances)
            .unwrap_or(usize::MAX)
            .min(MAX_IDLE_JOB_DIRS);
        let dirs =
            jobdir::DirPool::new(config.scratch_dir.as_deref(), max_idle).map_err(|source| {
                WasmError::ScratchDir {
                    path: config
                        .scratch_dir
                        .clone()
                        .unwrap_or_else(std::env::temp_dir),
                    source,
                }
            })?;
        let inner = Arc::new(run::Shared::new(config, engine, cache, dirs));
        Ok(Self {
            inner,
            _ticker: ticker,
        })
    }

    /// True if the engine runs with the pooling instance allocator (false: the pool could not be
    /// reserved and instances are allocated on demand).
    pub fn uses_pooling_allocator(&self) -> bool {
        self.inner.engine.get_pooling_config().is_some()
    }

    /// How many modules this backend has compiled since it was created. A module is compiled
    /// once per digest: later runs (a chain's cases included) instantiate the cached one.
    pub fn compiled_modules(&self) -> u64 {
        self.inner.cache.compiles()
    }

    /// The directory holding this engine's compiled modules (`cache_dir/<engine hash>`).
    pub fn module_cache_dir(&self) -> &std::path::Path {
        self.inner.cache.dir()
    }
}

#[async_trait::async_trait]
impl Backend for WasmBackend {
    fn name(&self) -> &'static str {
        run::BACKEND_NAME
    }

    fn accepts(&self, program: &Program) -> bool {
        matches!(program, Program::WasmModule { .. })
    }

    /// Blocking setup (input files, a base's copy, compiling) is `spawn_blocking`, a module to
    /// fetch or an instance slot is a wait, and guest code yields every `FUEL_SLICE` of fuel
    /// (`run.rs`): what runs inline before the first of these is a ready directory's take (or
    /// one `mkdir` and mount when the pool is dry) and at most one slice.
    fn first_poll_is_bounded(&self) -> bool {
        true
    }

    async fn run(&self, request: ExecRequest, io: JobIo) -> ExecReport {
        run::run_job(&self.inner, request, io).await
    }
}
