//! From the stored job spec to the backend's [`ExecRequest`], and from the backend's report to the
//! queue's [`Completion`].

use std::time::Duration;

use runtime_core::{
    ContainerOptions, ExecReport, ExecRequest, InputFile, OutcomeReason, OutputStats, Program,
};

use crate::model::{JobState, NetworkMode, ProgramRef, ResolvedJob, SpecError, Usage};
use crate::store::queue::{Claimed, Completion};

/// Reads a claimed job's stored spec (any storage version, see [`ResolvedJob::from_stored`]).
/// An error means the stored spec is unusable: the job ends as `spec_error`.
pub fn resolved_job(job: &Claimed) -> Result<ResolvedJob, SpecError> {
    ResolvedJob::from_stored(&job.spec)
}

/// Builds the backend request from a claimed job's resolved spec. The program is what was
/// submitted (an image reference is resolved by routing, see [`super::route`]).
pub fn exec_request(job: &Claimed, spec: ResolvedJob) -> ExecRequest {
    let program = match spec.program {
        ProgramRef::Module { digest } => Program::WasmModule { digest },
        ProgramRef::Image { reference } => Program::Image { reference },
    };
    ExecRequest {
        job_id: job.id.to_string(),
        program,
        args: spec.args,
        env: spec.env.into_iter().collect(),
        stdin: spec.stdin,
        files: spec.files.into_iter().map(InputFile::from).collect(),
        limits: spec.limits.to_runtime(),
        container: ContainerOptions {
            entrypoint: spec.entrypoint,
            workdir: spec.workdir,
            user: spec.user,
            network: match spec.network {
                NetworkMode::None => runtime_core::NetworkMode::None,
                NetworkMode::Bridge => runtime_core::NetworkMode::Bridge,
            },
            network_allow: spec.network_allow,
        },
        wasm: runtime_core::WasmOptions {
            preopens: spec
                .wasm_preopens
                .map(|list| list.into_iter().map(Into::into).collect()),
        },
        chain: Default::default(),
        artifacts: spec
            .artifacts
            .as_ref()
            .map(|a| a.to_runtime())
            .unwrap_or_default(),
    }
}

/// A duration in whole milliseconds, saturating (for the usage bill).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The bill of an attempt.
pub fn usage(queue_wait: Duration, report: &ExecReport, output: OutputStats) -> Usage {
    let u = &report.usage;
    Usage {
        queue_wait_ms: Some(millis(queue_wait)),
        setup_ms: Some(millis(u.setup)),
        wall_ms: Some(millis(u.wall)),
        cpu_user_ms: Some(millis(u.cpu_user)),
        cpu_system_ms: Some(millis(u.cpu_system)),
        memory_peak_bytes: u.memory_peak_bytes,
        pids_peak: u.pids_peak,
        pids_limit_hit: u.pids_limit_hit,
        disk_used_bytes: u.disk_used_bytes,
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
    if reason.is_infrastructure_failure() {
        return if attempt < max_attempts {
            (JobState::Scheduled, Some(retry_backoff(attempt)))
        } else {
            (JobState::Error, None)
        };
    }
    match reason {
        R::Exited if exit_code == Some(0) => (JobState::Succeeded, None),
        R::Cancelled => (JobState::Cancelled, None),
        R::SpecError | R::ImageError | R::WorkerLost | R::InternalError => (JobState::Error, None),
        R::Exited
        | R::Signaled
        | R::WallTimeout
        | R::CpuTimeout
        | R::MemoryLimit
        | R::OutputLimit
        | R::CompileError
        | R::TestsFailed => (JobState::Failed, None),
    }
}

/// The queue completion for a finished attempt.
pub fn completion(
    job: &Claimed,
    report: &ExecReport,
    output: OutputStats,
    tests: Option<crate::grading::SuiteSummary>,
) -> Completion {
    let (state, retry_after) = next_state(
        report.outcome.reason,
        report.outcome.exit_code,
        job.attempt,
        job.max_attempts,
    );
    let usage = usage(job.queue_wait, report, output);
    Completion {
        job_id: job.id,
        attempt: job.attempt,
        state,
        retry_after,
        reason: report.outcome.reason,
        exit_code: report.outcome.exit_code,
        signal: report.outcome.signal,
        detail: report.outcome.detail.clone(),
        usage,
        tests,
    }
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
    fn the_retry_rule_is_the_outcome_types() {
        for reason in OutcomeReason::ALL {
            let (state, retry) = next_state(reason, Some(1), 1, 3);
            assert_eq!(
                (state == JobState::Scheduled, retry.is_some()),
                (
                    reason.is_infrastructure_failure(),
                    reason.is_infrastructure_failure()
                ),
                "{reason:?}"
            );
        }
    }
}
