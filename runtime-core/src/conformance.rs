//! The conformance suite: the job semantics every [`Backend`] promises, written once and run
//! against each backend (feature `conformance`; only test crates enable it).
//!
//! The shape follows a driver test suite: each check is a plain async fn taking a [`Target`] — the
//! backend under test plus a [`Guests`] factory that knows how to make, for that backend, a program
//! that "prints these bytes and exits with N", "spins forever", "echoes stdin"... A backend's test
//! crate implements [`Guests`] and invokes [`conformance_suite!`](crate::conformance_suite), which
//! expands to one `#[tokio::test]` per check (so a failure names the check):
//!
//! ```ignore
//! async fn target() -> runtime_core::conformance::Target { /* backend + guests */ }
//! runtime_core::conformance_suite!(target);
//! ```
//!
//! Where a backend legitimately cannot do something (a Wasm guest has no signals; a container has
//! no traps), its factory returns [`Support::NotApplicable`] with the reason, and the check
//! reports [`Checked::Skipped`]: the generated test prints `SKIPPED for backend ...: reason`, so a
//! skip is never a silent pass.
//!
//! Checks fail by panicking with a message that names what broke. [`assert_check_fails`] runs a
//! check expecting that failure: it is how the drivers show that the suite catches a broken backend
//! ([`IgnoresOutputCap`] wraps a real backend and runs jobs past the output cap).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::{
    Backend, CancellationToken, ExecReport, ExecRequest, InputFile, JobIo, Outcome, OutcomeReason,
    OutputChunk, OutputSink, OutputStats, Stream,
};

/// Whether a backend can run a kind of guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support<T> {
    Yes(T),
    /// The backend cannot express this (why, for the test log).
    NotApplicable(&'static str),
}

/// A guest that dies abnormally, and what the report must then say.
#[derive(Debug, Clone)]
pub struct Crash {
    pub request: ExecRequest,
    /// The `signal` the outcome must carry.
    pub signal: i32,
    /// A substring the outcome's `detail` must contain.
    pub detail: &'static str,
}

/// Makes the backend's programs for the checks. Every request it returns must be runnable as is
/// (generous limits: a wall time of several seconds, an output cap of at least 1 MiB); checks
/// adjust `limits`, `stdin` and `files` themselves.
pub trait Guests: Send + Sync {
    /// Writes `stdout` (any bytes, up to a few MiB) to stdout, then `stderr` to stderr, then exits
    /// with `code` (0..=125).
    fn write_and_exit(&self, stdout: &[u8], stderr: &[u8], code: i32) -> ExecRequest;
    /// Writes `stderr` to stderr, then gets itself killed by `signal`.
    fn kill_self(&self, stderr: &[u8], signal: i32) -> Support<ExecRequest>;
    /// Writes `stderr` to stderr, then traps (a Wasm trap).
    fn trap(&self, stderr: &[u8]) -> Support<Crash>;
    /// Copies stdin to stdout until EOF, then exits 0.
    fn echo_stdin(&self) -> ExecRequest;
    /// Given job args `args`, prints its argv, each entry followed by a NUL byte. Returns the
    /// request and what it prints before `args` (argv[0], chosen by the backend).
    fn print_args(&self, args: &[String]) -> (ExecRequest, Vec<u8>);
    /// Prints its whole environment, each `NAME=value` followed by a NUL byte, in order.
    fn print_env(&self) -> ExecRequest;
    /// The variables the backend may add to a job's environment by itself (e.g. `PATH`).
    fn env_added_by_backend(&self) -> &'static [&'static str];
    /// The path under which the guest sees input file `name` (an [`InputFile::path`]).
    fn input_file_path(&self, name: &str) -> String;
    /// Copies the file at guest path `path` to stdout, then exits 0; exits non-zero if it cannot
    /// open it.
    fn cat(&self, path: &str) -> ExecRequest;
    /// Burns CPU forever, writing nothing.
    fn spin(&self) -> ExecRequest;
    /// Sleeps for `duration` (without burning CPU), then exits 0.
    fn sleep(&self, duration: Duration) -> ExecRequest;
    /// Writes `y\n` to stdout forever.
    fn yes(&self) -> ExecRequest;
    /// Writes `tick\n` to stdout about every 10 ms, forever.
    fn tick(&self) -> ExecRequest;
    /// Prints the line `first`, sleeps `pause`, prints the line `second` (each with `\n`), exits 0.
    fn bursts(&self, first: &str, pause: Duration, second: &str) -> ExecRequest;
    /// How many jobs the concurrency check runs at once.
    fn concurrency(&self) -> usize;
    /// The least `memory_peak_bytes` a finished trivial job reports.
    fn min_memory_peak(&self) -> u64;
}

/// What a check runs against: the backend, and its guests.
#[derive(Clone)]
pub struct Target {
    pub backend: Arc<dyn Backend>,
    pub guests: Arc<dyn Guests>,
}

impl Target {
    /// The same guests, run by another backend (e.g. a deliberately broken wrapper).
    pub fn with_backend(&self, backend: Arc<dyn Backend>) -> Target {
        Target {
            backend,
            guests: self.guests.clone(),
        }
    }
}

/// How a check ended (a failed check panics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Passed,
    Skipped(&'static str),
}

/// Prints what a generated test must show about its check (skips are loud).
pub fn report(check: &str, target: &Target, checked: &Checked) {
    match checked {
        Checked::Passed => println!(
            "conformance check `{check}` passed for backend `{}`",
            target.backend.name()
        ),
        Checked::Skipped(why) => {
            // Straight to the process's stderr, past the test harness's capture: a skip shows
            // in every test run, not only when something fails.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "conformance check `{check}` SKIPPED for backend `{}`: {why}",
                target.backend.name()
            );
        }
    }
}

/// What a finished job produced.
#[derive(Debug)]
pub struct Finished {
    pub report: ExecReport,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stats: OutputStats,
    /// From the call to `run` to its return.
    pub elapsed: Duration,
}

impl Finished {
    /// Stdout as text (lossy), for assertions and messages.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy).
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Asserts that the job exited with `code`, showing the report and both streams if not.
    #[track_caller]
    pub fn assert_exited(&self, code: i32) -> &Self {
        assert_eq!(
            (self.report.outcome.reason, self.report.outcome.exit_code),
            (OutcomeReason::Exited, Some(code)),
            "report: {:?}\nstdout: {}\nstderr: {}",
            self.report,
            self.out(),
            self.err()
        );
        self
    }
}

async fn collect(mut rx: mpsc::Receiver<OutputChunk>) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(chunk) = rx.recv().await {
        match chunk.stream {
            Stream::Stdout => out.extend_from_slice(&chunk.data),
            Stream::Stderr => err.extend_from_slice(&chunk.data),
        }
    }
    (out, err)
}

/// Runs `request` on `backend` with a fresh sink (the request's cap) and collects its output.
/// Panics if output still arrives (or the sink is still held) 5 s after `run` returned.
pub async fn run(
    backend: &dyn Backend,
    request: ExecRequest,
    cancel: CancellationToken,
) -> Finished {
    let (sink, rx) = OutputSink::channel(request.limits.output_bytes, 64);
    let collector = tokio::spawn(collect(rx));
    let io = JobIo {
        output: sink.clone(),
        cancel,
    };
    let started = Instant::now();
    let report = backend.run(request, io).await;
    let elapsed = started.elapsed();
    let stats = sink.stats();
    drop(sink);
    let (stdout, stderr) = tokio::time::timeout(Duration::from_secs(5), collector)
        .await
        .expect("the backend still holds the job's output sink 5 s after `run` returned")
        .expect("the output collector panicked");
    Finished {
        report,
        stdout,
        stderr,
        stats,
        elapsed,
    }
}

async fn run_plain(target: &Target, request: ExecRequest) -> Finished {
    run(target.backend.as_ref(), request, CancellationToken::new()).await
}

/// Cancels `cancel` after `after`; the task's result is the instant it did.
fn cancel_after(cancel: &CancellationToken, after: Duration) -> tokio::task::JoinHandle<Instant> {
    let cancel = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        cancel.cancel();
        Instant::now()
    })
}

#[track_caller]
fn assert_reason(done: &Finished, reason: OutcomeReason, what: &str) {
    assert_eq!(
        done.report.outcome.reason,
        reason,
        "{what}: outcome {:?}, usage {:?}, stdout {:?}, stderr {:?}",
        done.report.outcome,
        done.report.usage,
        String::from_utf8_lossy(&done.stdout[..done.stdout.len().min(400)]),
        String::from_utf8_lossy(&done.stderr[..done.stderr.len().min(400)]),
    );
}

/// The `hello, world` job after a hostile one: the backend still works.
async fn assert_still_works(target: &Target) {
    let done = run_plain(
        target,
        target.guests.write_and_exit(b"hello, world\n", b"", 0),
    )
    .await;
    assert_eq!(
        done.report.outcome,
        Outcome::exited(0),
        "a plain job after the previous one: {done:?}"
    );
    assert_eq!(done.stdout, b"hello, world\n");
}

/// Exit codes are reported exactly (and `exit 0` with nothing more is a success), with the output
/// written before the exit, the byte counts of the bill and the setup time.
pub async fn exit_codes_and_output(target: &Target) -> Checked {
    let g = &target.guests;
    let done = run_plain(target, g.write_and_exit(b"bye", b"", 7)).await;
    assert_eq!(done.report.outcome, Outcome::exited(7), "{done:?}");
    assert_eq!(done.stdout, b"bye");
    assert!(done.stderr.is_empty(), "{done:?}");

    let done = run_plain(target, g.write_and_exit(b"hello, world\n", b"", 0)).await;
    assert_eq!(done.report.outcome, Outcome::exited(0), "{done:?}");
    assert!(done.report.outcome.is_success());
    assert_eq!(done.stdout, b"hello, world\n");
    assert!(done.stderr.is_empty(), "{done:?}");
    assert_eq!(
        done.stats,
        OutputStats {
            stdout_bytes: 13,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false
        }
    );
    let usage = &done.report.usage;
    assert!(usage.setup > Duration::ZERO, "setup is measured: {usage:?}");
    assert!(
        usage
            .memory_peak_bytes
            .is_some_and(|m| m >= g.min_memory_peak()),
        "memory peak at least {}: {usage:?}",
        g.min_memory_peak()
    );
    for code in [1, 3, 125] {
        let done = run_plain(target, g.write_and_exit(b"", b"x", code)).await;
        assert_eq!(done.report.outcome, Outcome::exited(code), "{done:?}");
        assert_eq!(done.stderr, b"x");
    }
    Checked::Passed
}

/// A program killed by a signal is `signaled` with that signal; its output before is kept.
pub async fn killed_by_a_signal(target: &Target) -> Checked {
    for signal in [9, 15] {
        let request = match target.guests.kill_self(b"err\n", signal) {
            Support::Yes(r) => r,
            Support::NotApplicable(why) => return Checked::Skipped(why),
        };
        let done = run_plain(target, request).await;
        assert_reason(&done, OutcomeReason::Signaled, "killed by a signal");
        assert_eq!(done.report.outcome.signal, Some(signal), "{done:?}");
        assert_eq!(done.report.outcome.exit_code, None, "{done:?}");
        assert_eq!(done.stderr, b"err\n");
    }
    assert_still_works(target).await;
    Checked::Passed
}

/// A trap is `signaled` with the trap's signal and the trap message in `detail` (bounded).
pub async fn a_trap_is_signaled(target: &Target) -> Checked {
    let crash = match target.guests.trap(b"err\n") {
        Support::Yes(c) => c,
        Support::NotApplicable(why) => return Checked::Skipped(why),
    };
    let done = run_plain(target, crash.request).await;
    assert_reason(&done, OutcomeReason::Signaled, "a trap");
    assert_eq!(done.report.outcome.signal, Some(crash.signal), "{done:?}");
    let detail = done.report.outcome.detail.as_deref().unwrap_or_default();
    assert!(detail.contains(crash.detail), "detail: {detail}");
    assert!(
        detail.len() <= 4200,
        "detail is bounded: {} bytes",
        detail.len()
    );
    assert_eq!(done.stderr, b"err\n");
    assert_still_works(target).await;
    Checked::Passed
}

/// The job's args reach the program verbatim (spaces, empty strings, non-ASCII), after argv[0].
pub async fn args_reach_the_program(target: &Target) -> Checked {
    let args: Vec<String> = ["first", "sec ond", "", "ünï-cödé", "--flag=$HOME"]
        .map(String::from)
        .to_vec();
    let (request, argv0) = target.guests.print_args(&args);
    let done = run_plain(target, request).await;
    assert_eq!(done.report.outcome, Outcome::exited(0), "{done:?}");
    let mut expected = argv0;
    for a in &args {
        expected.extend_from_slice(a.as_bytes());
        expected.push(0);
    }
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(done.stdout, expected);
    Checked::Passed
}

/// The program's environment is exactly the job's variables, in order, plus only those the
/// backend documents adding: nothing of the worker's own environment leaks in.
pub async fn env_is_the_jobs(target: &Target) -> Checked {
    let mut request = target.guests.print_env();
    let env: Vec<(String, String)> = vec![
        ("GREETING".into(), "hi there".into()),
        ("EMPTY".into(), String::new()),
        ("WITH_EQUALS".into(), "a=b".into()),
    ];
    request.env = env.clone();
    let done = run_plain(target, request).await;
    assert_eq!(done.report.outcome, Outcome::exited(0), "{done:?}");
    let added = target.guests.env_added_by_backend();
    let mut own = Vec::new();
    for entry in done.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry).into_owned();
        let name = entry.split('=').next().unwrap_or_default();
        if env.iter().any(|(k, _)| k == name) {
            own.push(entry);
        } else {
            assert!(
                added.contains(&name),
                "`{entry}` is neither the job's nor one the backend adds ({added:?}): the host \
                 environment must not leak in"
            );
        }
    }
    let expected: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(own, expected);
    assert!(
        done.stdout.ends_with(b"\0"),
        "every entry ends with NUL: {:?}",
        String::from_utf8_lossy(&done.stdout)
    );
    Checked::Passed
}

/// Stdin is delivered byte for byte; no stdin is an immediate EOF (the program never blocks).
pub async fn stdin_reaches_the_program(target: &Target) -> Checked {
    let payloads: [Vec<u8>; 4] = [
        Vec::new(),
        b"from stdin\0\xff".to_vec(),
        (0..1000u32).map(|i| (i % 251) as u8).collect(),
        (0..300_000u32).map(|i| (i % 253) as u8).collect(),
    ];
    for stdin in payloads {
        let mut request = target.guests.echo_stdin();
        request.stdin = stdin.clone();
        let done = run_plain(target, request).await;
        assert_eq!(
            done.report.outcome,
            Outcome::exited(0),
            "{} bytes: {done:?}",
            stdin.len()
        );
        assert!(
            done.stdout == stdin,
            "{} bytes of stdin came back different",
            stdin.len()
        );
    }
    Checked::Passed
}

/// Input files appear, nested and binary, with their exact content.
pub async fn input_files_are_readable(target: &Target) -> Checked {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let files = vec![
        InputFile {
            path: "in/hello.txt".into(),
            content: b"file content\0\xff\n".to_vec(),
            mode: None,
        },
        InputFile {
            path: "other".into(),
            content: b"x".to_vec(),
            mode: None,
        },
        InputFile {
            path: "big.bin".into(),
            content: big,
            mode: None,
        },
    ];
    for file in &files {
        let path = target.guests.input_file_path(&file.path);
        let mut request = target.guests.cat(&path);
        request.files = files.clone();
        let done = run_plain(target, request).await;
        assert_eq!(done.report.outcome, Outcome::exited(0), "{path}: {done:?}");
        assert!(done.stdout == file.content, "{path}: the content differs");
    }
    Checked::Passed
}

/// Output past the cap stops the job: `output_limit`, the stream cut exactly at the cap and
/// marked truncated, the other stream untouched.
pub async fn output_over_the_cap_stops_the_job(target: &Target) -> Checked {
    for cap in [4096u64, 10_000] {
        let mut request = target.guests.yes();
        request.limits.output_bytes = cap;
        let done = run_plain(target, request).await;
        assert_reason(&done, OutcomeReason::OutputLimit, &format!("cap {cap}"));
        assert_eq!(done.stdout.len() as u64, cap);
        assert!(
            done.stdout == b"y\n".repeat(cap as usize / 2),
            "the kept bytes are the first {cap} written"
        );
        assert_eq!(
            done.stats,
            OutputStats {
                stdout_bytes: cap,
                stderr_bytes: 0,
                stdout_truncated: true,
                stderr_truncated: false
            },
            "cap {cap}"
        );
    }
    assert_still_works(target).await;
    Checked::Passed
}

/// NUL bytes and invalid UTF-8 survive on both streams, in volume, and are counted exactly.
pub async fn bytes_survive_as_bytes(target: &Target) -> Checked {
    let mut stdout = vec![0u8; 300_000];
    stdout.extend_from_slice(b"\xff\xfe");
    stdout.extend_from_slice(&b"y\n".repeat(100_000));
    let stderr = b"a\0b\xff\xfe\n".to_vec();
    let done = run_plain(target, target.guests.write_and_exit(&stdout, &stderr, 0)).await;
    assert_eq!(done.report.outcome, Outcome::exited(0), "{:?}", done.report);
    assert_eq!(done.stdout.len(), 500_002);
    assert!(done.stdout[..300_000].iter().all(|&b| b == 0));
    assert_eq!(&done.stdout[300_000..300_002], b"\xff\xfe");
    assert!(done.stdout == stdout, "stdout differs");
    assert_eq!(done.stderr, stderr);
    assert_eq!(
        done.stats,
        OutputStats {
            stdout_bytes: 500_002,
            stderr_bytes: 6,
            stdout_truncated: false,
            stderr_truncated: false
        }
    );
    Checked::Passed
}

/// A spinning program hits the wall limit on time, and its bill shows the wall and CPU it used.
pub async fn wall_timeout_while_spinning(target: &Target) -> Checked {
    let mut request = target.guests.spin();
    request.limits.wall_time = Duration::from_millis(300);
    let done = run_plain(target, request).await;
    assert_reason(
        &done,
        OutcomeReason::WallTimeout,
        "spinning past the wall time",
    );
    let elapsed = done.elapsed;
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "took {elapsed:?}"
    );
    let wall = done.report.usage.wall;
    assert!(
        wall >= Duration::from_millis(250) && wall < Duration::from_secs(3),
        "wall {wall:?}"
    );
    // Not a share of the wall time: on a loaded two-core machine the spinner got 31 ms of CPU in
    // its 360 ms (seen in CI while a build ran beside the tests). The bill must show its CPU.
    assert!(
        done.report.usage.cpu_user > Duration::from_millis(10),
        "a spinning program uses CPU: {:?}",
        done.report.usage
    );
    assert_still_works(target).await;
    Checked::Passed
}

/// A sleeping program hits the wall limit on time, and is billed (almost) no CPU.
pub async fn wall_timeout_while_sleeping(target: &Target) -> Checked {
    let mut request = target.guests.sleep(Duration::from_secs(60));
    request.limits.wall_time = Duration::from_millis(300);
    let done = run_plain(target, request).await;
    assert_reason(
        &done,
        OutcomeReason::WallTimeout,
        "sleeping past the wall time",
    );
    assert!(
        done.elapsed >= Duration::from_millis(250) && done.elapsed < Duration::from_secs(2),
        "took {:?}",
        done.elapsed
    );
    let usage = &done.report.usage;
    assert!(
        usage.wall >= Duration::from_millis(250) && usage.wall < Duration::from_secs(2),
        "wall {:?}",
        usage.wall
    );
    assert!(
        usage.cpu_user + usage.cpu_system < Duration::from_millis(200),
        "{usage:?}"
    );
    assert_still_works(target).await;
    Checked::Passed
}

/// A job whose cancel fired before it started does not run.
pub async fn cancel_before_start(target: &Target) -> Checked {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let request = target.guests.write_and_exit(b"hello, world\n", b"", 0);
    let done = run(target.backend.as_ref(), request, cancel).await;
    assert_reason(
        &done,
        OutcomeReason::Cancelled,
        "cancelled before the start",
    );
    assert!(done.stdout.is_empty(), "{done:?}");
    assert!(
        done.elapsed < Duration::from_secs(2),
        "took {:?}",
        done.elapsed
    );
    assert_still_works(target).await;
    Checked::Passed
}

/// Cancelling a spinning program stops it well within a second.
pub async fn cancel_while_spinning(target: &Target) -> Checked {
    let cancel = CancellationToken::new();
    let cancelled_at = cancel_after(&cancel, Duration::from_millis(200));
    let done = run(target.backend.as_ref(), target.guests.spin(), cancel).await;
    let stopped = Instant::now();
    let cancelled_at = cancelled_at.await.expect("the cancelling task");
    assert_reason(&done, OutcomeReason::Cancelled, "cancelled while spinning");
    assert!(
        done.report.usage.wall < Duration::from_millis(1200),
        "{:?}",
        done.report.usage
    );
    assert!(stopped.duration_since(cancelled_at) < Duration::from_secs(1));
    assert_still_works(target).await;
    Checked::Passed
}

/// Cancelling a sleeping program stops it well within a second.
pub async fn cancel_while_sleeping(target: &Target) -> Checked {
    let cancel = CancellationToken::new();
    let cancelled_at = cancel_after(&cancel, Duration::from_millis(200));
    let request = target.guests.sleep(Duration::from_secs(60));
    let done = run(target.backend.as_ref(), request, cancel).await;
    let stopped = Instant::now();
    let cancelled_at = cancelled_at.await.expect("the cancelling task");
    assert_reason(&done, OutcomeReason::Cancelled, "cancelled while sleeping");
    assert!(stopped.duration_since(cancelled_at) < Duration::from_secs(1));
    assert!(
        done.elapsed < Duration::from_secs(2),
        "took {:?}",
        done.elapsed
    );
    assert_still_works(target).await;
    Checked::Passed
}

/// Output reaches the sink while the job still runs, in order.
pub async fn output_is_streamed_live(target: &Target) -> Checked {
    let request = target
        .guests
        .bursts("first", Duration::from_millis(300), "second");
    let (sink, mut rx) = OutputSink::channel(1 << 20, 16);
    let io = JobIo {
        output: sink,
        cancel: CancellationToken::new(),
    };
    let backend = target.backend.clone();
    let job = tokio::spawn(async move { backend.run(request, io).await });
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no output within 5 s")
        .expect("the sink closed without output");
    assert_eq!(
        (first.stream, &first.data[..]),
        (Stream::Stdout, &b"first\n"[..])
    );
    assert!(
        !job.is_finished(),
        "the first chunk must arrive while the program still sleeps"
    );
    let report = job.await.expect("the job task");
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    let second = rx.recv().await.expect("the second chunk");
    assert_eq!(
        (second.stream, &second.data[..]),
        (Stream::Stdout, &b"second\n"[..])
    );
    assert!(
        report.usage.wall >= Duration::from_millis(250),
        "{:?}",
        report.usage
    );
    Checked::Passed
}

/// Many jobs at once all succeed with their own output.
pub async fn concurrent_jobs(target: &Target) -> Checked {
    let jobs: Vec<_> = (0..target.guests.concurrency())
        .map(|i| {
            let target = target.clone();
            tokio::spawn(async move {
                let line = format!("job {i}\n");
                let mut request = target.guests.write_and_exit(line.as_bytes(), b"", 0);
                request.job_id = format!("{}-{i}", request.job_id);
                (line, run_plain(&target, request).await)
            })
        })
        .collect();
    for job in jobs {
        let (line, done) = job.await.expect("a job task");
        assert_eq!(done.report.outcome, Outcome::exited(0), "{line}: {done:?}");
        assert_eq!(String::from_utf8_lossy(&done.stdout), line);
    }
    Checked::Passed
}

/// `run` never returns while the job's code may still run: after a wall timeout and after a
/// cancel of a program writing output all the time, the backend has let go of the output sink
/// the moment `run` returns (see [`run`]: the sink must close within 5 s, here within 200 ms),
/// and nothing more arrives.
pub async fn never_returns_while_the_job_runs(target: &Target) -> Checked {
    for cancelled in [false, true] {
        let mut request = target.guests.tick();
        request.limits.wall_time = Duration::from_millis(300);
        let cancel = CancellationToken::new();
        if cancelled {
            request.limits.wall_time = Duration::from_secs(30);
            cancel_after(&cancel, Duration::from_millis(300));
        }
        let (sink, mut rx) = OutputSink::channel(1 << 20, 1024);
        let io = JobIo {
            output: sink.clone(),
            cancel,
        };
        let report = target.backend.run(request, io).await;
        drop(sink);
        let what = if cancelled { "cancelled" } else { "timed out" };
        let expected = if cancelled {
            OutcomeReason::Cancelled
        } else {
            OutcomeReason::WallTimeout
        };
        assert_eq!(report.outcome.reason, expected, "{report:?}");
        let mut ticks = Vec::new();
        let closed = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(chunk) = rx.recv().await {
                ticks.extend_from_slice(&chunk.data);
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "{what}: the backend still holds the output sink after `run` returned"
        );
        assert!(
            ticks.starts_with(b"tick\n"),
            "{what}: the program ticked before it was stopped: {:?}",
            String::from_utf8_lossy(&ticks)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            rx.recv().await.is_none(),
            "{what}: output after `run` returned"
        );
    }
    assert_still_works(target).await;
    Checked::Passed
}

/// Every check, by name (the list [`conformance_suite!`](crate::conformance_suite) expands).
#[macro_export]
macro_rules! conformance_suite {
    ($target:path) => {
        $crate::conformance_suite!(@each $target;
            exit_codes_and_output,
            killed_by_a_signal,
            a_trap_is_signaled,
            args_reach_the_program,
            env_is_the_jobs,
            stdin_reaches_the_program,
            input_files_are_readable,
            output_over_the_cap_stops_the_job,
            bytes_survive_as_bytes,
            wall_timeout_while_spinning,
            wall_timeout_while_sleeping,
            cancel_before_start,
            cancel_while_spinning,
            cancel_while_sleeping,
            output_is_streamed_live,
            concurrent_jobs,
            never_returns_while_the_job_runs
        );

        /// The suite catches a broken backend: the same guests, run by a wrapper that lets
        /// jobs write past the output cap, fail the output-cap check.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_suite_fails_a_backend_that_ignores_the_output_cap() {
            let real = $target().await;
            let broken = real.with_backend(::std::sync::Arc::new(
                $crate::conformance::IgnoresOutputCap(real.backend.clone()),
            ));
            $crate::conformance::assert_check_fails(
                async move { $crate::conformance::output_over_the_cap_stops_the_job(&broken).await },
                "OutputLimit",
            )
            .await;
        }
    };
    (@each $target:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let target = $target().await;
                let checked = $crate::conformance::$check(&target).await;
                $crate::conformance::report(stringify!($check), &target, &checked);
            }
        )*
    };
}

/// Runs `check` expecting it to fail (panic) with a message containing `needle`; panics if it
/// passes, is skipped, or fails for another reason.
pub async fn assert_check_fails<F>(check: F, needle: &str)
where
    F: Future<Output = Checked> + Send + 'static,
{
    let result = tokio::spawn(check).await;
    let panic = match result {
        Ok(checked) => panic!("the check did not fail: {checked:?}"),
        Err(e) => e.into_panic(),
    };
    let message = crate::panic_message(&*panic).unwrap_or_default();
    assert!(
        message.contains(needle),
        "the check failed, but not because of `{needle}`: {message}"
    );
}

/// A deliberately broken backend for showing the suite catches it: it runs jobs through the
/// wrapped backend with no output cap (forwarding their output to the real sink) and a wall time
/// of at most 2 s, so a job writing forever ends in `wall_timeout` instead of `output_limit`.
pub struct IgnoresOutputCap(pub Arc<dyn Backend>);

#[async_trait::async_trait]
impl Backend for IgnoresOutputCap {
    fn name(&self) -> &'static str {
        "broken-ignores-output-cap"
    }

    fn accepts(&self, program: &crate::Program) -> bool {
        self.0.accepts(program)
    }

    async fn run(&self, mut request: ExecRequest, io: JobIo) -> ExecReport {
        request.limits.output_bytes = u64::MAX;
        request.limits.wall_time = request.limits.wall_time.min(Duration::from_secs(2));
        let (uncapped, mut rx) = OutputSink::channel(u64::MAX, 64);
        let real = io.output.clone();
        let forward = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                // Past the real cap the real sink drops the bytes; the job is not stopped.
                let _ = real.write(chunk.stream, &chunk.data).await;
            }
        });
        let report = self
            .0
            .run(
                request,
                JobIo {
                    output: uncapped,
                    cancel: io.cancel,
                },
            )
            .await;
        let _ = forward.await;
        report
    }
}
