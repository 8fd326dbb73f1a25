//! Operator policy: limit defaults and maxima, queue timings. Built from CLI flags / `NEKTON_*`
//! environment variables in `main.rs`; every field has a documented default.

use std::time::Duration;

/// Defaults applied to a job that does not set a limit, and the maxima a job may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitPolicy {
    pub default_wall_time_ms: u64,
    pub max_wall_time_ms: u64,
    pub default_memory_bytes: u64,
    pub max_memory_bytes: u64,
    /// `None`: no fuel budget unless the job sets one (fuel is still counted).
    pub default_fuel: Option<u64>,
    pub max_fuel: Option<u64>,
    pub default_output_bytes: u64,
    pub max_output_bytes: u64,
    pub default_max_attempts: u32,
    pub max_max_attempts: u32,
    /// Largest accepted Wasm module upload.
    pub max_module_bytes: usize,
    /// Containers: processes/threads per job (the cgroup's pids limit).
    pub default_pids: u64,
    pub max_pids: u64,
    /// Containers: size of the writable layer (a tmpfs; its pages also count against
    /// `memory_bytes`).
    pub default_disk_bytes: u64,
    pub max_disk_bytes: u64,
    /// Artifacts: bytes kept of one file (a larger one is cut and flagged).
    pub artifact_file_bytes: u64,
    /// Artifacts: bytes kept over all of a run's files.
    pub artifact_total_bytes: u64,
    /// Artifacts: files kept of one run.
    pub artifact_files: u64,
    /// Event streams (SSE: job logs, batch completions) one API process serves at once; past it
    /// a new stream is refused with 503 and `Retry-After` instead of piling up.
    pub max_streams: usize,
}

impl Default for LimitPolicy {
    /// wall 60 s (max 24 h), memory 256 MiB (max 4 GiB), no default fuel, output 16 MiB per stream
    /// (max 1 GiB), 3 attempts (max 10), modules up to 64 MiB; containers: 256 pids (max 4096),
    /// a 1 GiB writable layer (max 4 GiB); artifacts: 64 MiB per file, 256 MiB and 1000 files
    /// per run; 10,000 event streams per API process.
    fn default() -> Self {
        Self {
            default_wall_time_ms: 60_000,
            max_wall_time_ms: 24 * 3_600_000,
            default_memory_bytes: 256 << 20,
            max_memory_bytes: 4 << 30,
            default_fuel: None,
            max_fuel: None,
            default_output_bytes: 16 << 20,
            max_output_bytes: 1 << 30,
            default_max_attempts: 3,
            max_max_attempts: 10,
            max_module_bytes: 64 << 20,
            default_pids: 256,
            max_pids: 4096,
            default_disk_bytes: 1 << 30,
            max_disk_bytes: 4 << 30,
            artifact_file_bytes: 64 << 20,
            artifact_total_bytes: 256 << 20,
            artifact_files: 1000,
            max_streams: 10_000,
        }
    }
}

/// Queue timings shared by the API and the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTiming {
    /// How long a claim is valid without a heartbeat.
    pub lease: Duration,
    /// How often a worker renews its leases (default: a third of the lease).
    pub heartbeat: Duration,
    /// How often a worker checks running jobs' cancel flags (backs up the NOTIFY).
    pub cancel_poll: Duration,
    /// How often an idle worker polls for jobs even without a NOTIFY.
    pub poll: Duration,
    /// How often each worker runs the rescuer.
    pub rescue_every: Duration,
    /// Attempts lost with their worker before a job ends in `error` / `worker_lost`.
    pub max_lost: i32,
    /// How long finished jobs and their logs are kept.
    pub retention: Duration,
    /// How often retention runs.
    pub retention_every: Duration,
    /// Log flush tick: pending output is written at least this often.
    pub log_flush: Duration,
}

impl Default for QueueTiming {
    /// lease 30 s, heartbeat 10 s, cancel poll 500 ms, poll 1 s, rescue every 2 s (half the lease
    /// when that is shorter, at least 500 ms), 3 lost attempts,
    /// retention 7 days checked hourly, logs flushed every 100 ms.
    fn default() -> Self {
        Self::with_lease(Duration::from_secs(30))
    }
}

impl QueueTiming {
    pub fn with_lease(lease: Duration) -> Self {
        Self {
            lease,
            heartbeat: lease / 3,
            cancel_poll: Duration::from_millis(500),
            poll: Duration::from_secs(1),
            rescue_every: (lease / 2).clamp(Duration::from_millis(500), Duration::from_secs(2)),
            max_lost: 3,
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_every: Duration::from_secs(3600),
            log_flush: Duration::from_millis(100),
        }
    }
}

/// The tenant every job belongs to until authentication arrives.
pub const DEFAULT_TENANT: &str = "default";
