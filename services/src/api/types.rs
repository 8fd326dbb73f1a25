//! The wire types of the v1 API: what clients send and receive. These are the only serde types the
//! API exposes; the OpenAPI document is generated from them (utoipa), and the CLI uses the same
//! structs as a client.

use std::collections::BTreeMap;

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

/// A file placed in the job's sandbox before it starts. For Wasm jobs the files appear below the
/// preopened directory `/data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputFileSpec {
    /// Relative path inside the job's input directory, e.g. `input/case1.txt`; no `..`, not absolute.
    pub path: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// Unix permission bits (e.g. 493 = 0o755). Default 0o644.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// Resource limits. Omitted fields take the operator's defaults; values above the operator's
/// maxima are refused with 422.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Wall-clock limit in milliseconds → `wall_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
    /// CPU-time limit in milliseconds (containers) → `cpu_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// Memory limit in bytes → `memory_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Wasm fuel budget (≈ instructions) → `cpu_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Bytes kept per output stream → `output_limit`, stream flagged truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// Maximum number of processes (containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Disk size in bytes: a container's writable layer; a Wasm job's directory at `/` (writes
    /// past it fail with ENOSPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

/// A job to run. Exactly one of `module` and `image` names the code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Digest of a Wasm module uploaded with `POST /v1/modules` (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// An OCI image reference, normalised like Docker's (`busybox` →
    /// `docker.io/library/busybox:latest`; `host:port/repo:tag`, `repo@sha256:...`). The worker
    /// pulls it if it has not yet (concurrent jobs on one image share one pull). A Wasm artifact
    /// image runs on the Wasm backend, any other image as a Linux container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `auto` (default): Wasm images and modules run on the Wasm backend, other images as
    /// containers. `container` or `wasm` insist on one; a job whose image is of the other kind
    /// ends `error` / `spec_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeKind>,
    /// Images only: replaces the image's entrypoint (and then the image's cmd is not used:
    /// the program is `entrypoint ++ args`). Docker's rules: without `entrypoint`, the program is
    /// the image's entrypoint followed by `args`, or by the image's cmd when `args` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Arguments after the program name (for images: replaces the image's cmd).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory (containers): an absolute path, created if missing; input files are
    /// written relative to it. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `uid[:gid]` (numbers) or `name[:group]` from the image's `/etc/passwd` and `/etc/group`
    /// (containers). Default: the image's user, else root (uid 0 in the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Bytes fed to the job's stdin (closed after them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_encoding: Option<Encoding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFileSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// Free-form key/value labels; filter with `GET /v1/jobs?label=key=value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Attempts allowed when the infrastructure fails (a worker dies). Never retried for the job's
    /// own failures. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Higher runs first within a queue. Default 0, range -1000..=1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i16>,
    /// Queue name. Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// The states of a job; see ARCHITECTURE.md for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
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

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeView {
    /// `exited`, `signaled`, `wall_timeout`, `cpu_timeout`, `memory_limit`, `output_limit`,
    /// `cancelled`, `image_error`, `spec_error`, `worker_lost` or `internal_error`.
    pub reason: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Human-readable detail: the trap, the limit that fired, the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The resource bill of a job's last attempt. Fields a backend cannot measure are null.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    /// From becoming runnable to being claimed by a worker.
    pub queue_wait_ms: Option<u64>,
    /// Preparing the sandbox (module compile/load, image, rootfs).
    pub setup_ms: Option<u64>,
    pub wall_ms: Option<u64>,
    pub cpu_user_ms: Option<u64>,
    pub cpu_system_ms: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub pids_peak: Option<u64>,
    /// Bytes kept of each stream, and whether more was written than kept.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Wasm only: fuel (≈ instructions) the job consumed.
    pub fuel_consumed: Option<u64>,
    /// Wasm only: the largest linear memory the job reached.
    pub wasm_memory_peak_bytes: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

/// A job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// UUIDv7: ordered by creation time.
    pub id: Uuid,
    pub state: JobState,
    /// The current (or last) attempt; 0 while it has never run.
    pub attempt: i32,
    pub max_attempts: i32,
    pub queue: String,
    pub priority: i16,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    /// The module digest or image reference the job runs.
    pub program: String,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    /// When the current (or last) attempt started.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set once the job is finished (or an attempt was lost).
    pub outcome: Option<OutcomeView>,
    pub usage: Option<UsageView>,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Many jobs submitted at once, sharing defaults.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Fields applied to every job unless the job sets them (`env`, `labels` and `limits` are
    /// merged key by key).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// The jobs (1 to 10,000), each a job spec.
    #[schema(value_type = Vec<Object>)]
    pub jobs: Vec<serde_json::Value>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The result of a batch submission.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchCreated {
    pub id: Uuid,
    /// The jobs' ids, in the order they were given.
    pub job_ids: Vec<Uuid>,
}

/// A batch and its jobs counted by state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Batch {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub total: i64,
    pub labels: BTreeMap<String, String>,
    /// Every state, with 0 where no job is in it.
    pub counts: BTreeMap<String, i64>,
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

/// The one error shape of the API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_json`, `validation_failed`, `not_found`.
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
    /// The offending field, as a path like `limits.memory_bytes`, when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Payload of the SSE `log` event. Exactly one of `text` and `base64` is set: `text` when the
/// chunk is valid UTF-8, otherwise `base64` of the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogEvent {
    /// `stdout` or `stderr`.
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

/// Payload of the SSE `state` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateEvent {
    pub state: JobState,
    pub attempt: i32,
}

/// Payload of the SSE `exit` event, the last event of a job's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExitEvent {
    pub state: JobState,
    pub attempt: i32,
    pub outcome: Option<OutcomeView>,
    pub usage: Option<UsageView>,
}

/// Whether a pull contacts the registry when the image is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicyView {
    /// Use the stored image if there is one (no network at all). The default.
    #[default]
    IfNotPresent,
    /// Resolve the reference again; only blobs not yet stored are downloaded.
    Always,
}

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// An image reference, e.g. `busybox:1.36`, `ghcr.io/org/app@sha256:...`,
    /// `127.0.0.1:5000/tools:1`.
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PullPolicyView>,
}

/// What an image is: a Linux container image or a Wasm artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageKindView {
    Container,
    Wasm,
}

/// One layer of an image, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageLayer {
    /// Digest of the (compressed) layer blob; for Wasm images, of the module.
    pub digest: String,
    pub media_type: String,
    pub size_bytes: u64,
}

/// An image in a worker host's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    pub kind: ImageKindView,
    /// The platform-specific manifest the image was stored from.
    pub manifest_digest: String,
    /// The multi-arch index the manifest was chosen from, if the reference named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// `os/architecture[/variant]`, when known.
    pub platform: Option<String>,
    pub config_digest: String,
    /// Bytes of all blobs (config and layers) as stored.
    pub size_bytes: u64,
    /// Bytes of all extracted files (0 for Wasm images).
    pub unpacked_size_bytes: u64,
    pub layers: Vec<ImageLayer>,
    /// The image's default program (containers): entrypoint, cmd, working dir and user.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When this host stored the image.
    pub stored_at: DateTime<Utc>,
}

/// The images of a worker host, sorted by reference.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<Image>,
}

/// What a pull fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullStatsView {
    pub blobs_downloaded: u64,
    pub bytes_downloaded: u64,
    /// Blobs that were already stored (nothing downloaded for them).
    pub blobs_cached: u64,
    pub layers_extracted: u64,
}

/// The answer to a pull (and the payload of the SSE `done` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullResult {
    pub image: Image,
    /// The image was already stored and the registry was not contacted.
    pub from_cache: bool,
    /// This request joined a pull of the same image already in progress.
    pub coalesced: bool,
    pub stats: PullStatsView,
}

/// SSE `resolved`: the manifest is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullResolvedEvent {
    pub reference: String,
    pub manifest_digest: String,
    pub platform: Option<String>,
    /// The layers (bottom first) with their sizes: one progress bar each.
    pub layers: Vec<PullBlob>,
}

/// SSE `progress`, `cached`, `extracting`, `extracted`: one blob's progress. `done` and `total`
/// are bytes (for `extracted`, `done` is the unpacked size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullBlob {
    pub digest: String,
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub total: u64,
}

/// The answer to an import: the images stored from the layout.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportResult {
    pub images: Vec<Image>,
}

/// What `POST /v1/images/gc` removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GcResult {
    pub removed_blobs: Vec<String>,
    pub removed_layers: Vec<String>,
    pub freed_bytes: u64,
}
