//! The suite runner: a test-suite job's build, cases and checker, on one backend, within the
//! job's one claim (see [`crate::grading`] for the rules).
//!
//! - The **build** runs with `Chain::keep`: the backend hands back its writable state as a
//!   [`Base`]. Its output goes to the job's log live (and its first 16 KiB into the build's
//!   result). A build that does not exit 0 is `compile_error`: every case is `skipped`.
//! - Each **case** runs with `Chain::base` = the build's base and its own output sink, captured
//!   for the comparison; up to `parallelism` at once. The case's events (`case_started`,
//!   `case_finished`) go to the job's event log in the order they happen.
//! - A **checker** (when the suite has one) runs after a case that exited as expected, on the same
//!   base, with the case's input, the expected and the actual output as files.
//! - An infrastructure failure of any run (the worker's fault, not the job's) ends the attempt
//!   `internal_error` — retried like any job — rather than inventing a verdict.
//!
//! The job's bill is the sum of its runs' (setup, CPU, fuel, network) and the largest of their
//! peaks (memory, processes, disk); its wall time is the suite's, start to end (runs overlap
//! with `parallelism`, so it is not a sum).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use runtime_core::{
    Artifact, ArtifactReport, Backend, Base, CancellationToken, Chain, ExecReport, ExecRequest,
    InputFile, JobIo, Outcome, OutcomeReason, OutputSink, OutputStats, Program, SkippedArtifact,
    Stream, Usage,
};
use tokio::sync::mpsc;

use super::lock;
use crate::grading::{
    BUILD_OUTPUT_CAP, BuildResult, CASE_OUTPUT_CAP, CHECK_DIR, CHECKER_MESSAGE_CAP, CappedText,
    CaseResult, CaseStartedEvent, Compare, ResolvedCase, ResolvedStep, ResolvedSuite, SuiteEvent,
    SuiteSummary, Verdict, verdict_of_checker, verdict_of_outcome,
};
use crate::model::ResolvedFile;

/// What a suite's attempt came to: the job's report (its outcome from the summary) and the
/// summary, `None` when the attempt ended before it could judge (an infrastructure failure, a
/// cancel during the build).
pub struct SuiteRun {
    pub report: ExecReport,
    pub summary: Option<SuiteSummary>,
}

/// Runs a suite. `request` is the job's routed request (its program, entrypoint, args, files,
/// limits); `max_parallel` the worker's slots (a suite never runs more cases at once than the
/// worker runs jobs, whatever its `parallelism` asks); `io` is the job's (its log and its
/// cancel); `events` the job's event log.
pub async fn run(
    backend: Arc<dyn Backend>,
    request: ExecRequest,
    suite: ResolvedSuite,
    max_parallel: usize,
    io: JobIo,
    events: mpsc::Sender<Vec<u8>>,
) -> SuiteRun {
    let started = Instant::now();
    let mut bill = Bill::default();
    let events = Events(events);
    let max_score: u64 = suite.cases.iter().map(|c| u64::from(c.weight)).sum();
    let total = u32::try_from(suite.cases.len()).unwrap_or(u32::MAX);

    // 1. The build.
    let mut base = None;
    let mut build_result = None;
    let artifacts = std::sync::Mutex::new(SuiteArtifacts::new(request.artifacts.max_total_bytes));
    if let Some(step) = &suite.build {
        let mut req = step_request(&request, step, "build", true);
        req.files = merge_files(&request.files, &step.files);
        let (report, captured) = run_captured(&backend, req, &io.cancel, Some(&io.output)).await;
        bill.add(&report);
        if report.outcome.reason.is_infrastructure_failure()
            || report.outcome.reason == OutcomeReason::Cancelled
        {
            return SuiteRun {
                report: bill.report(report.outcome, started),
                summary: None,
            };
        }
        let mut report = report;
        lock(&artifacts).add(std::mem::take(&mut report.artifacts), "");
        let succeeded = report.outcome.is_success() && report.kept.is_some();
        let mut detail = report.outcome.detail.clone();
        if report.outcome.is_success() && report.kept.is_none() {
            detail = Some(format!(
                "the {} backend kept no state of the build to run the cases on",
                backend.name()
            ));
        } else if !report.outcome.is_success() && detail.is_none() {
            detail = Some(match report.outcome.reason {
                OutcomeReason::Exited => {
                    format!("exit code {}", report.outcome.exit_code.unwrap_or(-1))
                }
                r => r.as_str().to_string(),
            });
        }
        let result = BuildResult {
            succeeded,
            reason: report.outcome.reason.as_str().to_string(),
            exit_code: report.outcome.exit_code,
            signal: report.outcome.signal,
            detail,
            output: CappedText::of(&captured.merged, BUILD_OUTPUT_CAP),
            usage: case_usage(&report, captured.stats),
        };
        events
            .send(&SuiteEvent::BuildFinished(result.clone()))
            .await;
        if !succeeded {
            let skipped: Vec<CaseResult> = (0..suite.cases.len())
                .map(|i| skipped(&suite.cases[i], i, "the build failed"))
                .collect();
            for c in &skipped {
                events.send(&SuiteEvent::CaseFinished(c.clone())).await;
            }
            let summary = SuiteSummary::of(&skipped, total, max_score, Some(result));
            let mut report = bill.report(summary.outcome(), started);
            report.artifacts = artifacts.into_inner().map(|a| a.report).unwrap_or_default();
            return SuiteRun {
                report,
                summary: Some(summary),
            };
        }
        build_result = Some(result);
        base = report.kept;
    }

    // 2. The cases.
    let ctx = CaseContext {
        backend: backend.clone(),
        request: &request,
        suite: &suite,
        base,
        cancel: io.cancel.clone(),
        stop: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        events: &events,
        artifacts: &artifacts,
    };
    let parallelism = usize::try_from(suite.parallelism)
        .unwrap_or(1)
        .min(max_parallel)
        .max(1);
    let ctx = &ctx;
    let mut finished: Vec<CaseDone> = futures::stream::iter(0..suite.cases.len())
        .map(|i| ctx.run_case(i))
        .buffer_unordered(parallelism)
        .collect()
        .await;
    finished.sort_by_key(|d| d.result.index);

    let mut infrastructure: Option<Outcome> = None;
    let mut results = Vec::with_capacity(finished.len());
    for d in finished {
        for r in &d.reports {
            bill.add(r);
        }
        if infrastructure.is_none() {
            infrastructure = d.infrastructure;
        }
        results.push(d.result);
    }
    if let Some(outcome) = infrastructure {
        return SuiteRun {
            report: bill.report(outcome, started),
            summary: None,
        };
    }
    let summary = SuiteSummary::of(&results, total, max_score, build_result);
    let outcome = if io.cancel.is_cancelled() {
        Outcome::with_reason(OutcomeReason::Cancelled, "cancelled during the test suite")
    } else {
        summary.outcome()
    };
    let mut report = bill.report(outcome, started);
    report.artifacts = artifacts.into_inner().map(|a| a.report).unwrap_or_default();
    SuiteRun {
        report,
        summary: Some(summary),
    }
}

/// The job's event log.
struct Events(mpsc::Sender<Vec<u8>>);

impl Events {
    async fn send(&self, event: &SuiteEvent) {
        match serde_json::to_vec(event) {
            Ok(bytes) => {
                // A closed log means the job's attempt is over (shutdown): nothing to tell.
                let _ = self.0.send(bytes).await;
            }
            Err(e) => tracing::error!(error = %e, "a suite event did not serialise"),
        }
    }
}

/// What the cases share.
struct CaseContext<'a> {
    backend: Arc<dyn Backend>,
    request: &'a ExecRequest,
    suite: &'a ResolvedSuite,
    base: Option<Base>,
    cancel: CancellationToken,
    /// Set by the first case that is not accepted when the suite stops on the first failure.
    stop: AtomicBool,
    /// Set by an infrastructure failure: the attempt is retried whole, the rest need not run.
    abort: AtomicBool,
    events: &'a Events,
    /// Every run's artifacts, gathered as runs end within the job's total cap.
    artifacts: &'a std::sync::Mutex<SuiteArtifacts>,
}

/// A case's end: its result, the reports of its runs (the bill; their artifacts already moved to
/// the suite's), and the outcome of an infrastructure failure if one of its runs had one.
struct CaseDone {
    result: CaseResult,
    reports: Vec<ExecReport>,
    infrastructure: Option<Outcome>,
}

impl CaseContext<'_> {
    async fn run_case(&self, index: usize) -> CaseDone {
        let case = &self.suite.cases[index];
        let not_run = |why: &str| CaseDone {
            result: skipped(case, index, why),
            reports: Vec::new(),
            infrastructure: None,
        };
        if self.cancel.is_cancelled() {
            let done = not_run("the job was cancelled");
            self.events
                .send(&SuiteEvent::CaseFinished(done.result.clone()))
                .await;
            return done;
        }
        if self.abort.load(Ordering::SeqCst) {
            return not_run("the attempt failed for the infrastructure's reasons; it runs again");
        }
        if self.stop.load(Ordering::SeqCst) {
            let done = not_run("an earlier case failed (stop_on_first_failure)");
            self.events
                .send(&SuiteEvent::CaseFinished(done.result.clone()))
                .await;
            return done;
        }
        self.events
            .send(&SuiteEvent::CaseStarted(CaseStartedEvent {
                index: index as u32,
                name: case.name.clone(),
            }))
            .await;

        let mut req = run_of(self.request, &format!("case{index}"));
        if let Some(args) = &case.args {
            req.args = args.clone();
        }
        req.stdin = case.stdin.clone();
        req.files = if self.suite.build.is_some() {
            to_input(&case.files)
        } else {
            merge_files(&self.request.files, &case.files)
        };
        req.limits = case.limits.to_runtime();
        req.chain.base = self.base.clone();
        let (mut report, captured) = run_captured(&self.backend, req, &self.cancel, None).await;
        lock(self.artifacts).add(
            std::mem::take(&mut report.artifacts),
            &format!("cases/{}/", case.name),
        );
        let mut done = CaseDone {
            result: CaseResult {
                index: index as u32,
                name: case.name.clone(),
                verdict: Verdict::Accepted,
                weight: case.weight,
                detail: None,
                exit_code: report.outcome.exit_code,
                signal: report.outcome.signal,
                difference: None,
                checker_message: None,
                usage: Some(case_usage(&report, captured.stats)),
                stdout: CappedText::of(&captured.stdout, CASE_OUTPUT_CAP),
                stderr: CappedText::of(&captured.stderr, CASE_OUTPUT_CAP),
            },
            reports: Vec::new(),
            infrastructure: None,
        };
        let outcome = report.outcome.clone();
        done.reports.push(report);
        match verdict_of_outcome(&outcome, case.expect_exit_code) {
            Err(None) => {
                // The attempt fails and is retried whole: the other cases need not run.
                self.abort.store(true, Ordering::SeqCst);
                done.infrastructure = Some(outcome);
                return done;
            }
            Err(Some((verdict, detail))) => {
                done.result.verdict = verdict;
                done.result.detail = Some(detail);
            }
            Ok(()) => {
                if let (None, Some(checker)) = (&case.compare, &self.suite.checker) {
                    self.check(case, index, checker, &captured.stdout, &mut done)
                        .await;
                } else if let Some(expected) = &case.expect_stdout {
                    let compare: Compare = case.compare.unwrap_or(self.suite.compare);
                    if let Some(d) = compare.check(expected, &captured.stdout) {
                        done.result.verdict = Verdict::WrongAnswer;
                        done.result.detail = Some(match &d.note {
                            Some(n) => format!("line {}: {n}", d.line),
                            None => format!("line {} differs", d.line),
                        });
                        done.result.difference = Some(d);
                    }
                }
            }
        }
        if done.infrastructure.is_some() {
            self.abort.store(true, Ordering::SeqCst);
            return done;
        }
        if done.result.verdict != Verdict::Accepted && self.suite.stop_on_first_failure {
            self.stop.store(true, Ordering::SeqCst);
        }
        self.events
            .send(&SuiteEvent::CaseFinished(done.result.clone()))
            .await;
        done
    }

    /// Runs the checker on a case's output and sets the case's verdict from it.
    async fn check(
        &self,
        case: &ResolvedCase,
        index: usize,
        checker: &ResolvedStep,
        actual: &[u8],
        done: &mut CaseDone,
    ) {
        let paths = ["input", "expected", "actual"].map(|f| format!("{CHECK_DIR}/{f}"));
        let mut req = step_request(self.request, checker, &format!("check{index}"), false);
        match &mut req.program {
            Program::WasmModule { .. } => req.args.extend(paths.iter().cloned()),
            _ => {
                if let Some(e) = req.container.entrypoint.as_mut() {
                    e.extend(paths.iter().cloned());
                }
            }
        }
        let mut files = to_input(&checker.files);
        for (path, content) in paths.iter().zip([
            case.stdin.clone(),
            case.expect_stdout.clone().unwrap_or_default(),
            actual.to_vec(),
        ]) {
            files.push(InputFile {
                path: path.clone(),
                content,
                mode: Some(0o444),
            });
        }
        req.files = files;
        // The checker's writes are not the case's artifacts.
        req.artifacts = Default::default();
        req.chain.base = self.base.clone();
        let (report, captured) = run_captured(&self.backend, req, &self.cancel, None).await;
        let message = CappedText::of(&captured.stdout, CHECKER_MESSAGE_CAP).text;
        let message = message.trim_end();
        if !message.is_empty() {
            done.result.checker_message = Some(message.to_string());
        }
        match verdict_of_checker(&report.outcome) {
            Ok(v) => done.result.verdict = v,
            Err(None) => done.infrastructure = Some(report.outcome.clone()),
            Err(Some(why)) => {
                done.result.verdict = Verdict::CheckerError;
                done.result.detail = Some(why);
            }
        }
        done.reports.push(report);
    }
}

/// A case that did not run.
fn skipped(case: &ResolvedCase, index: usize, why: &str) -> CaseResult {
    CaseResult {
        index: index as u32,
        name: case.name.clone(),
        verdict: Verdict::Skipped,
        weight: case.weight,
        detail: Some(why.to_string()),
        exit_code: None,
        signal: None,
        difference: None,
        checker_message: None,
        usage: None,
        stdout: CappedText::default(),
        stderr: CappedText::default(),
    }
}

/// The request of a build or checker step: containers run `command` as the entrypoint in the
/// job's image; Wasm jobs run the step's module with `command` as its arguments.
fn step_request(job: &ExecRequest, step: &ResolvedStep, what: &str, keep: bool) -> ExecRequest {
    let mut req = run_of(job, what);
    match &step.module {
        Some(digest) => {
            req.program = Program::WasmModule {
                digest: digest.clone(),
            };
            req.args = step.command.clone();
        }
        None => {
            req.container.entrypoint = Some(step.command.clone());
            req.args = Vec::new();
        }
    }
    req.files = to_input(&step.files);
    req.limits = step.limits.to_runtime();
    req.chain.keep = keep;
    req
}

/// A run of the job (`<job id>-<what>`): its program, arguments, environment, limits, container
/// and Wasm options and artifact patterns, without its stdin, files or chain — each run sets its own, so
/// the job's files (large, perhaps) are not copied for every case only to be replaced.
fn run_of(job: &ExecRequest, what: &str) -> ExecRequest {
    ExecRequest {
        job_id: format!("{}-{what}", job.job_id),
        program: job.program.clone(),
        args: job.args.clone(),
        env: job.env.clone(),
        stdin: Vec::new(),
        files: Vec::new(),
        limits: job.limits.clone(),
        container: job.container.clone(),
        chain: Chain::default(),
        artifacts: job.artifacts.clone(),
        wasm: job.wasm.clone(),
    }
}

fn to_input(files: &[ResolvedFile]) -> Vec<InputFile> {
    files.iter().map(ResolvedFile::to_runtime).collect()
}

/// The job's files, then a step's or case's (which win on the same path).
fn merge_files(job: &[InputFile], more: &[ResolvedFile]) -> Vec<InputFile> {
    let mut files: Vec<InputFile> = job
        .iter()
        .filter(|f| !more.iter().any(|m| m.path == f.path))
        .cloned()
        .collect();
    files.extend(to_input(more));
    files
}

/// A suite's artifacts: every run's, the cases' under `cases/NAME/`, within the job's total cap
/// (`artifacts.max_total_bytes` bounds the suite, not each run: a file past it is cut, flagged
/// `truncated`, and the bytes are dropped as soon as its run ends, so a thousand cases never hold
/// more than the cap in memory).
struct SuiteArtifacts {
    report: ArtifactReport,
    used: u64,
    cap: u64,
}

impl SuiteArtifacts {
    fn new(cap: u64) -> Self {
        SuiteArtifacts {
            report: ArtifactReport::default(),
            used: 0,
            cap,
        }
    }

    /// Adds a run's artifacts under `prefix` (`cases/NAME/` for a case's).
    fn add(&mut self, from: ArtifactReport, prefix: &str) {
        for mut a in from.files {
            let room = usize::try_from(self.cap.saturating_sub(self.used)).unwrap_or(usize::MAX);
            if a.data.len() > room {
                a.data.truncate(room);
                a.data.shrink_to_fit();
                a.truncated = true;
            }
            self.used += a.data.len() as u64;
            self.report.files.push(Artifact {
                path: format!("{prefix}{}", a.path.trim_start_matches('/')),
                ..a
            });
        }
        self.report
            .skipped
            .extend(from.skipped.into_iter().map(|s| SkippedArtifact {
                path: format!("{prefix}{}", s.path.trim_start_matches('/')),
                ..s
            }));
    }
}

/// A run's output as captured.
#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Both streams in the order written (for the build's result), up to the build's cap.
    merged: Vec<u8>,
    stats: OutputStats,
}

/// Runs one request with its own output sink (capped by its `output_bytes`), capturing what it
/// writes, and forwarding it to the job's log when given one.
async fn run_captured(
    backend: &Arc<dyn Backend>,
    request: ExecRequest,
    cancel: &CancellationToken,
    log: Option<&OutputSink>,
) -> (ExecReport, Captured) {
    let (sink, mut rx) = OutputSink::channel(request.limits.output_bytes, 256);
    let log = log.cloned();
    let collector = tokio::spawn(async move {
        let mut c = Captured::default();
        while let Some(chunk) = rx.recv().await {
            if let Some(log) = &log {
                // The job's log has its own cap; past it the log is truncated, the run goes on.
                let _ = log.write(chunk.stream, &chunk.data).await;
                let room = BUILD_OUTPUT_CAP.saturating_sub(c.merged.len());
                c.merged
                    .extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
            }
            match chunk.stream {
                Stream::Stdout => c.stdout.extend_from_slice(&chunk.data),
                Stream::Stderr => c.stderr.extend_from_slice(&chunk.data),
            }
        }
        c
    });
    let io = JobIo {
        output: sink.clone(),
        cancel: cancel.clone(),
    };
    let report = backend.run(request, io).await;
    let stats = sink.stats();
    drop(sink);
    let mut captured = collector.await.unwrap_or_default();
    captured.stats = stats;
    (report, captured)
}

/// A run's bill in the API's form (no queue wait: the job waited once).
fn case_usage(report: &ExecReport, stats: OutputStats) -> crate::model::Usage {
    let mut u = super::spec::usage(Duration::ZERO, report, stats);
    u.queue_wait_ms = None;
    u
}

/// The job's bill over its runs.
#[derive(Default)]
struct Bill {
    usage: Usage,
}

impl Bill {
    fn add(&mut self, report: &ExecReport) {
        let (a, b) = (&mut self.usage, &report.usage);
        a.setup += b.setup;
        a.cpu_user += b.cpu_user;
        a.cpu_system += b.cpu_system;
        let max = |x: Option<u64>, y: Option<u64>| match (x, y) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        let sum = |x: Option<u64>, y: Option<u64>| match (x, y) {
            (Some(x), Some(y)) => Some(x.saturating_add(y)),
            (x, y) => x.or(y),
        };
        a.memory_peak_bytes = max(a.memory_peak_bytes, b.memory_peak_bytes);
        a.pids_peak = max(a.pids_peak, b.pids_peak);
        a.pids_limit_hit = match (a.pids_limit_hit, b.pids_limit_hit) {
            (Some(x), Some(y)) => Some(x || y),
            (x, y) => x.or(y),
        };
        a.disk_used_bytes = max(a.disk_used_bytes, b.disk_used_bytes);
        a.fuel_consumed = sum(a.fuel_consumed, b.fuel_consumed);
        a.wasm_memory_peak_bytes = max(a.wasm_memory_peak_bytes, b.wasm_memory_peak_bytes);
        a.net_rx_bytes = sum(a.net_rx_bytes, b.net_rx_bytes);
        a.net_tx_bytes = sum(a.net_tx_bytes, b.net_tx_bytes);
    }

    /// The job's report: `outcome`, this bill, and as its wall time the suite's, from its start
    /// to its end. (Not that minus the runs' setup: cases overlap, so their summed setup can
    /// exceed the suite's elapsed time; `setup_ms` stays the runs' sum, a bill of work done.)
    fn report(&self, outcome: Outcome, started: Instant) -> ExecReport {
        let mut usage = self.usage.clone();
        usage.wall = started.elapsed();
        ExecReport::new(outcome, usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::grading::{Compare, ResolvedCase, ResolvedStep};
    use crate::model::ResolvedLimits;
    use runtime_core::{Artifacts, Chain, ContainerOptions, Limits};

    /// A backend that answers from the request: stdin `infra` is an internal error, anything else
    /// is echoed with exit 0; `keep` returns a base. It records what it was asked to run.
    #[derive(Default)]
    struct Fake {
        seen: std::sync::Mutex<Vec<ExecRequest>>,
        in_flight: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Backend for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn accepts(&self, _: &Program) -> bool {
            true
        }
        async fn run(&self, request: ExecRequest, io: JobIo) -> ExecReport {
            lock(&self.seen).push(request.clone());
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if request.stdin == b"infra" {
                return ExecReport::new(
                    Outcome::with_reason(OutcomeReason::InternalError, "the host broke"),
                    Usage::default(),
                );
            }
            let _ = io.output.write(Stream::Stdout, &request.stdin).await;
            let mut report = ExecReport::new(Outcome::exited(0), Usage::default());
            if request.chain.keep {
                report.kept = Some(Base::new("fake", ()));
            }
            report
        }
    }

    fn limits() -> ResolvedLimits {
        ResolvedLimits {
            wall_time_ms: 1000,
            cpu_time_ms: None,
            memory_bytes: 1 << 20,
            fuel: None,
            output_bytes: 1 << 16,
            pids: None,
            disk_bytes: None,
        }
    }

    fn case(name: &str, stdin: &str) -> ResolvedCase {
        ResolvedCase {
            name: name.into(),
            args: None,
            stdin: stdin.as_bytes().to_vec(),
            files: vec![],
            limits: limits(),
            expect_stdout: Some(stdin.as_bytes().to_vec()),
            expect_exit_code: 0,
            compare: None,
            weight: 1,
        }
    }

    fn request() -> ExecRequest {
        ExecRequest {
            job_id: "j".into(),
            program: Program::Image {
                reference: "img".into(),
            },
            args: vec!["./prog".into()],
            env: vec![],
            stdin: vec![],
            files: vec![],
            limits: Limits {
                wall_time: Duration::from_secs(1),
                cpu_time: None,
                memory_bytes: 1 << 20,
                fuel: None,
                output_bytes: 1 << 16,
                pids: None,
                disk_bytes: None,
            },
            container: ContainerOptions::default(),
            chain: Chain::default(),
            artifacts: Artifacts::default(),
            wasm: Default::default(),
        }
    }

    async fn run_suite(fake: Arc<Fake>, suite: ResolvedSuite) -> SuiteRun {
        let (sink, _rx) = OutputSink::channel(1 << 16, 1024);
        let (events, mut events_rx) = mpsc::channel(1024);
        tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
        let io = JobIo {
            output: sink,
            cancel: CancellationToken::new(),
        };
        run(fake, request(), suite, 4, io, events).await
    }

    #[tokio::test]
    async fn the_build_keeps_its_state_and_every_case_and_the_checker_run_on_it() {
        let fake = Arc::new(Fake::default());
        let step = |cmd: &str| ResolvedStep {
            command: vec![cmd.into()],
            module: None,
            files: vec![],
            limits: limits(),
        };
        let suite = ResolvedSuite {
            build: Some(step("make")),
            cases: vec![case("a", "1"), case("b", "2")],
            compare: Compare::default(),
            checker: Some(step("./check")),
            stop_on_first_failure: false,
            parallelism: 1,
        };
        let done = run_suite(fake.clone(), suite).await;
        let summary = done.summary.expect("a summary");
        assert_eq!((summary.passed, summary.total), (2, 2));
        assert!(done.report.outcome.is_success());
        let seen = lock(&fake.seen);
        // build, then each case followed by its checker
        let argv: Vec<Vec<String>> = seen
            .iter()
            .map(|r| {
                r.container
                    .entrypoint
                    .clone()
                    .unwrap_or_else(|| r.args.clone())
            })
            .collect();
        assert_eq!(argv[0], ["make"]);
        assert!(seen[0].chain.keep && seen[0].chain.base.is_none());
        assert_eq!(argv[1], ["./prog"]);
        assert_eq!(
            argv[2],
            [
                "./check",
                ".nekton-check/input",
                ".nekton-check/expected",
                ".nekton-check/actual"
            ]
        );
        let base = seen[0].chain.base.clone();
        assert!(base.is_none());
        for r in &seen[1..] {
            assert!(!r.chain.keep);
            assert_eq!(r.chain.base.as_ref().map(|b| b.backend()), Some("fake"));
        }
        let actual = seen[2]
            .files
            .iter()
            .find(|f| f.path == ".nekton-check/actual")
            .expect("the checker gets the case's output");
        assert_eq!(actual.content, b"1");
    }

    #[test]
    fn the_suites_wall_time_is_its_elapsed_time_even_when_setups_overlap() {
        let mut bill = Bill::default();
        for _ in 0..16 {
            bill.add(&ExecReport::new(
                Outcome::exited(0),
                Usage {
                    setup: Duration::from_secs(1),
                    ..Usage::default()
                },
            ));
        }
        let started = Instant::now() - Duration::from_secs(3);
        let r = bill.report(Outcome::exited(0), started);
        assert_eq!(r.usage.setup, Duration::from_secs(16));
        assert!(r.usage.wall >= Duration::from_secs(3), "{:?}", r.usage.wall);
    }

    #[tokio::test]
    async fn a_suite_runs_at_most_the_workers_slots_at_once() {
        let fake = Arc::new(Fake::default());
        let suite = ResolvedSuite {
            build: None,
            cases: (0..12).map(|i| case(&format!("c{i}"), "x")).collect(),
            compare: Compare::default(),
            checker: None,
            stop_on_first_failure: false,
            parallelism: 16,
        };
        let done = run_suite(fake.clone(), suite).await;
        assert_eq!(done.summary.expect("a summary").passed, 12);
        // run_suite gives the runner 4 slots.
        assert_eq!(fake.peak.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_infrastructure_failure_fails_the_attempt_and_stops_the_rest() {
        let fake = Arc::new(Fake::default());
        let suite = ResolvedSuite {
            build: None,
            cases: vec![case("a", "1"), case("b", "infra"), case("c", "3")],
            compare: Compare::default(),
            checker: None,
            stop_on_first_failure: false,
            parallelism: 1,
        };
        let done = run_suite(fake.clone(), suite).await;
        assert!(done.summary.is_none(), "no verdicts are invented");
        assert_eq!(done.report.outcome.reason, OutcomeReason::InternalError);
        assert_eq!(lock(&fake.seen).len(), 2, "case c never ran");
    }

    #[test]
    fn case_files_win_over_the_jobs() {
        let job = vec![
            InputFile {
                path: "a".into(),
                content: b"job".to_vec(),
                mode: None,
            },
            InputFile {
                path: "b".into(),
                content: b"job".to_vec(),
                mode: None,
            },
        ];
        let more = vec![ResolvedFile {
            path: "b".into(),
            content: b"case".to_vec(),
            mode: None,
        }];
        let merged = merge_files(&job, &more);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].path, "a");
        assert_eq!(merged[1].content, b"case");
    }

    #[test]
    fn case_artifacts_are_named_by_case_and_capped_for_the_suite() {
        let mut all = SuiteArtifacts::new(5);
        let run = |path: &str, len: usize| ArtifactReport {
            files: vec![Artifact {
                path: path.into(),
                size: len as u64,
                data: vec![1; len],
                truncated: false,
                mode: 0o644,
            }],
            skipped: vec![SkippedArtifact {
                path: "evil".into(),
                reason: "symlink".into(),
            }],
        };
        all.add(run("/out/report.xml", 3), "cases/big/");
        all.add(run("out/report.xml", 3), "cases/small/");
        all.add(run("out/report.xml", 3), "");
        let files: Vec<(&str, usize, bool)> = all
            .report
            .files
            .iter()
            .map(|a| (a.path.as_str(), a.data.len(), a.truncated))
            .collect();
        assert_eq!(
            files,
            [
                ("cases/big/out/report.xml", 3, false),
                ("cases/small/out/report.xml", 2, true),
                ("out/report.xml", 0, true),
            ]
        );
        assert_eq!(all.report.skipped[0].path, "cases/big/evil");
    }

    #[test]
    fn the_bill_sums_times_and_keeps_the_largest_peaks() {
        let mut bill = Bill::default();
        let run = |cpu: u64, mem: u64, fuel: u64| {
            ExecReport::new(
                Outcome::exited(0),
                Usage {
                    cpu_user: Duration::from_millis(cpu),
                    memory_peak_bytes: Some(mem),
                    fuel_consumed: Some(fuel),
                    ..Usage::default()
                },
            )
        };
        bill.add(&run(10, 100, 5));
        bill.add(&run(20, 50, 7));
        assert_eq!(bill.usage.cpu_user, Duration::from_millis(30));
        assert_eq!(bill.usage.memory_peak_bytes, Some(100));
        assert_eq!(bill.usage.fuel_consumed, Some(12));
    }
}
