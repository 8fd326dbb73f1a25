//! Test suites: build once, run many cases, judge each one.
//!
//! A job with a `tests` section ([`TestSuiteSpec`]) is run by the worker's suite runner
//! (`worker/suite.rs`) instead of once: an optional **build** step runs in the job's image (or as
//! a Wasm module) with the job's files, and its writable state is kept by the backend
//! (`runtime_core::Chain::keep`); every **case** then starts from that state with a fresh writable
//! layer of its own (`Chain::base`), so the program is built once and no case sees another's
//! writes. Each case's stdout is compared ([`compare`]) or judged by a **checker** program, and
//! gets a [`Verdict`] with its own bill, the first differing line and its (capped) output.
//!
//! What the service records: every case's start and result as events in the job's event log
//! (stream 3 of `log_chunks`, in order with the build's output, resumable like the log: SSE
//! `case_started` / `case_finished`, `GET /v1/jobs/{id}/cases`), and the [`SuiteSummary`] in the
//! attempt's outcome (`outcome.tests`). A build that fails ends the job `compile_error` with the
//! compiler's output; cases that are not all accepted end it `tests_failed` (state `failed`); all
//! accepted is `exited` 0 (`succeeded`). A case that hits an infrastructure failure ends the job
//! `internal_error`, retried like any job: verdicts are never guessed.
//!
//! This module holds the pure parts (wire types, the resolved suite, verdict rules); the runner
//! drives the backends.

pub mod compare;

use std::collections::BTreeMap;

use runtime_core::{Outcome, OutcomeReason};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use compare::{Compare, CompareMode, Difference};

use crate::model::{ResolvedFile, ResolvedLimits, Usage};

/// Most cases in one suite.
pub const MAX_CASES: usize = 1000;
/// Most cases run at once.
pub const MAX_PARALLELISM: u32 = 16;
/// Bytes of each output stream kept in a case's result (the comparison sees up to the case's
/// `output_bytes` limit).
pub const CASE_OUTPUT_CAP: usize = 4096;
/// Bytes of the build's output kept in its result (all of it is in the job's log).
pub const BUILD_OUTPUT_CAP: usize = 16 * 1024;
/// Bytes of a checker's stdout kept as the case's message.
pub const CHECKER_MESSAGE_CAP: usize = 1024;
/// Where a checker finds its three files, relative to its working directory.
pub const CHECK_DIR: &str = ".nekton-check";

// ---------------------------------------------------------------------------------------------
// What a worker runs (stored in the resolved job).

/// A build or checker step, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedStep {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ResolvedFile>,
    pub limits: ResolvedLimits,
}

/// A case, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedCase {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(
        default,
        with = "crate::model::b64",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub stdin: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ResolvedFile>,
    pub limits: ResolvedLimits,
    #[serde(
        default,
        with = "crate::model::b64_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub expect_stdout: Option<Vec<u8>>,
    #[serde(default)]
    pub expect_exit_code: i32,
    /// The case's own comparison: judged by it, not by the suite's checker or comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    pub weight: u32,
}

/// A suite, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedSuite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<ResolvedStep>,
    pub cases: Vec<ResolvedCase>,
    #[serde(default)]
    pub compare: Compare,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker: Option<ResolvedStep>,
    #[serde(default)]
    pub stop_on_first_failure: bool,
    pub parallelism: u32,
}

// ---------------------------------------------------------------------------------------------
// What the service reports.

/// A case's verdict.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Right exit code and output.
    Accepted,
    /// The output differs from the expected one (see `difference`), or the checker rejected it.
    WrongAnswer,
    /// Wall-clock or CPU time (or Wasm fuel) ran out.
    TimeLimit,
    MemoryLimit,
    /// Another exit code than expected, a signal (a crash), or the program could not start.
    RuntimeError,
    /// More output than `limits.output_bytes`.
    OutputLimit,
    /// The checker failed (an exit code other than 0, 1 or 2, a crash, a limit).
    CheckerError,
    /// Not run: the build failed, an earlier case failed with `stop_on_first_failure`, or the
    /// job was cancelled.
    Skipped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::WrongAnswer => "wrong_answer",
            Self::TimeLimit => "time_limit",
            Self::MemoryLimit => "memory_limit",
            Self::RuntimeError => "runtime_error",
            Self::OutputLimit => "output_limit",
            Self::CheckerError => "checker_error",
            Self::Skipped => "skipped",
        }
    }
}

/// Some of a stream's bytes, as text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct CappedText {
    /// The first bytes (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
    /// True when the stream held more than `text` shows.
    pub truncated: bool,
}

impl CappedText {
    pub fn of(bytes: &[u8], cap: usize) -> Self {
        let shown = &bytes[..bytes.len().min(cap)];
        CappedText {
            text: String::from_utf8_lossy(shown).into_owned(),
            truncated: bytes.len() > cap,
        }
    }
}

/// A finished case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaseResult {
    /// Its position in the suite (0-based).
    pub index: u32,
    pub name: String,
    pub verdict: Verdict,
    /// Its points when accepted.
    pub weight: u32,
    /// Why, in words ("exit code 3, expected 0", "killed by signal 11 (SIGSEGV)", the limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    #[schema(required = true)]
    pub signal: Option<i32>,
    /// Where the output first differs from the expected one (`wrong_answer` by comparison).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference: Option<Difference>,
    /// The checker's stdout (cut to 1 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker_message: Option<String>,
    /// The case's bill (null when it did not run).
    #[schema(required = true)]
    pub usage: Option<Usage>,
    /// The first 4 KiB of its stdout and stderr.
    pub stdout: CappedText,
    pub stderr: CappedText,
}

/// How the build step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildResult {
    /// True when it exited 0 and the cases ran on its result.
    pub succeeded: bool,
    /// The build's outcome reason (`exited`, `wall_timeout`, ...).
    pub reason: String,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    #[schema(required = true)]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The build's stdout and stderr as written (the first 16 KiB; all of it is in the job's
    /// log): the compiler's messages.
    pub output: CappedText,
    pub usage: Usage,
}

/// A suite's result: the job's `outcome.tests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SuiteSummary {
    /// Cases accepted.
    pub passed: u32,
    pub total: u32,
    /// Sum of the accepted cases' weights.
    pub score: u64,
    /// Sum of all cases' weights.
    pub max_score: u64,
    /// Cases per verdict (verdicts with none left out).
    pub verdicts: BTreeMap<String, u32>,
    /// The build step's result, when the suite has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildResult>,
}

impl SuiteSummary {
    /// The summary of finished cases.
    pub fn of(
        cases: &[CaseResult],
        total: u32,
        max_score: u64,
        build: Option<BuildResult>,
    ) -> Self {
        let mut verdicts = BTreeMap::new();
        let mut passed = 0;
        let mut score = 0u64;
        for c in cases {
            *verdicts.entry(c.verdict.as_str().to_string()).or_insert(0) += 1;
            if c.verdict == Verdict::Accepted {
                passed += 1;
                score += u64::from(c.weight);
            }
        }
        SuiteSummary {
            passed,
            total,
            score,
            max_score,
            verdicts,
            build,
        }
    }

    /// The job's outcome: `exited` 0 when every case was accepted, `compile_error` when the
    /// build failed, `tests_failed` otherwise.
    pub fn outcome(&self) -> Outcome {
        if let Some(b) = &self.build
            && !b.succeeded
        {
            return Outcome {
                reason: OutcomeReason::CompileError,
                exit_code: b.exit_code,
                signal: b.signal,
                detail: Some(format!(
                    "the build failed ({}); no case ran",
                    b.detail.as_deref().unwrap_or(&b.reason)
                )),
            };
        }
        if self.passed == self.total {
            return Outcome::exited(0);
        }
        let failed: Vec<String> = self
            .verdicts
            .iter()
            .filter(|(v, _)| v.as_str() != "accepted")
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        Outcome::with_reason(
            OutcomeReason::TestsFailed,
            format!(
                "{} of {} cases accepted ({})",
                self.passed,
                self.total,
                failed.join(", ")
            ),
        )
    }
}

/// A case's entry in `GET /v1/jobs/{id}/cases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaseStatus {
    pub index: u32,
    pub name: String,
    /// `pending`, `running` or `finished`.
    pub state: CaseState,
    /// Set once finished.
    #[schema(required = true)]
    pub result: Option<CaseResult>,
}

/// Where a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    Pending,
    Running,
    Finished,
}

/// The cases of a test-suite job, as its latest attempt left them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaseList {
    /// The attempt these are from (0 before the job first ran).
    pub attempt: i32,
    /// The build's result once it finished.
    #[schema(required = true)]
    pub build: Option<BuildResult>,
    pub cases: Vec<CaseStatus>,
}

/// A test-suite event, as stored in the job's event log and sent over SSE (the event's name is
/// `event`, its data the rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SuiteEvent {
    BuildFinished(BuildResult),
    CaseStarted(CaseStartedEvent),
    CaseFinished(CaseResult),
}

/// `case_started`: a case began running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaseStartedEvent {
    pub index: u32,
    pub name: String,
}

impl SuiteEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::BuildFinished(_) => "build_finished",
            Self::CaseStarted(_) => "case_started",
            Self::CaseFinished(_) => "case_finished",
        }
    }

    /// The SSE data: the event without its tag.
    pub fn data(&self) -> serde_json::Value {
        match self {
            Self::BuildFinished(b) => serde_json::to_value(b),
            Self::CaseStarted(s) => serde_json::to_value(s),
            Self::CaseFinished(c) => serde_json::to_value(c),
        }
        .unwrap_or(serde_json::Value::Null)
    }
}

/// The case list of a suite from its attempt's stored events (in order); an event that does not
/// parse (written by a newer version) is passed over.
pub fn case_list(suite: &ResolvedSuite, attempt: i32, events: &[Vec<u8>]) -> CaseList {
    let mut cases: Vec<CaseStatus> = suite
        .cases
        .iter()
        .enumerate()
        .map(|(i, c)| CaseStatus {
            index: i as u32,
            name: c.name.clone(),
            state: CaseState::Pending,
            result: None,
        })
        .collect();
    let mut build = None;
    for e in events {
        match serde_json::from_slice::<SuiteEvent>(e) {
            Ok(SuiteEvent::BuildFinished(b)) => build = Some(b),
            Ok(SuiteEvent::CaseStarted(s)) => {
                if let Some(c) = cases.get_mut(s.index as usize) {
                    c.state = CaseState::Running;
                }
            }
            Ok(SuiteEvent::CaseFinished(r)) => {
                if let Some(c) = cases.get_mut(r.index as usize) {
                    c.state = CaseState::Finished;
                    c.result = Some(r);
                }
            }
            Err(_) => {}
        }
    }
    CaseList {
        attempt,
        build,
        cases,
    }
}

// ---------------------------------------------------------------------------------------------
// Verdict rules.

/// A signal's name, for details ("SIGSEGV").
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// What a run's outcome makes of a case before its output is looked at: `Ok(())` when it exited
/// with the expected code (the output decides), else the verdict and why. Infrastructure
/// failures are not verdicts (`None` inside the error): the suite's attempt fails.
pub fn verdict_of_outcome(
    outcome: &Outcome,
    expected_exit: i32,
) -> Result<(), Option<(Verdict, String)>> {
    use OutcomeReason as R;
    let detail = || outcome.detail.clone().unwrap_or_default();
    let v = match outcome.reason {
        R::Exited => {
            let code = outcome.exit_code.unwrap_or(-1);
            if code == expected_exit {
                return Ok(());
            }
            (
                Verdict::RuntimeError,
                format!("exit code {code}, expected {expected_exit}"),
            )
        }
        R::Signaled => {
            let sig = outcome.signal.unwrap_or(0);
            (
                Verdict::RuntimeError,
                format!("killed by signal {sig} ({})", signal_name(sig)),
            )
        }
        R::WallTimeout => (
            Verdict::TimeLimit,
            with_default(detail(), "wall-clock time limit"),
        ),
        R::CpuTimeout => (Verdict::TimeLimit, with_default(detail(), "CPU time limit")),
        R::MemoryLimit => (Verdict::MemoryLimit, with_default(detail(), "memory limit")),
        R::OutputLimit => (Verdict::OutputLimit, with_default(detail(), "output limit")),
        R::Cancelled => (Verdict::Skipped, "the job was cancelled".into()),
        R::SpecError | R::ImageError => (
            Verdict::RuntimeError,
            with_default(detail(), "the program could not start"),
        ),
        R::WorkerLost | R::InternalError | R::CompileError | R::TestsFailed => return Err(None),
    };
    Err(Some(v))
}

fn with_default(detail: String, default: &str) -> String {
    if detail.is_empty() {
        default.to_string()
    } else {
        detail
    }
}

/// A checker's verdict from its run: exit 0 accepts, 1 or 2 reject (testlib's WA and PE), any
/// other end is the checker's own failure.
pub fn verdict_of_checker(outcome: &Outcome) -> Result<Verdict, Option<String>> {
    match (outcome.reason, outcome.exit_code) {
        (OutcomeReason::Exited, Some(0)) => Ok(Verdict::Accepted),
        (OutcomeReason::Exited, Some(1 | 2)) => Ok(Verdict::WrongAnswer),
        (OutcomeReason::Exited, Some(code)) => Err(Some(format!(
            "the checker exited with code {code} (0 accepts, 1 or 2 rejects)"
        ))),
        (r, _) if r.is_infrastructure_failure() => Err(None),
        (OutcomeReason::Signaled, _) => Err(Some(format!(
            "the checker was killed by signal {}",
            outcome.signal.map(signal_name).unwrap_or_default()
        ))),
        (r, _) => Err(Some(format!(
            "the checker ended with {}{}",
            r.as_str(),
            outcome
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(verdict: Verdict, weight: u32) -> CaseResult {
        CaseResult {
            index: 0,
            name: "c".into(),
            verdict,
            weight,
            detail: None,
            exit_code: None,
            signal: None,
            difference: None,
            checker_message: None,
            usage: None,
            stdout: CappedText::default(),
            stderr: CappedText::default(),
        }
    }

    #[test]
    fn outcomes_map_to_verdicts() {
        use OutcomeReason as R;
        assert_eq!(verdict_of_outcome(&Outcome::exited(0), 0), Ok(()));
        assert_eq!(verdict_of_outcome(&Outcome::exited(3), 3), Ok(()));
        let v = |o: Outcome| verdict_of_outcome(&o, 0).unwrap_err().unwrap();
        assert_eq!(
            v(Outcome::exited(3)),
            (Verdict::RuntimeError, "exit code 3, expected 0".into())
        );
        let segv = Outcome {
            reason: R::Signaled,
            exit_code: None,
            signal: Some(11),
            detail: None,
        };
        assert_eq!(
            v(segv),
            (
                Verdict::RuntimeError,
                "killed by signal 11 (SIGSEGV)".into()
            )
        );
        assert_eq!(
            v(Outcome::with_reason(R::WallTimeout, "")).0,
            Verdict::TimeLimit
        );
        assert_eq!(
            v(Outcome::with_reason(R::CpuTimeout, "x")).0,
            Verdict::TimeLimit
        );
        assert_eq!(
            v(Outcome::with_reason(R::MemoryLimit, "x")).0,
            Verdict::MemoryLimit
        );
        assert_eq!(
            v(Outcome::with_reason(R::OutputLimit, "x")).0,
            Verdict::OutputLimit
        );
        assert_eq!(
            v(Outcome::with_reason(R::SpecError, "x")).0,
            Verdict::RuntimeError
        );
        assert_eq!(
            v(Outcome::with_reason(R::Cancelled, "x")).0,
            Verdict::Skipped
        );
        assert_eq!(
            verdict_of_outcome(&Outcome::with_reason(R::InternalError, "x"), 0),
            Err(None)
        );
    }

    #[test]
    fn checker_exit_codes() {
        assert_eq!(
            verdict_of_checker(&Outcome::exited(0)),
            Ok(Verdict::Accepted)
        );
        assert_eq!(
            verdict_of_checker(&Outcome::exited(1)),
            Ok(Verdict::WrongAnswer)
        );
        assert_eq!(
            verdict_of_checker(&Outcome::exited(2)),
            Ok(Verdict::WrongAnswer)
        );
        assert!(
            verdict_of_checker(&Outcome::exited(7))
                .unwrap_err()
                .unwrap()
                .contains("code 7")
        );
        assert_eq!(
            verdict_of_checker(&Outcome::with_reason(OutcomeReason::WorkerLost, "x")),
            Err(None)
        );
    }

    #[test]
    fn the_summary_scores_by_weight_and_names_the_failures() {
        let cases = [
            case(Verdict::Accepted, 2),
            case(Verdict::WrongAnswer, 3),
            case(Verdict::Accepted, 5),
            case(Verdict::TimeLimit, 1),
        ];
        let s = SuiteSummary::of(&cases, 4, 11, None);
        assert_eq!((s.passed, s.total, s.score, s.max_score), (2, 4, 7, 11));
        let o = s.outcome();
        assert_eq!(o.reason, OutcomeReason::TestsFailed);
        assert_eq!(
            o.detail.as_deref(),
            Some("2 of 4 cases accepted (time_limit 1, wrong_answer 1)")
        );
        let all = SuiteSummary::of(&cases[..1], 1, 2, None);
        assert!(all.outcome().is_success());
    }

    #[test]
    fn events_are_tagged_and_sent_without_the_tag() {
        let e = SuiteEvent::CaseStarted(CaseStartedEvent {
            index: 2,
            name: "big".into(),
        });
        let stored = serde_json::to_value(&e).unwrap();
        assert_eq!(stored["event"], "case_started");
        let back: SuiteEvent = serde_json::from_value(stored).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.name(), "case_started");
        assert_eq!(e.data(), serde_json::json!({"index": 2, "name": "big"}));
    }

    #[test]
    fn capped_text_flags_the_cut() {
        assert_eq!(
            CappedText::of(b"hello", 3),
            CappedText {
                text: "hel".into(),
                truncated: true
            }
        );
        assert!(!CappedText::of(b"hi", 3).truncated);
    }
}
