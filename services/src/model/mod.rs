//! The job model shared by the API, the store and the worker, owned by none of them: job states,
//! the typed outcome reason and usage bill, the job and batch records, and the [`ResolvedJob`] a
//! worker runs (with its versioned storage format in `job_specs.spec`).
//!
//! Layering inside `services`: `api` → `store` → `model`, `worker` → `store` → `model`. `store`
//! and `worker` never import `api`, and `api` never imports `worker` (tests/structure.rs checks
//! it). The API's request types (`api::types::JobSpec`, ...) convert to the model at the edge.

pub mod auth;
mod logs;
mod resolved;
pub mod tenancy;
pub mod webhooks;

/// The one output-stream type: what a backend writes, what the queue stores (as its fd number,
/// 1 or 2, in `job_logs.stream`), what the API names (`stdout`/`stderr`) and the CLI selects.
pub use logs::{ChunkKind, LineStamper};
pub use resolved::{
    ProgramRef, ResolvedArtifacts, ResolvedFile, ResolvedJob, ResolvedLimits, ResolvedPreopen,
    SpecError,
};
pub(crate) use resolved::{b64, b64_opt};
pub use runtime_core::OutcomeReason;
pub use runtime_core::Stream as OutputStream;

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How a text field's content is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The content is the text itself, stored as UTF-8 bytes.
    #[default]
    Utf8,
    /// The content is standard base64 (with padding) of arbitrary bytes.
    Base64,
}

/// Which backend runs the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Wasm modules and Wasm images go to the Wasm backend, other images to containers.
    #[default]
    Auto,
    Container,
    Wasm,
}

/// Network access for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// No network at all (containers: loopback only). The default.
    #[default]
    None,
    /// Egress through the host's bridge with NAT (container jobs).
    Bridge,
}

/// The states of a job; see ARCHITECTURE.md for the diagram.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "job_state", rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Error,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Error
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }

    pub const ALL: [JobState; 7] = [
        Self::Queued,
        Self::Scheduled,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Error,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// How a job's current (or last) attempt ended, as stored in `job_attempts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub reason: OutcomeReason,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Human-readable detail: the trap, the limit that fired, the error.
    pub detail: Option<String>,
    /// Test-suite jobs: cases passed, the score, verdict counts and the build's result.
    pub tests: Option<crate::grading::SuiteSummary>,
}

/// The resource bill of a job's last attempt. Fields a backend cannot measure are null. Stored as
/// JSON in `job_attempts.usage` and sent as is (`UsageView` in the API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = UsageView)]
pub struct Usage {
    /// From becoming runnable to being claimed by a worker.
    #[schema(required = true)]
    pub queue_wait_ms: Option<u64>,
    /// Preparing the sandbox (module compile/load, image, rootfs).
    #[schema(required = true)]
    pub setup_ms: Option<u64>,
    #[schema(required = true)]
    pub wall_ms: Option<u64>,
    #[schema(required = true)]
    pub cpu_user_ms: Option<u64>,
    #[schema(required = true)]
    pub cpu_system_ms: Option<u64>,
    #[schema(required = true)]
    pub memory_peak_bytes: Option<u64>,
    #[schema(required = true)]
    pub pids_peak: Option<u64>,
    /// Containers: whether the pids limit refused a fork or thread of the job (a fork bomb, or a
    /// program that needed more processes than it was given). Null where the backend cannot tell
    /// (wasm; hosts without `pids.events`; bills written before this field existed).
    #[serde(default)]
    #[schema(required = true)]
    pub pids_limit_hit: Option<bool>,
    /// Bytes the job's writable storage held when it ended, its input files included: a
    /// container's writable layer; a Wasm job's directory when it has a size cap
    /// (`limits.disk_bytes`). Null where the backend cannot tell (and in bills written before
    /// this field existed).
    #[serde(default)]
    #[schema(required = true)]
    pub disk_used_bytes: Option<u64>,
    /// Bytes kept of each stream, and whether more was written than kept.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Wasm only: fuel (≈ instructions) the job consumed.
    #[schema(required = true)]
    pub fuel_consumed: Option<u64>,
    /// Wasm only: the largest linear memory the job reached.
    #[schema(required = true)]
    pub wasm_memory_peak_bytes: Option<u64>,
    #[schema(required = true)]
    pub net_rx_bytes: Option<u64>,
    #[schema(required = true)]
    pub net_tx_bytes: Option<u64>,
}

/// A job as the store reads it (the API's `Job` is made from it at the edge).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// UUIDv7: ordered by creation time.
    pub id: Uuid,
    pub state: JobState,
    /// The current (or last) attempt; 0 while it has never run.
    pub attempt: i32,
    pub max_attempts: i32,
    pub queue: String,
    pub priority: i16,
    pub labels: BTreeMap<String, String>,
    pub batch_id: Option<Uuid>,
    /// The module digest or image reference the job runs.
    pub program: String,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    /// When the current (or last) attempt started.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set once the job is finished (or an attempt was lost).
    pub outcome: Option<JobOutcome>,
    pub usage: Option<Usage>,
    /// A test-suite job (submitted with `tests`).
    pub suite: bool,
    /// The trace id of the job's submission (32 lowercase hex digits); None for jobs stored
    /// before tracing.
    pub trace_id: Option<String>,
}

/// A batch and its jobs counted by state, as the store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub total: i64,
    pub labels: BTreeMap<String, String>,
    /// Every state, with 0 where no job is in it.
    pub counts: BTreeMap<JobState, i64>,
    /// True when every job has reached a final state.
    pub finished: bool,
}

/// A stored Wasm module.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Module {
    /// `sha256:<hex>` of the module's bytes: pass as the job's `module`.
    pub digest: String,
    pub size_bytes: i64,
    pub created_at: DateTime<Utc>,
}

/// Decodes a text field according to its encoding.
pub fn decode(content: &str, encoding: Option<Encoding>) -> Result<Vec<u8>, String> {
    match encoding.unwrap_or_default() {
        Encoding::Utf8 => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|e| format!("invalid base64: {e}")),
    }
}

/// Job ids in NOTIFY payloads are comma-separated; anything that is not a UUID is skipped.
pub fn parse_ids(payload: &str) -> impl Iterator<Item = Uuid> + '_ {
    payload
        .split(',')
        .filter_map(|s| Uuid::parse_str(s.trim()).ok())
}

/// The items of a state notification (`nekton_state`): job ids, each one optionally preceded by
/// the state the job moved to — `succeeded,<a>,<b>` says that job `a` is now `succeeded` and
/// nothing about `b`. A worker's completion names the state (the job's last output is stored in
/// the same transaction, so a final state named here means all of its output is stored); other
/// senders send bare ids. [`parse_ids`] skips the state names, so readers and senders of either
/// kind understand each other during a rolling upgrade.
pub fn parse_states(payload: &str) -> impl Iterator<Item = (Uuid, Option<JobState>)> + '_ {
    let mut named = None;
    payload.split(',').filter_map(move |s| {
        let s = s.trim();
        match Uuid::parse_str(s) {
            Ok(id) => Some((id, named.take())),
            Err(_) => {
                named = JobState::parse(s);
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_payload_ids() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let ids: Vec<Uuid> = parse_ids(&format!("{a},{b},garbage")).collect();
        assert_eq!(ids, vec![a, b]);
    }

    #[test]
    fn notify_payload_states() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let payload = format!("succeeded,{a},{b},nonsense,{c},failed");
        let items: Vec<_> = parse_states(&payload).collect();
        assert_eq!(
            items,
            vec![(a, Some(JobState::Succeeded)), (b, None), (c, None)],
            "a state names the next id only; unknown words and a trailing name are skipped"
        );
        // Readers of bare ids see the same ids.
        assert_eq!(parse_ids(&payload).collect::<Vec<_>>(), vec![a, b, c]);
    }
}
