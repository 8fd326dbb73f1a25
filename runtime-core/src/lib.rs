//! The execution contract shared by every nekton sandbox backend.
//!
//! A worker turns a claimed job into an [`ExecRequest`], hands it to a [`Backend`] together with a
//! [`JobIo`] (where output goes, and the cancellation signal), and gets back an [`ExecReport`]:
//! the [`Outcome`] (why the job ended) and its [`Usage`] (the bill). The worker never knows which
//! backend it drives: the Wasm backend (`wasm-backend`) and the Linux container backend
//! (`container-backend`) implement the same trait.
//!
//! Invariants:
//! - This crate knows nothing about HTTP, SQL or serde: it is the sandbox side of the service.
//! - A backend never panics on input from a job, a module or an image; every failure becomes an
//!   [`Outcome`] with a reason and a human-readable `detail`.
//! - Output is bounded: [`OutputSink`] enforces the per-stream byte cap and counts bytes, so every
//!   backend truncates and reports the same way.

pub mod collect;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod cputime;
pub mod egress;
pub mod output;
pub mod owner;
pub mod stage;

use std::time::Duration;

pub use output::{OutputChunk, OutputLimitExceeded, OutputSink, OutputStats, Stream};
pub use stage::{Artifact, ArtifactReport, Artifacts, Base, Chain, SkippedArtifact};
pub use tokio_util::sync::CancellationToken;

/// What to run. Each backend accepts the programs it understands and reports
/// [`OutcomeReason::SpecError`] for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A WebAssembly module (WASI preview 1), named by the digest of its bytes (`sha256:<hex>`).
    /// The backend obtains the bytes through the [`ModuleStore`] it was built with.
    WasmModule { digest: String },
    /// An OCI image reference, for the container backend.
    Image { reference: String },
}

/// One input file delivered into the sandbox before the program starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Path relative to the job's input directory (for Wasm: the preopened `/data`); never absolute,
    /// never containing `..` (validated by the API; backends check again).
    pub path: String,
    pub content: Vec<u8>,
    /// Unix permission bits; `None` means 0o644.
    pub mode: Option<u32>,
}

/// Limits a backend must enforce. Every field is already resolved against the operator's defaults
/// and maxima by the service: a backend never sees "unlimited" unless the operator allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time from the program's start; past it the outcome is `wall_timeout`.
    pub wall_time: Duration,
    /// CPU time (containers) — Wasm jobs use `fuel` as their deterministic CPU budget.
    pub cpu_time: Option<Duration>,
    /// Memory: for Wasm, the total linear memory and tables; for containers, the cgroup limit.
    pub memory_bytes: u64,
    /// Wasm fuel budget (roughly one unit per instruction); past it the outcome is `cpu_timeout`.
    pub fuel: Option<u64>,
    /// Bytes kept per stream (stdout and stderr each); past it the job is stopped with
    /// `output_limit` and the stream is marked truncated.
    pub output_bytes: u64,
    /// Containers: the most processes and threads the job may have at once (the cgroup's pids
    /// limit); `None` = the backend's default. Wasm ignores it.
    pub pids: Option<u64>,
    /// Containers: the size of the writable layer (the per-job tmpfs); `None` = the backend's
    /// `scratch_bytes`. Wasm ignores it.
    pub disk_bytes: Option<u64>,
}

/// Everything a backend needs to run one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Opaque identifier used in logs and for naming host resources (cgroups, directories).
    pub job_id: String,
    pub program: Program,
    /// argv[1..]; argv[0] is chosen by the backend (the module or program name).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub files: Vec<InputFile>,
    pub limits: Limits,
    /// What only containers use (the Wasm backend ignores it; the API refuses it for Wasm jobs).
    pub container: ContainerOptions,
    /// What only Wasm jobs use (the container backend refuses a request that sets it).
    pub wasm: WasmOptions,
    /// The run's place in a chain of runs (a test suite's build and cases), see [`stage`].
    pub chain: Chain,
    /// Files to collect after the run; none by default.
    pub artifacts: Artifacts,
}

/// The job's overrides of an image's config. `None` keeps the image's value.
///
/// The program's argv is `entrypoint ++ cmd`, where `entrypoint` is the job's (if set) or the
/// image's, and `cmd` is [`ExecRequest::args`] if non-empty, else — only when the job did not
/// replace the entrypoint — the image's cmd (Docker's rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerOptions {
    pub entrypoint: Option<Vec<String>>,
    /// Working directory inside the container (absolute); created if missing. Input files are
    /// written relative to it.
    pub workdir: Option<String>,
    /// `uid[:gid]`, or a user name resolved in the image's `/etc/passwd` (and group in
    /// `/etc/group`).
    pub user: Option<String>,
    /// The job's network. Default [`NetworkMode::None`]: a network namespace with only `lo`.
    pub network: NetworkMode,
    /// Bridge jobs only: the job's egress allow-list. `None` (the default): the host's bridge
    /// rules alone. `Some(list)`: from the job's address only these destinations (and DNS, port
    /// 53, to the host's configured resolvers) can be reached — an empty list leaves DNS only —
    /// on top of the bridge rules, which still apply (a listed host address or 169.254/16
    /// address stays unreachable unless the operator opened it). A backend that cannot enforce
    /// the list refuses the job rather than run it without.
    pub network_allow: Option<Vec<egress::Destination>>,
}

/// A Wasm job's choices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WasmOptions {
    /// The job's own filesystem layout: directories of the job's directory (which holds its
    /// [`ExecRequest::files`]) preopened at guest paths, in this order (the first is fd 3).
    /// `None` (the default): one read-write preopen of the whole job directory at `/`, given to
    /// every program that can use it (see the Wasm backend's docs). `Some(vec![])`: no preopen.
    pub preopens: Option<Vec<Preopen>>,
}

impl WasmOptions {
    /// True when the request asks for anything only the Wasm backend does.
    pub fn is_set(&self) -> bool {
        self.preopens.is_some()
    }
}

/// One preopened directory of a Wasm job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// The name the guest sees (`fd_prestat_dir_name`, `wasi:filesystem/preopens`): an absolute
    /// path, validated by the API.
    pub guest: String,
    /// The directory below the job's directory, `/`-separated, no `.`, `..` or empty component;
    /// `""` is the job directory itself. Created (empty) if the job's files do not make it.
    pub dir: String,
    /// Read-only: the guest can read and list, but not create, write, rename or remove.
    pub read_only: bool,
}

/// A container job's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// Its own network namespace with only loopback (`lo`, up). The default.
    #[default]
    None,
    /// Loopback plus `eth0`: a veth on the worker host's bridge with an address from the host's
    /// job subnet, a default route via the bridge, egress NAT, and no way to reach other jobs,
    /// the host's own addresses or 169.254.0.0/16 (unless the operator allows a destination).
    Bridge,
}

/// Why a job ended. The strings are the API's `outcome.reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeReason {
    /// The program exited on its own; see `exit_code`.
    Exited,
    /// The program was killed by a signal; see `signal`.
    Signaled,
    WallTimeout,
    CpuTimeout,
    MemoryLimit,
    OutputLimit,
    Cancelled,
    /// The image (or module) could not be obtained or prepared.
    ImageError,
    /// The job asked for something this backend cannot do (malformed module, missing import...).
    SpecError,
    /// The worker that ran the job disappeared (set by the queue's rescuer, never by a backend).
    WorkerLost,
    /// A fault of the service itself; retried while attempts remain.
    InternalError,
    /// A test suite's build step failed (non-zero exit, a limit): no case ran. Set by the
    /// service's suite runner, never by a backend.
    CompileError,
    /// A test suite ran and at least one case was not accepted. Set by the suite runner.
    TestsFailed,
}

impl OutcomeReason {
    pub const ALL: [OutcomeReason; 13] = [
        Self::Exited,
        Self::Signaled,
        Self::WallTimeout,
        Self::CpuTimeout,
        Self::MemoryLimit,
        Self::OutputLimit,
        Self::Cancelled,
        Self::ImageError,
        Self::SpecError,
        Self::WorkerLost,
        Self::InternalError,
        Self::CompileError,
        Self::TestsFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Signaled => "signaled",
            Self::WallTimeout => "wall_timeout",
            Self::CpuTimeout => "cpu_timeout",
            Self::MemoryLimit => "memory_limit",
            Self::OutputLimit => "output_limit",
            Self::Cancelled => "cancelled",
            Self::ImageError => "image_error",
            Self::SpecError => "spec_error",
            Self::WorkerLost => "worker_lost",
            Self::InternalError => "internal_error",
            Self::CompileError => "compile_error",
            Self::TestsFailed => "tests_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// True when the failure is the infrastructure's, not the job's: only these are retried.
    pub fn is_infrastructure_failure(self) -> bool {
        matches!(self, Self::WorkerLost | Self::InternalError)
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reason: OutcomeReason,
    /// Set when `reason` is `Exited` (and, for containers, when known alongside a limit).
    pub exit_code: Option<i32>,
    /// Set when `reason` is `Signaled`.
    pub signal: Option<i32>,
    /// A human-readable explanation (the trap message, the limit that fired, the compile error...).
    pub detail: Option<String>,
}

impl Outcome {
    pub fn exited(code: i32) -> Self {
        Self {
            reason: OutcomeReason::Exited,
            exit_code: Some(code),
            signal: None,
            detail: None,
        }
    }

    pub fn with_reason(reason: OutcomeReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            exit_code: None,
            signal: None,
            detail: Some(detail.into()),
        }
    }

    /// True only for a clean `exit 0`.
    pub fn is_success(&self) -> bool {
        self.reason == OutcomeReason::Exited && self.exit_code == Some(0)
    }
}

/// The resource bill a backend measured. Fields a backend cannot measure stay `None`.
/// Output byte counts come from the [`OutputSink`], queue wait from the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Preparing the sandbox: module load/compile, image and rootfs setup.
    pub setup: Duration,
    /// From program start to its end.
    pub wall: Duration,
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    pub memory_peak_bytes: Option<u64>,
    pub pids_peak: Option<u64>,
    /// Whether the job's pids limit refused a fork or thread (a fork bomb, or a program that
    /// needed more processes than it was given); `None` where the backend cannot tell.
    pub pids_limit_hit: Option<bool>,
    /// Bytes the job's writable storage held when it ended (a container's writable layer, a
    /// Wasm job's directory when it has a size cap), its input files included; `None` where the
    /// backend cannot tell.
    pub disk_used_bytes: Option<u64>,
    pub fuel_consumed: Option<u64>,
    /// Wasm only: the largest linear memory the guest reached.
    pub wasm_memory_peak_bytes: Option<u64>,
    /// Bridge-networked containers: bytes the job received on its interface (link-level, so
    /// Ethernet/IP/TCP headers included).
    pub net_rx_bytes: Option<u64>,
    /// Bridge-networked containers: bytes the job sent on its interface (link-level).
    pub net_tx_bytes: Option<u64>,
}

/// What a backend returns when a job ends, whatever the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecReport {
    pub outcome: Outcome,
    pub usage: Usage,
    /// The run's writable state, when the request's [`Chain::keep`] asked for it and the run got
    /// far enough to have one.
    pub kept: Option<Base>,
    /// The files the request's [`Artifacts`] matched.
    pub artifacts: ArtifactReport,
}

impl ExecReport {
    /// A report with nothing kept and no artifacts.
    pub fn new(outcome: Outcome, usage: Usage) -> Self {
        ExecReport {
            outcome,
            usage,
            kept: None,
            artifacts: ArtifactReport::default(),
        }
    }
}

/// The job's channels to the outside world while it runs.
#[derive(Clone)]
pub struct JobIo {
    /// Where stdout/stderr go, live, in order. Enforces the output cap.
    pub output: OutputSink,
    /// Fires when the job must stop (user cancel, worker shutdown, lease lost). The backend kills
    /// the sandbox promptly (well within a second) and reports `Cancelled`.
    pub cancel: CancellationToken,
}

/// A sandbox backend. Implementations must be cheap to call concurrently from many tasks.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// A short name for logs and metrics ("wasm", "container").
    fn name(&self) -> &'static str;

    /// True if this backend runs the given program (the worker routes by this).
    fn accepts(&self, program: &Program) -> bool;

    /// True if the first poll of [`Backend::run`]'s future is short and bounded (no blocking
    /// setup, and guest code only up to a fixed slice before it yields), so a caller may poll it
    /// once on its own task before handing it to a runtime of its own. The default: false.
    fn first_poll_is_bounded(&self) -> bool {
        false
    }

    /// Runs the job to its end. Never panics on job input; never returns early while any of the
    /// job's code may still run. Output written through `io.output` is complete when this returns.
    async fn run(&self, request: ExecRequest, io: JobIo) -> ExecReport;
}

/// The message a panic carried (`panic!` with a literal or a formatted one), if it carried text.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
}

/// Why a [`ModuleStore`] could not provide a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleStoreError {
    /// The store has no such module, or not one that can be used (too large): retrying cannot
    /// help; the job ends with [`OutcomeReason::ImageError`].
    Missing(String),
    /// The store could not be reached (a database restart, a lost connection): the worker's
    /// trouble, not the job's; the job ends with [`OutcomeReason::InternalError`] and is retried.
    Unavailable(String),
}

impl std::fmt::Display for ModuleStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(m) | Self::Unavailable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ModuleStoreError {}

/// Where a backend fetches Wasm module bytes that it has not cached yet.
#[async_trait::async_trait]
pub trait ModuleStore: Send + Sync {
    /// Returns the module's bytes, or why they cannot be had (missing, or the store unavailable).
    async fn load(&self, digest: &str) -> Result<Vec<u8>, ModuleStoreError>;
}
