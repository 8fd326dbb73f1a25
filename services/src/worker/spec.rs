//! From the stored job spec to the backend's [`ExecRequest`], and from the backend's report to the
//! queue's [`Completion`].

use std::time::Duration;

use base64::Engine as _;
use runtime_core::{
    ContainerOptions, ExecReport, ExecRequest, InputFile, Limits, OutcomeReason, OutputStats,
    Program,
};
use uuid::Uuid;

use crate::api::types::{Encoding, JobSpec, JobState, NetworkMode, RuntimeKind, UsageView};
use crate::store::queue::{Claimed, Completion};

/// Decodes a text field according to its encoding.
pub fn decode(content: &str, encoding: Option<Encoding>) -> Result<Vec<u8>, String> {
    match encoding.unwrap_or_default() {
        Encoding::Utf8 => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|e| format!("invalid base64: {e}")),
    }
}

/// Builds the backend request from a claimed job's stored (already validated and resolved) spec.
/// An error here means the stored spec is unusable: the job ends as `spec_error`.
pub fn exec_request(job: &Claimed) -> Result<ExecRequest, String> {
    let spec: JobSpec = serde_json::from_value(job.spec.clone())
        .map_err(|e| format!("stored job spec is malformed: {e}"))?;
    let program = match (&spec.module, &spec.image) {
        (Some(digest), None) => Program::WasmModule {
            digest: digest.clone(),
        },
        (None, Some(reference)) => Program::Image {
            reference: reference.clone(),
        },
        _ => return Err("stored job spec names neither exactly one module nor one image".into()),
    };
    let limits = spec.limits.unwrap_or_default();
    let stdin = match &spec.stdin {
        Some(s) => decode(s, spec.stdin_encoding).map_err(|e| format!("stdin: {e}"))?,
        None => Vec::new(),
    };
    let files = spec
        .files
        .iter()
        .map(|f| {
            Ok(InputFile {
                path: f.path.clone(),
                content: decode(&f.content, f.encoding)
                    .map_err(|e| format!("file {}: {e}", f.path))?,
                mode: f.mode,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ExecRequest {
        job_id: job.id.to_string(),
        program,
        args: spec.args,
        env: spec.env.into_iter().collect(),
        stdin,
        files,
        limits: Limits {
            wall_time: Duration::from_millis(
                limits
                    .wall_time_ms
                    .ok_or("stored spec lacks wall_time_ms")?,
            ),
            cpu_time: limits.cpu_time_ms.map(Duration::from_millis),
            memory_bytes: limits
                .memory_bytes
                .ok_or("stored spec lacks memory_bytes")?,
            fuel: limits.fuel,
            output_bytes: limits
                .output_bytes
                .ok_or("stored spec lacks output_bytes")?,
            pids: limits.pids,
            disk_bytes: limits.disk_bytes,
        },
        container: ContainerOptions {
            entrypoint: spec.entrypoint,
            workdir: spec.workdir,
            user: spec.user,
            network: match spec.network.unwrap_or_default() {
                NetworkMode::None => runtime_core::NetworkMode::None,
                NetworkMode::Bridge => runtime_core::NetworkMode::Bridge,
            },
        },
    })
}

/// The runtime a stored spec asks for (`auto` when unset or unreadable: the request builder
/// reports a malformed spec itself).
pub fn runtime_of(job: &Claimed) -> RuntimeKind {
    job.spec
        .get("runtime")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// A duration in whole milliseconds, saturating (for the usage bill).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The bill as the API shows it.
pub fn usage_view(queue_wait: Duration, report: &ExecReport, output: OutputStats) -> UsageView {
    let u = &report.usage;
    UsageView {
        queue_wait_ms: Some(millis(queue_wait)),
        setup_ms: Some(millis(u.setup)),
        wall_ms: Some(millis(u.wall)),
        cpu_user_ms: Some(millis(u.cpu_user)),
        cpu_system_ms: Some(millis(u.cpu_system)),
        memory_peak_bytes: u.memory_peak_bytes,
        pids_peak: u.pids_peak,
        stdout_bytes: output.stdout_bytes,
        stderr_bytes: output.stderr_bytes,
        stdout_truncated: output.stdout_truncated,
        stderr_truncated: output.stderr_truncated,
        fuel_consumed: u.fuel_consumed,
        wasm_memory_peak_bytes: u.wasm_memory_peak_bytes,
        net_rx_bytes: u.net_rx_bytes,
        net_tx_bytes: u.net_tx_bytes,
    }
}

/// Backoff before retrying an attempt that failed for infrastructure reasons: 1 s, 2 s, 4 s, …
/// capped at 5 minutes.
pub fn retry_backoff(attempt: i32) -> Duration {
    let exp = attempt.clamp(1, 9) - 1;
    Duration::from_secs((1u64 << exp).min(300))
}

/// The state a finished attempt moves its job to, and the retry delay if it is retried.
pub fn next_state(
    reason: OutcomeReason,
    exit_code: Option<i32>,
    attempt: i32,
    max_attempts: i32,
) -> (JobState, Option<Duration>) {
    use OutcomeReason as R;
    match reason {
        R::Exited if exit_code == Some(0) => (JobState::Succeeded, None),
        R::Exited
        | R::Signaled
        | R::WallTimeout
        | R::CpuTimeout
        | R::MemoryLimit
        | R::OutputLimit => (JobState::Failed, None),
        R::Cancelled => (JobState::Cancelled, None),
        R::SpecError | R::ImageError => (JobState::Error, None),
        R::InternalError | R::WorkerLost => {
            if attempt < max_attempts {
                (JobState::Scheduled, Some(retry_backoff(attempt)))
            } else {
                (JobState::Error, None)
            }
        }
    }
}

/// The queue completion for a finished attempt.
pub fn completion(job: &Claimed, report: &ExecReport, output: OutputStats) -> Completion {
    let (state, retry_after) = next_state(
        report.outcome.reason,
        report.outcome.exit_code,
        job.attempt,
        job.max_attempts,
    );
    let usage = usage_view(job.queue_wait, report, output);
    Completion {
        job_id: job.id,
        attempt: job.attempt,
        state,
        retry_after,
        reason: report.outcome.reason.as_str().to_string(),
        exit_code: report.outcome.exit_code,
        signal: report.outcome.signal,
        detail: report.outcome.detail.clone(),
        usage: serde_json::to_value(usage).unwrap_or(serde_json::Value::Null),
    }
}

/// A completion for a job that could not even be handed to a backend.
pub fn failed_before_start(job: &Claimed, reason: OutcomeReason, detail: String) -> Completion {
    let report = ExecReport {
        outcome: runtime_core::Outcome::with_reason(reason, detail),
        usage: runtime_core::Usage::default(),
    };
    completion(job, &report, OutputStats::default())
}

/// Job ids in NOTIFY payloads are comma-separated.
pub fn parse_ids(payload: &str) -> impl Iterator<Item = Uuid> + '_ {
    payload
        .split(',')
        .filter_map(|s| Uuid::parse_str(s.trim()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_infrastructure_failures_retry() {
        use OutcomeReason as R;
        assert_eq!(
            next_state(R::Exited, Some(0), 1, 3),
            (JobState::Succeeded, None)
        );
        assert_eq!(
            next_state(R::Exited, Some(1), 1, 3),
            (JobState::Failed, None)
        );
        assert_eq!(
            next_state(R::WallTimeout, None, 1, 3),
            (JobState::Failed, None)
        );
        assert_eq!(
            next_state(R::SpecError, None, 1, 3),
            (JobState::Error, None)
        );
        assert_eq!(
            next_state(R::Cancelled, None, 1, 3),
            (JobState::Cancelled, None)
        );
        assert_eq!(
            next_state(R::InternalError, None, 1, 3),
            (JobState::Scheduled, Some(Duration::from_secs(1)))
        );
        assert_eq!(
            next_state(R::InternalError, None, 2, 3),
            (JobState::Scheduled, Some(Duration::from_secs(2)))
        );
        assert_eq!(
            next_state(R::InternalError, None, 3, 3),
            (JobState::Error, None)
        );
    }

    #[test]
    fn notify_payload_ids() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let ids: Vec<Uuid> = parse_ids(&format!("{a},{b},garbage")).collect();
        assert_eq!(ids, vec![a, b]);
    }
}
