//! The wire types of the v1 API: what clients send and receive. These are the only serde types the
//! API exposes; the OpenAPI document is generated from them (utoipa), and the CLI uses the same
//! structs as a client.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use crate::grading::{
    BuildResult, CappedText, CaseList, CaseResult, CaseStartedEvent, CaseState, CaseStatus,
    Compare, CompareMode, Difference, SuiteSummary, Verdict,
};
pub use crate::model::webhooks::{
    CreatedWebhook, Delivery, DeliveryAttempt, DeliveryPage, DeliveryState, Webhook, WebhookEvent,
};
use crate::model::{BatchRecord, JobOutcome, JobRecord};
pub use crate::model::{
    Encoding, JobState, Module, NetworkMode, OutcomeReason, RuntimeKind, Usage as UsageView,
};

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
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Set once the job is finished (or an attempt was lost).
    #[schema(required = true)]
    pub outcome: Option<OutcomeView>,
    #[schema(required = true)]
    pub usage: Option<UsageView>,
    /// True for a test-suite job (submitted with `tests`): its cases are at
    /// `GET /v1/jobs/{id}/cases`. Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suite: bool,
    /// The W3C trace id of the job (32 lowercase hex digits): the caller's, when the submission
    /// carried a valid `traceparent` header, else a new one. The spans of the submission and of
    /// every attempt (claim, run, completion) belong to this trace (exported over OTLP when the
    /// operator configured it). Absent for jobs stored before nekton kept trace ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^[0-9a-f]{32}$",
        example = "4bf92f3577b34da6a3ce929d0e0e4736"
    )]
    pub trace_id: Option<String>,
    /// The latest attempt's output: only in the answer of a submission that waited for the job
    /// to finish (`POST /v1/jobs?wait=SECS`) and saw it finish. Absent everywhere else; the whole
    /// log is at `GET /v1/jobs/{id}/logs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<JobOutput>,
}

/// A finished job's output, carried by the answer of a waiting submission: each stream's bytes in
/// the order written, up to [`JobOutput::LIMIT`] bytes per stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobOutput {
    pub stdout: StreamOutput,
    pub stderr: StreamOutput,
}

impl JobOutput {
    /// Bytes of each stream an answer carries (1 MiB); the rest is in the job's log.
    pub const LIMIT: usize = 1 << 20;
}

/// One stream's output. Exactly one of `text` and `base64` is set: `text` when the bytes are
/// valid UTF-8, otherwise `base64` of the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// True when the stream held more than this answer carries (1 MiB): the rest is at
    /// `GET /v1/jobs/{id}/logs?stream=…`.
    pub truncated: bool,
}

impl StreamOutput {
    /// The first [`JobOutput::LIMIT`] bytes of `bytes`, as text when they are UTF-8 (a cut that
    /// splits a character gives base64 too: the bytes are carried exactly).
    pub fn new(mut bytes: Vec<u8>) -> Self {
        let truncated = bytes.len() > JobOutput::LIMIT;
        bytes.truncate(JobOutput::LIMIT);
        let (text, base64) = text_or_base64(bytes);
        Self {
            text,
            base64,
            truncated,
        }
    }

    /// The bytes carried; an error says what is wrong with the pair.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        bytes_of(self.text.as_deref(), self.base64.as_deref())
    }
}

/// Bytes as the API carries them (a `log` event, a waiting submission's output): `(text, None)`
/// when they are valid UTF-8, otherwise `(None, base64)` — exactly one of the two set.
pub fn text_or_base64(bytes: Vec<u8>) -> (Option<String>, Option<String>) {
    match String::from_utf8(bytes) {
        Ok(text) => (Some(text), None),
        Err(e) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
        ),
    }
}

/// The bytes of a `text`/`base64` pair made by [`text_or_base64`]. The error completes "… ":
/// `carries invalid base64: …`, or which of the two is set when not exactly one is.
pub fn bytes_of(text: Option<&str>, base64: Option<&str>) -> Result<Vec<u8>, String> {
    match (text, base64) {
        (Some(text), None) => Ok(text.as_bytes().to_vec()),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("carries invalid base64: {e}")),
        (Some(_), Some(_)) => {
            Err("carries both `text` and `base64`; expected exactly one".to_string())
        }
        (None, None) => {
            Err("carries neither `text` nor `base64`; expected exactly one".to_string())
        }
    }
}

impl From<JobRecord> for Job {
    fn from(r: JobRecord) -> Self {
        Self {
            id: r.id,
            state: r.state,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            queue: r.queue,
            priority: r.priority,
            labels: r.labels,
            batch_id: r.batch_id,
            program: r.program,
            cancel_requested: r.cancel_requested,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: r.outcome.map(OutcomeView::from),
            usage: r.usage,
            suite: r.suite,
            trace_id: r.trace_id,
            output: None,
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeView {
    /// Why the job ended (`exited`, `signaled`, `wall_timeout`, `cpu_timeout`, `memory_limit`,
    /// `output_limit`, `cancelled`, `image_error`, `spec_error`, `worker_lost`,
    /// `internal_error`; test suites: `compile_error`, `tests_failed`): the typed
    /// [`OutcomeReason`], a string enum on the wire (a client keeps a newer one as text).
    #[schema(schema_with = outcome_reason_schema)]
    pub reason: Named<OutcomeReason>,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    #[schema(required = true)]
    pub signal: Option<i32>,
    /// Human-readable detail: the trap, the limit that fired, the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Test-suite jobs: cases passed, the score, verdict counts and the build's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<SuiteSummary>,
}

impl From<JobOutcome> for OutcomeView {
    fn from(o: JobOutcome) -> Self {
        Self {
            reason: o.reason.into(),
            exit_code: o.exit_code,
            signal: o.signal,
            detail: o.detail,
            tests: o.tests,
        }
    }
}

/// A closed set of names the server sends ([`OutcomeReason`], [`super::error::ErrorCode`]).
pub trait WireName: Sized + Copy {
    fn as_str(self) -> &'static str;
    fn parse(text: &str) -> Option<Self>;
}

impl WireName for OutcomeReason {
    fn as_str(self) -> &'static str {
        OutcomeReason::as_str(self)
    }
    fn parse(text: &str) -> Option<Self> {
        OutcomeReason::parse(text)
    }
}

/// A name from a closed set as the wire carries it: the server always sends one it knows
/// ([`Named::Known`]); a client reading an answer from a newer server keeps a name it does not
/// know as its text ([`Named::Newer`]) instead of failing to read the whole record. On the wire
/// both are the plain string; the OpenAPI document lists the known names as an enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named<T> {
    Known(T),
    Newer(String),
}

impl<T: WireName> Named<T> {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(t) => t.as_str(),
            Self::Newer(text) => text,
        }
    }

    /// The typed value, `None` for a name newer than this version.
    pub fn known(&self) -> Option<T> {
        match self {
            Self::Known(t) => Some(*t),
            Self::Newer(_) => None,
        }
    }

    pub fn parse(text: &str) -> Self {
        T::parse(text).map_or_else(|| Self::Newer(text.to_owned()), Self::Known)
    }
}

impl<T: WireName> From<T> for Named<T> {
    fn from(t: T) -> Self {
        Self::Known(t)
    }
}

impl<T: WireName> From<&str> for Named<T> {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

impl<T: WireName> PartialEq<&str> for Named<T> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<T: WireName> PartialEq<T> for Named<T>
where
    T: PartialEq,
{
    fn eq(&self, other: &T) -> bool {
        self.known().is_some_and(|t| t == *other)
    }
}

impl<T: WireName> std::fmt::Display for Named<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<T: WireName> Serialize for Named<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de, T: WireName> Deserialize<'de> for Named<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// The OpenAPI schema of a [`Named`] field: a string enum of every name in `all`.
pub(crate) fn names_schema<T: WireName>(
    all: &[T],
    description: &str,
) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(all.iter().map(|n| n.as_str())))
        .description(Some(description))
        .build()
}

/// The OpenAPI schema of `outcome.reason`: a string enum of every [`OutcomeReason`].
fn outcome_reason_schema() -> utoipa::openapi::schema::Object {
    names_schema(
        &OutcomeReason::ALL,
        "Why the job ended. Only `worker_lost` and `internal_error` (the infrastructure's \
         failures) are retried.",
    )
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

impl From<BatchRecord> for Batch {
    fn from(r: BatchRecord) -> Self {
        Self {
            id: r.id,
            created_at: r.created_at,
            total: r.total,
            labels: r.labels,
            counts: r
                .counts
                .into_iter()
                .map(|(state, n)| (state.as_str().to_owned(), n))
                .collect(),
            finished: r.finished,
        }
    }
}

/// A Wasm job's options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmSpec {
    /// The directories the guest is given, in this order (the first is descriptor 3 in WASI
    /// preview 1; a component gets them from `wasi:filesystem/preopens` in this order), at most
    /// 16. Each is a directory of the job's directory — which holds the job's `files` and is
    /// capped by `limits.disk_bytes` — shown at a guest path, read-write or read-only. `[]`
    /// gives the guest no directory at all. Omitted: the job's whole directory read-write at
    /// `/`, the layout WASI programs expect (`wasmtime --dir <dir>::/`); a preview 1 module
    /// that imports neither `fd_prestat_get` nor any `path_*` function, and has no files,
    /// gets none (it could not use it). Everything in the job's directory is gone after the
    /// job, except artifacts.
    #[schema(max_items = 16, example = json!([{"guest": "/data", "dir": "input", "mode": "ro"}, {"guest": "/out", "dir": "out"}]))]
    pub preopens: Vec<PreopenSpec>,
}

/// One directory a Wasm job is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreopenSpec {
    /// The name the guest sees: an absolute path (`/`, `/data`), no `.`, `..` or empty
    /// component, at most 255 bytes; each `guest` once.
    #[schema(example = "/data")]
    pub guest: String,
    /// The directory of the job's directory to show there: a relative path (`input`,
    /// `a/b`) with no `.`, `..` or empty component, at most 255 bytes; created empty if the
    /// job's files do not make it. Omitted: the job's whole directory. A file `input/x.txt` of
    /// the job is `/data/x.txt` in the guest with `{"guest": "/data", "dir": "input"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "input")]
    pub dir: Option<String>,
    /// `rw` (default) or `ro`: read-only lets the guest read and list but not create,
    /// write, rename or remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PreopenMode>,
}

/// A preopen's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PreopenMode {
    #[default]
    Rw,
    Ro,
}

/// A job's network: the mode alone (`"none"`, `"bridge"`), or an object with the mode and, for
/// bridge jobs, an egress allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum NetworkSpec {
    /// `"none"` or `"bridge"`.
    Mode(NetworkMode),
    /// `{"mode": "bridge", "allow": ["198.51.100.2/32:8000"]}`.
    Policy(NetworkPolicy),
}

/// The object form of `network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    pub mode: NetworkMode,
    /// Bridge jobs only: the destinations the job may reach, at most 64, each `CIDR` (every
    /// port and protocol) or `CIDR:PORT` (TCP and UDP to that port): `198.51.100.0/24`,
    /// `198.51.100.2/32:8000`, `192.0.2.10:443` (a bare address is a /32); the network's host
    /// bits must be zero. IPv6 syntax is `2001:db8::/32` and `[2001:db8::/32]:443`, but bridge
    /// jobs have no IPv6 yet, so IPv6 destinations are refused. Everything else the job sends
    /// is dropped, except DNS (port 53) to the worker's configured resolvers; `[]` leaves DNS
    /// only. The host's bridge rules still apply to listed destinations (the worker's own
    /// addresses, 169.254.0.0/16 and other jobs stay unreachable unless the operator opened
    /// them). Omitted: the bridge rules alone, as with `"bridge"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 64, example = json!(["198.51.100.2/32:8000", "203.0.113.0/24"]))]
    pub allow: Option<Vec<String>>,
}

impl NetworkSpec {
    pub fn mode(&self) -> NetworkMode {
        match self {
            Self::Mode(m) => *m,
            Self::Policy(p) => p.mode,
        }
    }

    /// The egress allow-list, if the job gave one.
    pub fn allow(&self) -> Option<&[String]> {
        match self {
            Self::Mode(_) => None,
            Self::Policy(p) => p.allow.as_deref(),
        }
    }
}

impl From<NetworkMode> for NetworkSpec {
    fn from(m: NetworkMode) -> Self {
        Self::Mode(m)
    }
}

/// A string is the mode, an object the policy — each with its own precise error (an untagged
/// derive would only say that nothing matched).
impl<'de> Deserialize<'de> for NetworkSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer};
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = NetworkSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "`\"none\"`, `\"bridge\"`, or an object like                      `{\"mode\": \"bridge\", \"allow\": [\"198.51.100.2/32:8000\"]}`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NetworkSpec, E> {
                NetworkMode::deserialize(v.into_deserializer()).map(NetworkSpec::Mode)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<NetworkSpec, A::Error> {
                NetworkPolicy::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(NetworkSpec::Policy)
            }
        }
        d.deserialize_any(V)
    }
}

impl JobSpec {
    /// The network mode asked for, if any.
    pub fn network_mode(&self) -> Option<NetworkMode> {
        self.network.as_ref().map(NetworkSpec::mode)
    }
}

/// A file placed in the job's sandbox before it starts: for Wasm jobs below the read-write
/// directory preopened as `/`, for containers below the working directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputFileSpec {
    /// Relative path, e.g. `input/case1.txt`; no `..`, not absolute.
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// The job's network: `"none"` (the default) or `"bridge"`, or the object form
    /// `{"mode": "bridge", "allow": [...]}` with an egress allow-list (see `NetworkPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// Wasm jobs only: the guest's filesystem layout (see `WasmSpec`). Omitted: the job's
    /// directory, holding its `files`, preopened read-write at `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmSpec>,
    /// Files to keep after the job, downloadable with `GET /v1/jobs/{id}/artifacts`: paths or
    /// glob patterns (`*`, `?`, `[...]` within a path component, `**` for any depth), relative to
    /// the working directory (Wasm: the job's `/`) or absolute; at most 64, each at most 1024
    /// bytes, no `..` or empty component. Only regular files the job wrote are kept (never a
    /// symlink or a hard link), each up to the operator's per-file cap (cut and flagged past it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
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
    /// Makes the job a test suite: build once, run every case on the build's result, judge each
    /// (per-case verdicts in `GET /v1/jobs/{id}/cases` and as `case_*` events on the job's
    /// event stream; the summary in `outcome.tests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSuiteSpec>,
}

// Test suites (see `crate::grading`).

/// A test suite: the job's program is built once (optional) and run once per case.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSuiteSpec {
    /// Runs once, before the cases, with the job's `files`; its writable state (the compiled
    /// program) is where every case starts. A non-zero exit or a limit ends the job
    /// `compile_error` and no case runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<StepSpec>,
    /// The cases (1 to 1000), run with the job's `entrypoint`/`args` unless a case sets `args`.
    pub cases: Vec<CaseSpec>,
    /// How stdout is compared with `expect.stdout`. Default `trim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// Judges the cases' output instead of `compare` (problems with many right answers); a case
    /// with its own `compare` is compared instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker: Option<StepSpec>,
    /// After the first case that is not accepted, the rest are `skipped`.
    #[serde(default)]
    pub stop_on_first_failure: bool,
    /// Cases run at once (1 to 16; never more than the worker's slots). Default 1: in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 16)]
    pub parallelism: Option<u32>,
}

/// A build or checker step.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Containers: the step's argv, run in the job's image (it replaces the image's entrypoint
    /// and cmd), e.g. `["sh", "-c", "cc -O2 -o prog main.c"]`. Wasm: the arguments of `module`.
    /// A checker gets three more: the paths of the case's input, the expected output and the
    /// program's output; it exits 0 to accept, 1 (or 2) to reject, and its stdout is the message.
    #[serde(default)]
    pub command: Vec<String>,
    /// Wasm jobs: the step's module (`sha256:...` from `POST /v1/modules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// More input files for this step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFileSpec>,
    /// The step's limits; omitted fields take the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
}

/// One test case.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// Unique within the suite: 1–128 characters, no control characters or `/`.
    pub name: String,
    /// Replaces the job's `args` for this case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_encoding: Option<Encoding>,
    /// More input files for this case (beside the build's result).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFileSpec>,
    /// The case's limits; omitted fields take the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    #[serde(default)]
    pub expect: ExpectSpec,
    /// Judge this case by this comparison (not by the suite's checker or `compare`): e.g. one
    /// `float` case in an `exact` suite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// Points for the score when accepted. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub weight: Option<u32>,
}

/// What a case must produce.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// The expected stdout, compared by the suite's `compare` mode (or given to the checker).
    /// Omitted: any output is accepted (only the exit code counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<Encoding>,
    /// The exit code the program must end with. Default 0; another is `runtime_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A job's artifacts: the files its latest attempt left that its `artifacts` patterns matched,
/// collected after it ended (regular files only; see docs/artifacts.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactList {
    /// The attempt these artifacts are from (the job's latest; 0 if it never ran).
    pub attempt: i32,
    /// The collected files, sorted by path (a test suite's case files under `cases/NAME/`).
    pub artifacts: Vec<ArtifactEntry>,
    /// Matches that were not collected, with why (symlinks, hard links, directories, caps).
    pub skipped: Vec<SkippedArtifactEntry>,
}

/// One collected file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactEntry {
    /// Where it was found: relative to the working directory, or absolute for an absolute
    /// pattern. Download it at `/v1/jobs/{id}/artifacts/{path}`.
    pub path: String,
    /// The file's size when collected.
    pub size: u64,
    /// The bytes stored: less than `size` when a cap cut the file.
    pub stored_bytes: u64,
    /// True when a cap cut the file (per file, or the run's total).
    pub truncated: bool,
    /// SHA-256 of the stored bytes, in hex.
    #[schema(example = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")]
    pub sha256: String,
    /// Unix permission bits (e.g. 420 = 0o644).
    pub mode: u32,
}

/// A match of an artifact pattern that was not collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SkippedArtifactEntry {
    /// The match's path (empty for a note about the search itself).
    pub path: String,
    /// Why it was not collected.
    pub reason: String,
}

/// Many jobs submitted at once, sharing defaults.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Fields applied to every job unless the job sets them (`env`, `labels` and `limits` are
    /// merged key by key).
    #[serde(default)]
    #[schema(value_type = JobSpec)]
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// The jobs (1 to 10,000), each a job spec (what `defaults` does not give).
    #[schema(value_type = Vec<JobSpec>)]
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

/// One page of batches, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchPage {
    pub batches: Vec<Batch>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// What `POST /v1/batches/{id}/cancel` did, and the batch afterwards.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchCancelled {
    /// Jobs that were waiting (queued or scheduled) and are now `cancelled`.
    pub cancelled: i64,
    /// Running jobs whose cancel was requested: their workers kill them within about a second
    /// and record `cancelled`.
    pub cancel_requested: i64,
    /// The batch after the cancel (running jobs may still count as running).
    pub batch: Batch,
}

/// One page of the tenant's modules, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModulePage {
    pub modules: Vec<Module>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The server's version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    /// The `nekton` crate version of the server binary.
    pub version: String,
    /// The git commit the server was built from (the `NEKTON_GIT_COMMIT` variable at build
    /// time), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The HTTP API's version (the path prefix).
    pub api_version: String,
    /// The newest schema migration the database has applied.
    #[schema(required = true)]
    pub migration: Option<i64>,
    /// The newest schema migration this server binary carries.
    pub migration_latest: i64,
}

/// A webhook endpoint to create.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where to POST events: an http or https URL without credentials. Deliveries reach public
    /// addresses only unless the operator allows a range (`--webhook-allow`).
    #[schema(example = "https://example.com/hooks/nekton")]
    pub url: String,
    /// What to send (default: every event): `job.completed`, `batch.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::model::webhooks::WebhookEvent>>, example = json!(["job.completed"]))]
    pub events: Option<Vec<String>>,
}

/// The one error shape of the API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_json`, `validation_failed`, `not_found`: one
    /// of the enum's values (a string on the wire; the CLI adds `http_<status>` for non-API
    /// answers).
    #[schema(schema_with = super::error::error_code_schema)]
    pub code: Named<super::error::ErrorCode>,
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
    /// When the chunk was stored (within the worker's flush interval of when the job wrote it);
    /// absent for output stored before the server recorded times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
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
    #[schema(required = true)]
    pub outcome: Option<OutcomeView>,
    #[schema(required = true)]
    pub usage: Option<UsageView>,
}

/// The `data` of one event of a job's log stream (`GET /v1/jobs/{id}/logs` with
/// `Accept: text/event-stream`), by the SSE `event:` name: `state` ([`StateEvent`]) when the job
/// changes state, `log` ([`LogEvent`]) for each piece of output, and finally `exit`
/// ([`ExitEvent`]), after which the server closes the stream (a reconnect after it gets 204). A
/// test-suite job's stream also has `build_finished` ([`BuildResult`]) after its build,
/// `case_started` ([`CaseStartedEvent`]) and `case_finished` ([`CaseResult`]) per case, in order
/// with the output. Each event has an `id:` to resume from with `Last-Event-ID`. Documentation
/// only: the server writes the payloads directly.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // never built: it names the stream's payloads in the OpenAPI document
pub enum LogStreamEvent {
    State(StateEvent),
    Log(LogEvent),
    Exit(Box<ExitEvent>),
    BuildFinished(Box<BuildResult>),
    CaseStarted(CaseStartedEvent),
    CaseFinished(Box<CaseResult>),
}

/// The `data` of one event of a batch's stream (`GET /v1/batches/{id}/events`), by the SSE
/// `event:` name: `job` (a [`Job`] record) as each of the batch's jobs finishes, its id the job's
/// position in finish order, then `done` (the [`Batch`] summary, id `done`), after which the
/// server closes the stream. Documentation only, like [`LogStreamEvent`].
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // never built: it names the stream's payloads in the OpenAPI document
pub enum BatchStreamEvent {
    Job(Box<Job>),
    Done(Batch),
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
    #[schema(required = true)]
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
    #[schema(required = true)]
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
    #[schema(required = true)]
    pub done: u64,
    #[serde(default)]
    #[schema(required = true)]
    pub total: u64,
}

/// The `data` of one event of a pull's progress stream (`POST /v1/images/pull` with
/// `Accept: text/event-stream`), by the SSE `event:` name: `resolved` ([`PullResolvedEvent`])
/// once the manifest is known, then `progress`, `cached`, `extracting` and `extracted`
/// ([`PullBlob`]) per layer, and finally `done` (the [`PullResult`]) or `error` (an
/// [`ErrorBody`]), after which the stream ends. Documentation only, like [`LogStreamEvent`].
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // never built: it names the stream's payloads in the OpenAPI document
pub enum PullStreamEvent {
    Resolved(PullResolvedEvent),
    Blob(PullBlob),
    Done(Box<PullResult>),
    Error(ErrorBody),
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

/// The edge between the wire and the model: a spec after [`resolve`](super::validate::resolve)
/// (defaults and limits filled in) becomes the job a worker runs. Fails only on a spec that did
/// not go through resolution (a missing limit, bad base64, neither or both of module and image).
impl TryFrom<JobSpec> for crate::model::ResolvedJob {
    type Error = crate::model::SpecError;

    fn try_from(spec: JobSpec) -> Result<Self, Self::Error> {
        use crate::model::{ProgramRef, SpecError, decode};
        let tests = match spec.tests {
            Some(t) => Some(resolve_suite(t)?),
            None => None,
        };
        let program = match (spec.module, spec.image) {
            (Some(digest), None) => ProgramRef::Module { digest },
            (None, Some(reference)) => ProgramRef::Image { reference },
            _ => {
                return Err(SpecError(
                    "the spec names neither exactly one module nor one image".into(),
                ));
            }
        };
        let stdin = match &spec.stdin {
            Some(s) => {
                decode(s, spec.stdin_encoding).map_err(|e| SpecError(format!("stdin: {e}")))?
            }
            None => Vec::new(),
        };
        Ok(Self {
            program,
            runtime: spec.runtime.unwrap_or_default(),
            entrypoint: spec.entrypoint,
            args: spec.args,
            env: spec.env,
            workdir: spec.workdir,
            user: spec.user,
            stdin,
            files: resolved_files(spec.files)?,
            limits: resolved_limits(spec.limits, "")?,
            network: spec
                .network
                .as_ref()
                .map(NetworkSpec::mode)
                .unwrap_or_default(),
            network_allow: match spec.network.as_ref().and_then(NetworkSpec::allow) {
                Some(list) => Some(
                    runtime_core::egress::parse_all(list)
                        .map_err(|(i, e)| SpecError(format!("network.allow[{i}]: {e}")))?,
                ),
                None => None,
            },
            wasm_preopens: spec.wasm.map(|w| {
                w.preopens
                    .into_iter()
                    .map(|p| crate::model::ResolvedPreopen {
                        guest: p.guest,
                        dir: p.dir.unwrap_or_default(),
                        read_only: p.mode == Some(PreopenMode::Ro),
                    })
                    .collect()
            }),
            tests,
            // The caps are the default policy's here; `api/jobs.rs::prepare` sets the operator's.
            artifacts: (!spec.artifacts.is_empty()).then(|| {
                crate::model::ResolvedArtifacts::new(
                    spec.artifacts,
                    &crate::config::LimitPolicy::default(),
                )
            }),
        })
    }
}

/// A binary request body (a Wasm module, a tar): the raw bytes, not JSON.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BinaryBody(pub Vec<u8>);

/// The resolved limits of a validated spec (every default filled in by `validate::resolve`).
fn resolved_limits(
    limits: Option<LimitsSpec>,
    at: &str,
) -> Result<crate::model::ResolvedLimits, crate::model::SpecError> {
    use crate::model::{ResolvedLimits, SpecError};
    let limits = limits.unwrap_or_default();
    let missing = |field: &str| SpecError(format!("the resolved spec lacks {at}limits.{field}"));
    Ok(ResolvedLimits {
        wall_time_ms: limits.wall_time_ms.ok_or_else(|| missing("wall_time_ms"))?,
        cpu_time_ms: limits.cpu_time_ms,
        memory_bytes: limits.memory_bytes.ok_or_else(|| missing("memory_bytes"))?,
        fuel: limits.fuel,
        output_bytes: limits.output_bytes.ok_or_else(|| missing("output_bytes"))?,
        pids: limits.pids,
        disk_bytes: limits.disk_bytes,
    })
}

fn resolved_files(
    files: Vec<InputFileSpec>,
) -> Result<Vec<crate::model::ResolvedFile>, crate::model::SpecError> {
    use crate::model::{ResolvedFile, SpecError, decode};
    files
        .into_iter()
        .map(|f| {
            Ok(ResolvedFile {
                content: decode(&f.content, f.encoding)
                    .map_err(|e| SpecError(format!("file {}: {e}", f.path)))?,
                path: f.path,
                mode: f.mode,
            })
        })
        .collect()
}

fn resolved_step(
    step: StepSpec,
    at: &str,
) -> Result<crate::grading::ResolvedStep, crate::model::SpecError> {
    Ok(crate::grading::ResolvedStep {
        command: step.command,
        module: step.module,
        files: resolved_files(step.files)?,
        limits: resolved_limits(step.limits, at)?,
    })
}

/// A validated suite (limits filled in) as the worker runs it.
fn resolve_suite(
    suite: TestSuiteSpec,
) -> Result<crate::grading::ResolvedSuite, crate::model::SpecError> {
    use crate::grading::{ResolvedCase, ResolvedSuite};
    use crate::model::{SpecError, decode};
    let cases = suite
        .cases
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let at = format!("tests.cases[{i}].");
            Ok(ResolvedCase {
                stdin: match &c.stdin {
                    Some(s) => decode(s, c.stdin_encoding)
                        .map_err(|e| SpecError(format!("{at}stdin: {e}")))?,
                    None => Vec::new(),
                },
                expect_stdout: match &c.expect.stdout {
                    Some(s) => Some(
                        decode(s, c.expect.stdout_encoding)
                            .map_err(|e| SpecError(format!("{at}expect.stdout: {e}")))?,
                    ),
                    None => None,
                },
                expect_exit_code: c.expect.exit_code.unwrap_or(0),
                compare: c.compare,
                weight: c.weight.unwrap_or(1),
                files: resolved_files(c.files)?,
                limits: resolved_limits(c.limits, &at)?,
                args: c.args,
                name: c.name,
            })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    Ok(ResolvedSuite {
        build: suite
            .build
            .map(|b| resolved_step(b, "tests.build."))
            .transpose()?,
        cases,
        compare: suite.compare.unwrap_or_default(),
        checker: suite
            .checker
            .map(|c| resolved_step(c, "tests.checker."))
            .transpose()?,
        stop_on_first_failure: suite.stop_on_first_failure,
        parallelism: suite.parallelism.unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enum values of a schema.
    fn enum_values(schema: utoipa::openapi::schema::Object) -> Vec<String> {
        let schema = serde_json::to_value(schema).unwrap();
        schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn reason_schema_lists_every_reason() {
        let expected: Vec<&str> = OutcomeReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(enum_values(outcome_reason_schema()), expected);
    }

    #[test]
    fn error_code_schema_lists_every_code() {
        use super::super::error::{ErrorCode, error_code_schema};
        let values = enum_values(error_code_schema());
        let expected: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(values, expected);
        assert!(values.iter().any(|v| v == "validation_failed"));
        assert!(values.iter().any(|v| v == "image_not_in_registry"));
    }

    #[test]
    fn outcome_reason_is_its_text_on_the_wire_and_a_newer_one_is_kept_as_text() {
        for reason in OutcomeReason::ALL {
            let view = OutcomeView {
                reason: reason.into(),
                exit_code: None,
                signal: None,
                detail: None,
                tests: None,
            };
            let json = serde_json::to_value(&view).unwrap();
            assert_eq!(json["reason"], reason.as_str());
            assert_eq!(serde_json::from_value::<OutcomeView>(json).unwrap(), view);
        }
        let newer: OutcomeView = serde_json::from_value(serde_json::json!({
            "reason": "exploded", "exit_code": null, "signal": null
        }))
        .unwrap();
        assert_eq!(newer.reason, Named::Newer("exploded".into()));
        assert_eq!(newer.reason.known(), None);
        assert_eq!(serde_json::to_value(&newer).unwrap()["reason"], "exploded");
        assert_eq!(
            Named::<OutcomeReason>::parse("exited"),
            OutcomeReason::Exited
        );
    }
}
