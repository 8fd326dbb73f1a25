//! One job, from request to report.
//!
//! Per job: get the ready module from the cache, write input files (only if there are any), wait for
//! an instance slot, build the WASI context and a fresh `Store` with the job's limits, then
//! instantiate and call `_start` under three guards raced together:
//!
//! - `io.cancel` (checked whenever the guest future yields),
//! - a tokio timer at the wall-time deadline (covers a guest asleep in a host call, where epochs do
//!   not fire),
//! - the epoch callback, which runs every tick while wasm code executes: it raises
//!   [`Stop`] on cancel or past the deadline, and otherwise yields to the runtime so the other two
//!   guards get polled even while the guest spins.
//!
//! Dropping the guest future unwinds the guest; the `Store`, and with it every WASI handle, is
//! dropped before the job's directory is unmounted and removed.
//!
//! # The process model
//!
//! What the guest sees is exactly what the job says, nothing injected: `argv` is
//! [`PROGRAM_NAME`] then `args`; the environment is exactly `env` (the worker's own is never
//! inherited); stdin is the job's `stdin` bytes then end-of-file; one read-write preopen, the
//! job's directory, at `/` (fd 3; see [`crate::jobdir`]) — or the job's own layout
//! (`wasm.preopens`), or none for a core module that could not use one and has no files; clocks and `random_get` are
//! wasmtime-wasi's (the host's real-time and monotonic clocks, a CSPRNG). `proc_exit(n)` ends the
//! job as `exited` with code `n` (0..=255 exactly; larger values as 255, see
//! [`crate::classify::exit_outcome`]), returning from `_start` as code 0, and a trap as `signaled`
//! with the trap in `detail` (see [`crate::classify`]).
//!
//! A component (WASI 0.2 command) gets the same: the same context (built once, reached through
//! the preview 2 host instead of the preview 1 adapter), the same store, limiter, fuel, epochs and
//! guards. `wasi:cli/run.run` returning `ok` is exit code 0 and `err` exit code 1;
//! `wasi:cli/exit.exit` gives 0 or 1 and `exit-with-code(n)` exactly `n`.
//!
//! # Chains and artifacts
//!
//! - `chain.base`: the run's fresh directory first gets a copy of the base's files (regular files
//!   and directories with their permission bits, symlinks as symlinks; see
//!   [`crate::jobdir::copy_base`]), counted against `limits.disk_bytes`; the input `files` are
//!   written after and win (a base's symlink in their way is removed, never followed). A base not
//!   made by this backend is a `spec_error`. The module is compiled once per digest (the cache);
//!   each run is a fresh instance and a fresh `Store`.
//! - `artifacts`: collected with [`runtime_core::collect::collect`] from the job's directory
//!   (relative patterns from the guest's `/`) once the `Store` is dropped, before the directory
//!   is kept, recycled or removed.
//! - `chain.keep`: the directory is not recycled; the report's `kept` [`Base`] owns it
//!   ([`KeptDir`]) and removes it (detaching its tmpfs) when its last clone is dropped. A run
//!   stopped by the cancel or wall-time guard keeps nothing: a host call may still write there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime_core::cputime::{CpuMeter, Metered};
use runtime_core::{
    ArtifactReport, Base, ExecReport, ExecRequest, JobIo, Outcome, OutcomeReason, Program, Stream,
    Usage,
};
use tokio::sync::Semaphore;
use wasmtime::{Engine, Extern, Linker, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::WasmConfig;
use crate::WasmError;
use crate::cache::{ModuleCache, Prepared};
use crate::classify::{JobFacts, Stage, classify, render_error};
use crate::jobdir::{DirPool, InputDirError, JobDir, copy_base, make_preopen_dirs, write_files};
use crate::limits::{JobLimiter, Stop};
use crate::wasi_io::SinkOutput;

/// `argv[0]` as the guest sees it.
const PROGRAM_NAME: &str = "main.wasm";
/// Fuel handed to the guest at a time. When it runs out wasmtime records the count, refuels from the
/// job's budget and yields to the runtime. Compiled code keeps its fuel counter in a register
/// between calls, so this also bounds how stale `fuel_consumed` can be for a guest stopped in the
/// middle of a loop (by the wall clock or a cancel): at most this many units are missing.
const FUEL_SLICE: u64 = 1_000_000;
/// Where the job's directory (its input files, and whatever it writes) appears in the guest by
/// default.
const JOB_DIR_GUEST_PATH: &str = "/";

/// The per-`Store` state of one job.
pub(crate) struct JobState {
    wasi: WasiP1Ctx,
    limiter: JobLimiter,
    cancel: runtime_core::CancellationToken,
    /// Wall-time deadline, checked by the epoch callback.
    deadline: Instant,
    wall_time: Duration,
}

/// Components reach the same WASI context (args, env, stdio, the job's preopen, its resource
/// table) through the preview 2 host; preview 1 modules use the adapter around it.
impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

/// The two linkers of an engine: WASI preview 1 for core modules, WASI 0.2 for components.
pub(crate) struct Linkers {
    pub core: Linker<JobState>,
    pub component: wasmtime::component::Linker<JobState>,
}

/// Registers the (async) WASI preview 1 host functions and the WASI 0.2 interfaces; done once per
/// engine.
///
/// `proc_exit` is replaced: wasmtime-wasi's refuses codes of 126 and above (a trap), while a job's
/// exit code is whatever the program passed (see [`crate::classify::exit_outcome`]).
/// Components get `wasi:cli/exit.exit-with-code` (any `u8` code) besides `exit`. The
/// `wasi:sockets` interfaces are linked (the WASI 0.2 host registers them together with the
/// filesystem), but a component importing them is refused before instantiation
/// (`ModuleCache::prepare_component`), and the context allows no address anyway.
pub(crate) fn create_linkers(engine: &Engine) -> Result<Linkers, WasmError> {
    let mut core = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut core, |state: &mut JobState| &mut state.wasi)
        .map_err(|e| WasmError::Linker(render_error(&e)))?;
    core.allow_shadowing(true);
    core.func_wrap(
        "wasi_snapshot_preview1",
        "proc_exit",
        |code: i32| -> wasmtime::Result<()> {
            // The guest passes a `u32`; the bits are the same.
            Err(wasmtime::Error::new(crate::classify::ProcExit(code as u32)))
        },
    )
    .map_err(|e| WasmError::Linker(render_error(&e)))?;
    core.allow_shadowing(false);

    let mut component = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut component)
        .map_err(|e| WasmError::Linker(render_error(&e)))?;
    Ok(Linkers { core, component })
}

/// Everything the backend shares between jobs.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) cache: ModuleCache,
    config: WasmConfig,
    /// One permit per instance slot: jobs beyond the pool's size wait instead of failing.
    slots: Semaphore,
    /// Job directories kept ready between jobs.
    dirs: Arc<DirPool>,
}

impl Shared {
    pub(crate) fn new(
        config: WasmConfig,
        engine: Engine,
        cache: ModuleCache,
        dirs: DirPool,
    ) -> Self {
        let slots =
            Semaphore::new(usize::try_from(config.max_concurrent_instances).unwrap_or(usize::MAX));
        Self {
            engine,
            cache,
            config,
            slots,
            dirs: Arc::new(dirs),
        }
    }
}

fn report(outcome: Outcome, usage: Usage) -> ExecReport {
    ExecReport::new(outcome, usage)
}

fn cancelled() -> Outcome {
    Outcome::with_reason(OutcomeReason::Cancelled, Stop::Cancelled.to_string())
}

/// Runs one job to its end. Never panics on job input; returns only once the guest is gone and
/// its input directory removed.
pub(crate) async fn run_job(shared: &Shared, request: ExecRequest, io: JobIo) -> ExecReport {
    let mut usage = Usage::default();
    let ExecRequest {
        job_id,
        program,
        args,
        env,
        stdin,
        files,
        limits,
        container: _,
        wasm,
        chain,
        artifacts,
    } = request;
    let digest = match program {
        Program::WasmModule { digest } => digest,
        other => {
            let detail = format!("the wasm backend cannot run {other:?}");
            return report(
                Outcome::with_reason(OutcomeReason::SpecError, detail),
                usage,
            );
        }
    };

    if let Some(base) = &chain.base
        && base.get::<KeptDir>().is_none()
    {
        let detail = format!(
            "the chain's base was made by the {} backend: a wasm job can only start from the \
             directory a wasm job of this worker kept",
            base.backend()
        );
        return report(
            Outcome::with_reason(OutcomeReason::SpecError, detail),
            usage,
        );
    }

    // Preparation that needs no instance slot: the module, then the input files.
    let prep_start = Instant::now();
    let loaded = tokio::select! {
        biased;
        _ = io.cancel.cancelled() => None,
        loaded = shared.cache.get(&digest) => Some(loaded),
    };
    let prepared = match loaded {
        None => {
            usage.setup = prep_start.elapsed();
            return report(cancelled(), usage);
        }
        Some(Err(error)) => {
            usage.setup = prep_start.elapsed();
            tracing::debug!(job_id, digest, %error, "wasm module unavailable");
            return report(
                Outcome::with_reason(error.reason(), error.to_string()),
                usage,
            );
        }
        Some(Ok(prepared)) => prepared,
    };
    // The default layout (`wasm.preopens` absent): the job's directory at `/`, for every program
    // that can use it, and always when the directory holds something.
    let layout = wasm.preopens.unwrap_or_else(|| {
        let default = runtime_core::Preopen {
            guest: JOB_DIR_GUEST_PATH.to_owned(),
            dir: String::new(),
            read_only: false,
        };
        let wanted = prepared.uses_preopens() || !files.is_empty() || chain.base.is_some();
        if wanted { vec![default] } else { Vec::new() }
    });
    let (job_dir, preopens) =
        match make_job_dir(shared, chain.base, files, &layout, limits.disk_bytes).await {
            Ok(made) => made,
            Err(outcome) => {
                usage.setup = prep_start.elapsed();
                return report(outcome, usage);
            }
        };
    let prep = prep_start.elapsed();

    // An instance slot: jobs beyond the pool's size wait here (queueing, not setup).
    let slot = tokio::select! {
        biased;
        _ = io.cancel.cancelled() => None,
        slot = shared.slots.acquire() => Some(slot),
    };
    let outcome = match slot {
        None => {
            usage.setup = prep;
            cancelled()
        }
        Some(Err(closed)) => {
            usage.setup = prep;
            let detail = format!("no instance slot can be had: {closed}");
            Outcome::with_reason(OutcomeReason::InternalError, detail)
        }
        Some(Ok(permit)) => {
            let job = Job {
                args,
                env,
                stdin,
                limits,
                preopens: preopens
                    .iter()
                    .zip(&layout)
                    .map(|(host, p)| (host.as_path(), p.guest.as_str(), p.read_only))
                    .collect(),
            };
            let outcome = execute(shared, &prepared, job, &io, prep, &mut usage).await;
            drop(permit);
            usage.disk_used_bytes = job_dir.used_bytes();
            outcome
        }
    };

    // The store is gone: the directory goes back to the pool if the job left it empty — unless
    // the guest was stopped by the cancel or wall-time guard, which drop it wherever it is, maybe
    // in a host call whose blocking filesystem operation still runs on another thread and could
    // create a file after the check. (A guest that ended by itself, or was stopped by the epoch
    // callback, which runs only in wasm code, has no host call left in flight.) Otherwise a
    // capped directory goes with one `umount2(MNT_DETACH)` and one `rmdir`: inline (a hop to a
    // blocking thread would cost more than the work). An uncapped one may hold anything the job
    // wrote: removing it is blocking work. If this task is dropped instead, the blocking task
    // still runs, or `JobDir`'s own `Drop` cleans up inline.
    let maybe_in_flight = matches!(
        outcome.reason,
        OutcomeReason::Cancelled | OutcomeReason::WallTimeout
    );
    // Artifacts first, from the directory as the guest left it.
    let (job_dir, artifacts) = if artifacts.patterns.is_empty() {
        (Some(job_dir), ArtifactReport::default())
    } else {
        let collected = tokio::task::spawn_blocking(move || {
            let found = runtime_core::collect::collect(job_dir.fd(), "", &artifacts);
            (job_dir, found)
        })
        .await;
        match collected {
            Ok((dir, found)) => (Some(dir), found),
            // The directory was dropped (removed) with the failed task.
            Err(join) => {
                tracing::warn!(job_id, error = %join, "collecting a wasm job's artifacts failed");
                (None, ArtifactReport::default())
            }
        }
    };
    // A kept directory is the base of later runs; one a host call may still write to is not
    // kept (the run was cancelled or timed out: no later run should start from it anyway).
    let mut kept = None;
    let leftover = match job_dir {
        None => None,
        Some(job_dir) if chain.keep && !maybe_in_flight => {
            kept = Some(Base::new(BACKEND_NAME, KeptDir { dir: Some(job_dir) }));
            None
        }
        Some(job_dir) if maybe_in_flight => Some(job_dir),
        Some(job_dir) => shared.dirs.recycle(job_dir),
    };
    if let Some(job_dir) = leftover {
        if job_dir.is_capped() || job_dir.remove_if_empty() {
            drop(job_dir);
        } else if let Err(join) = tokio::task::spawn_blocking(move || drop(job_dir)).await {
            tracing::warn!(job_id, error = %join, "removing a wasm job's directory failed");
        }
    }
    if !outcome.is_success() {
        tracing::debug!(
            job_id,
            digest,
            reason = outcome.reason.as_str(),
            detail = ?outcome.detail,
            "wasm job ended"
        );
    }
    ExecReport {
        outcome,
        usage,
        kept,
        artifacts,
    }
}

/// The backend's name, as [`runtime_core::Backend::name`] gives it and [`Base`]s carry it.
pub(crate) const BACKEND_NAME: &str = "wasm";

/// A job's directory kept for later runs of a chain ([`ExecReport::kept`]): later runs start with
/// a copy of its files. Dropping the last [`Base`] holding it removes it (detaching its tmpfs
/// first), on a blocking thread when a tokio runtime is at hand and the removal is more than an
/// unmount and an `rmdir`.
pub(crate) struct KeptDir {
    dir: Option<JobDir>,
}

impl KeptDir {
    fn path(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(JobDir::path)
    }
}

impl Drop for KeptDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if !dir.is_capped()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(move || drop(dir));
        }
    }
}

/// The job's directory (capped at `disk_bytes` where possible) holding the base's files, if the
/// job starts from one, then its input files, then its preopens' directories; and the host path
/// of each preopen, in `layout`'s order.
async fn make_job_dir(
    shared: &Shared,
    base: Option<Base>,
    files: Vec<runtime_core::InputFile>,
    layout: &[runtime_core::Preopen],
    disk_bytes: Option<u64>,
) -> Result<(JobDir, Vec<std::path::PathBuf>), Outcome> {
    // Without files, a base or a preopen below the job directory the work is taking a ready
    // directory from the pool (or one mkdir, and one mount, when it is dry): inline. Copying
    // and writing files is blocking work.
    let written = if files.is_empty() && base.is_none() && layout.iter().all(|p| p.dir.is_empty()) {
        shared.dirs.take(disk_bytes).and_then(|dir| {
            let paths = make_preopen_dirs(&dir, layout)?;
            Ok((dir, paths))
        })
    } else {
        let layout = layout.to_vec();
        let dirs = shared.dirs.clone();
        tokio::task::spawn_blocking(move || {
            let dir = dirs.take(disk_bytes)?;
            if let Some(base) = &base {
                let from = base
                    .get::<KeptDir>()
                    .and_then(KeptDir::path)
                    .ok_or_else(|| {
                        InputDirError::Base("it is not a wasm job's directory".into())
                    })?;
                copy_base(from, &dir, disk_bytes)?;
            }
            write_files(&dir, &files, disk_bytes)?;
            let paths = make_preopen_dirs(&dir, &layout)?;
            Ok((dir, paths))
        })
        .await
        .unwrap_or_else(|join| {
            Err(InputDirError::Host(format!(
                "the input file writer failed: {join}"
            )))
        })
    };
    match written {
        Ok(made) => Ok(made),
        Err(
            e @ (InputDirError::BadFile { .. }
            | InputDirError::Base(_)
            | InputDirError::BadPreopen { .. }),
        ) => Err(Outcome::with_reason(
            OutcomeReason::SpecError,
            e.to_string(),
        )),
        Err(e @ InputDirError::Host(_)) => Err(Outcome::with_reason(
            OutcomeReason::InternalError,
            e.to_string(),
        )),
    }
}

/// The parts of a request `execute` needs.
struct Job<'a> {
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    limits: runtime_core::Limits,
    /// The preopens, in order: host directory, guest name, read-only.
    preopens: Vec<(&'a std::path::Path, &'a str, bool)>,
}

enum Ended {
    Finished(Result<i32, (Stage, wasmtime::Error)>),
    Cancelled,
    WallTimeout,
}

/// The epoch callback: stop on cancel or past the deadline, otherwise yield for one tick.
fn epoch_check(store: StoreContextMut<'_, JobState>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data();
    if state.cancel.is_cancelled() {
        return Err(wasmtime::Error::new(Stop::Cancelled));
    }
    if Instant::now() >= state.deadline {
        return Err(wasmtime::Error::new(Stop::WallTimeout(state.wall_time)));
    }
    Ok(UpdateDeadline::Yield(1))
}

/// `start + duration`, saturating far in the future instead of overflowing.
fn deadline_after(start: Instant, duration: Duration) -> Instant {
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(start)
}

/// Instantiates the module and calls `_start` (a component: `wasi:cli/run.run`). `started` is
/// set when instantiation is done. Returning normally is exit code 0; a component's `run`
/// returning its error is exit code 1 (what `wasi:cli/exit.exit(err)` gives too).
async fn run_guest(
    store: &mut Store<JobState>,
    prepared: &Prepared,
    started: &mut Option<Instant>,
) -> Result<i32, (Stage, wasmtime::Error)> {
    match prepared {
        Prepared::Core { pre, start, .. } => {
            let instance = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(|e| (Stage::Instantiate, e))?;
            *started = Some(Instant::now());
            let start = instance
                .get_module_export(&mut *store, start)
                .and_then(Extern::into_func)
                .ok_or_else(|| {
                    (
                        Stage::Instantiate,
                        wasmtime::format_err!("the instance has no `_start` function"),
                    )
                })?;
            start
                .call_async(&mut *store, &[], &mut [])
                .await
                .map_err(|e| (Stage::Run, e))?;
            Ok(0)
        }
        Prepared::Component { pre } => {
            let command = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(|e| (Stage::Instantiate, e))?;
            *started = Some(Instant::now());
            match command
                .wasi_cli_run()
                .call_run(&mut *store)
                .await
                .map_err(|e| (Stage::Run, e))?
            {
                Ok(()) => Ok(0),
                Err(()) => Ok(1),
            }
        }
    }
}

async fn execute(
    shared: &Shared,
    prepared: &Prepared,
    job: Job<'_>,
    io: &JobIo,
    prep: Duration,
    usage: &mut Usage,
) -> Outcome {
    let exec_start = Instant::now();
    let internal = |usage: &mut Usage, detail: String| {
        usage.setup = prep + exec_start.elapsed();
        Outcome::with_reason(OutcomeReason::InternalError, detail)
    };

    let mut wasi = WasiCtxBuilder::new();
    wasi.allow_blocking_current_thread(false)
        .arg(PROGRAM_NAME)
        .args(&job.args)
        .envs(&job.env)
        .stdin(MemoryInputPipe::new(job.stdin))
        .stdout(SinkOutput::new(io.output.clone(), Stream::Stdout))
        .stderr(SinkOutput::new(io.output.clone(), Stream::Stderr));
    for (host, guest, read_only) in job.preopens {
        let perms = if read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        if let Err(e) = wasi.preopened_dir(host, guest, perms) {
            let detail = format!("cannot preopen {guest:?}: {}", render_error(&e));
            return internal(usage, detail);
        }
    }

    let limits = &job.limits;
    let fuel = limits.fuel.unwrap_or(u64::MAX);
    let memory_limit = limits
        .memory_bytes
        .min(shared.config.max_memory_bytes_per_instance);
    let state = JobState {
        wasi: wasi.build_p1(),
        limiter: JobLimiter::new(
            memory_limit,
            match prepared {
                Prepared::Core { .. } => 1,
                Prepared::Component { .. } => crate::engine::CORE_INSTANCES_PER_COMPONENT as usize,
            },
        ),
        cancel: io.cancel.clone(),
        deadline: deadline_after(Instant::now(), limits.wall_time),
        wall_time: limits.wall_time,
    };
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|state| &mut state.limiter);
    if let Err(e) = store
        .fuel_async_yield_interval(Some(FUEL_SLICE))
        .and_then(|()| store.set_fuel(fuel))
    {
        return internal(
            usage,
            format!("cannot set the fuel budget: {}", render_error(&e)),
        );
    }
    store.epoch_deadline_callback(epoch_check);
    store.set_epoch_deadline(1);

    // The wall-time clock starts here: the module's own start function (run by instantiation) is
    // guest code too.
    let clock_start = Instant::now();
    let deadline = deadline_after(clock_start, limits.wall_time);
    store.data_mut().deadline = deadline;
    let meter = Arc::new(CpuMeter::default());
    let mut run_started = None;
    let ended = {
        let guest = Metered::new(
            run_guest(&mut store, prepared, &mut run_started),
            meter.clone(),
        );
        tokio::select! {
            biased;
            _ = io.cancel.cancelled() => Ended::Cancelled,
            finished = guest => Ended::Finished(finished),
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => Ended::WallTimeout,
        }
    };
    let end = Instant::now();

    usage.setup = prep
        + run_started
            .unwrap_or(end)
            .saturating_duration_since(exec_start);
    usage.wall = run_started
        .map(|s| end.saturating_duration_since(s))
        .unwrap_or_default();
    usage.cpu_user = meter.user();
    usage.cpu_system = meter.system();
    usage.fuel_consumed = store.get_fuel().ok().map(|left| fuel.saturating_sub(left));
    usage.wasm_memory_peak_bytes = Some(store.data().limiter.memory_peak());
    usage.memory_peak_bytes = Some(store.data().limiter.total_peak());
    drop(store);

    match ended {
        Ended::Finished(Ok(code)) => Outcome::exited(code),
        Ended::Finished(Err((stage, error))) => {
            let stats = io.output.stats();
            let facts = JobFacts {
                fuel_limit: limits.fuel,
                output_truncated: stats.stdout_truncated || stats.stderr_truncated,
            };
            classify(&error, stage, facts)
        }
        Ended::Cancelled => cancelled(),
        Ended::WallTimeout => Outcome::with_reason(
            OutcomeReason::WallTimeout,
            Stop::WallTimeout(limits.wall_time).to_string(),
        ),
    }
}
