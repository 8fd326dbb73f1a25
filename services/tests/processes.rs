//! Whole `nekton` processes: a worker killed with SIGKILL mid-job, a worker stopped with SIGTERM,
//! and the CLI as a user runs it.

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Harness, guests};
use nekton::api::types::JobState;

const BIN: &str = env!("CARGO_BIN_EXE_nekton");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(url: &str, state_dir: &Path, lease_secs: u64, extra: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args([
            "worker",
            "--database-url",
            url,
            "--lease-secs",
            &lease_secs.to_string(),
            "--slots",
            "4",
        ])
        .arg("--state-dir")
        .arg(state_dir)
        .args(extra)
        .env("NEKTON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {BIN} worker: {e}"));
    Proc(child)
}

fn signal(p: &Proc, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.0.id() as i32), sig)
        .expect("signal the worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_rescued_by_another_worker() {
    // API only in this process; the workers are separate processes.
    let h = Harness::start_with(|o| o.worker_slots = None).await;
    let digest = h.push(guests::sleep_then_print(1500)).await;
    let lease = 2;
    let dir_a = tempfile::tempdir().unwrap();
    let a = worker(h.db.url(), dir_a.path(), lease, &[]);
    let job = h.submit(&Harness::spec(&digest)).await;
    let running = h.wait_running(job.id, Duration::from_secs(30)).await;
    assert_eq!(running.attempt, 1);
    let dir_b = tempfile::tempdir().unwrap();
    let _b = worker(h.db.url(), dir_b.path(), lease, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&a, nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    let done = h.wait_finished(job.id, Duration::from_secs(60)).await;
    let took = killed.elapsed();
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.attempt, 2, "rescued and run again");
    assert!(
        took <= Duration::from_secs(lease + 5) + Duration::from_millis(1500),
        "finished {took:?} after the kill; the bound is lease ({lease} s) + 5 s + the job's own 1.5 s"
    );
    // Only attempt 2's output is the job's log, and attempt 1 is recorded as lost.
    assert_eq!(
        h.client.plain_log_bytes(job.id, None).await.unwrap(),
        b"done\n"
    );
    let (reason,): (String,) =
        sqlx::query_as("SELECT reason FROM job_attempts WHERE job_id = $1 AND attempt = 1")
            .bind(job.id)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(reason, "worker_lost");
}

/// A worker's Wasm instance pool is the size of its slots, not the Wasm backend's default of 256:
/// each pooled instance has an async stack of its own (two mappings: a guard page and the
/// stack), and every container job forks the worker (its init, P2), copying each of its
/// mappings (`server::wasm_backend`). With the default pool a worker had ≈ 620 mappings, 512
/// of them stacks; with 4 slots it has about a hundred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_wasm_pool_is_the_size_of_its_slots() {
    let h = Harness::start_with(|o| o.worker_slots = None).await;
    let digest = h.push(guests::hello()).await;
    let dir = tempfile::tempdir().unwrap();
    let w = worker(h.db.url(), dir.path(), 30, &[]);
    // A job it ran: the backend (created before the worker claims) is up.
    let job = h.submit(&Harness::spec(&digest)).await;
    let done = h.wait_finished(job.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.0.id()))
        .expect("reading the worker's /proc/PID/maps");
    let n = maps.lines().count();
    assert!(
        n < 300,
        "a worker of 4 slots has {n} mappings: is its Wasm pool sized by its slots? (256 pooled \
         instances alone add 512)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_jobs_finish_then_requeues_the_rest() {
    let h = Harness::start_with(|o| o.worker_slots = None).await;
    let short = h.push(guests::sleep_then_print(500)).await;
    let long = h.push(guests::spin()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = worker(h.db.url(), dir.path(), 30, &["--shutdown-grace-secs", "2"]);
    let a = h.submit(&Harness::spec(&short)).await;
    let b = h.submit(&Harness::spec(&long)).await;
    h.wait_running(a.id, Duration::from_secs(30)).await;
    h.wait_running(b.id, Duration::from_secs(30)).await;
    signal(&w, nix::sys::signal::Signal::SIGTERM);
    let status = tokio::task::spawn_blocking(move || {
        let s = w.0.wait();
        (w, s)
    });
    let (_w, status) = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .expect("worker exits")
        .unwrap();
    assert!(
        status.unwrap().success(),
        "the worker exits cleanly on SIGTERM"
    );
    let a = h.client.get_job(a.id).await.unwrap();
    assert_eq!(
        a.state,
        JobState::Succeeded,
        "a job that fits in the grace period finishes"
    );
    let b = h.client.get_job(b.id).await.unwrap();
    assert_eq!(
        b.state,
        JobState::Queued,
        "a job still running after the grace period is requeued"
    );
    assert_eq!(
        (b.attempt, b.max_attempts),
        (1, 4),
        "the interrupted attempt is not spent"
    );
    h.client.cancel(b.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_run_prints_output_and_exits_with_the_jobs_code() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exit7 = dir.path().join("exit7.wasm");
    std::fs::write(&exit7, guests::exit_with(7)).unwrap();
    let out = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["run", "--server", &h.base])
        .arg(&exit7)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bye\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(7));

    let cat = dir.path().join("cat.wasm");
    std::fs::write(&cat, guests::cat()).unwrap();
    let mut child = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["run", "-i", "--server", &h.base])
        .arg(&cat)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped input\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"piped input\n");
    assert_eq!(out.status.code(), Some(0));

    let spin = dir.path().join("spin.wasm");
    std::fs::write(&spin, guests::spin()).unwrap();
    // A bare number is refused with a hint (2 ms and 2 s are both plausible readings).
    let out = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["run", "--server", &h.base, "--wall-time", "300"])
        .arg(&spin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("300s or 300ms"), "{err}");
    let out = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["run", "--server", &h.base, "--wall-time", "300ms"])
        .arg(&spin)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(124),
        "a timeout exits 124 like timeout(1)"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wall_timeout"));

    // jobs ls shows them; batch submit runs a JSONL file.
    let ls = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["jobs", "ls", "--server", &h.base])
        .output()
        .unwrap();
    assert!(ls.status.success());
    assert!(String::from_utf8_lossy(&ls.stdout).lines().count() >= 3);

    // A reader that goes away (`nekton jobs ls --json | head -1`) ends the command quietly
    // with 0: the read end is closed before nekton writes, so its first write fails with EPIPE.
    for flags in [
        &["jobs", "ls", "--json"][..],
        &["jobs", "ls"][..],
        &["openapi"][..],
    ] {
        let mut child = Command::new(BIN)
            .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
            .args(flags)
            .args(["--server", &h.base])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {err}");
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
    }
    // `--server` goes before the subcommand too; `-q` prints ids only.
    let q = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["--server", &h.base, "jobs", "ls", "-q"])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let ids = String::from_utf8_lossy(&q.stdout).into_owned();
    assert!(ids.lines().count() >= 3, "{ids}");
    for line in ids.lines() {
        line.parse::<uuid::Uuid>()
            .unwrap_or_else(|e| panic!("{line:?} is not an id: {e}"));
    }
    // `jobs wait` on finished jobs prints each one's result and exits with the first failure's
    // code (the spinning job above timed out: 124).
    let first = ids.lines().next().unwrap_or_default().to_string();
    let wait = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["jobs", "wait", "--server", &h.base])
        .args(ids.lines())
        .output()
        .unwrap();
    let waited = String::from_utf8_lossy(&wait.stdout);
    assert_eq!(waited.lines().count(), ids.lines().count(), "{waited}");
    assert!(waited.starts_with(&first), "{waited}");
    assert_eq!(wait.status.code(), Some(124), "{waited}");
    let digest = h.push(guests::hello()).await;
    let jsonl = dir.path().join("jobs.jsonl");
    std::fs::write(
        &jsonl,
        format!("{{\"module\":\"{digest}\"}}\n\n{{\"module\":\"{digest}\",\"args\":[\"x\"]}}\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["batch", "submit", "--server", &h.base, "--wait"])
        .arg(&jsonl)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_demo_runs_on_the_embedded_database() {
    // The README's first command, minus the wait: a fresh state dir, no database URL.
    let state = common::serve_state_dir("nekton-demo-");
    let port = common::free_port();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--demo",
            "--exit-after-demo",
            // Tests never touch the host's networking unless they are about it.
            "--no-bridge-network",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("NEKTON_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Hello from a nekton Wasm job"), "{stdout}");
    assert!(stdout.contains("\"state\": \"succeeded\""), "{stdout}");
    // The embedded server was stopped with the service.
    let pid_file = state.path().join("postgres/data/postmaster.pid");
    assert!(
        !pid_file.exists(),
        "the embedded PostgreSQL was not stopped"
    );
}

/// `nekton serve` on a fresh state dir writes an admin token (0600) and says where; the CLI on
/// the same machine finds it with no token typed; `token create` prints only the token; an
/// unauthenticated request is refused; `--auth off` on a non-loopback address refuses to start.
#[test]
fn serve_bootstraps_an_admin_token_the_cli_finds() {
    let state = common::serve_state_dir("nekton-auth-");
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log_path = state.path().join("serve.log");
    let _serve = Proc(
        Command::new(BIN)
            .args(["serve", "--no-bridge-network", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state.path())
            .env_remove("NEKTON_DATABASE_URL")
            .env_remove("NEKTON_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // The CLI as a user on this machine runs it: no token, only where the service keeps its state.
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--server", &base])
            .env("NEKTON_STATE_DIR", state.path())
            .env_remove("NEKTON_TOKEN")
            .env("HOME", state.path())
            .output()
            .unwrap()
    };
    let start = Instant::now();
    let me = loop {
        let out = cli(&["whoami"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve did not come up: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        me.contains("\"tenant\": \"default\"") && me.contains("admin"),
        "{me}"
    );
    let token_file = nekton::server::admin_token_path(state.path());
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token is readable by others");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains(&token_file.display().to_string()),
        "serve does not say where the token is: {log}"
    );
    // Without a token the API refuses.
    let status = Command::new(BIN)
        .args(["jobs", "ls", "--server", &base])
        .env("NEKTON_STATE_DIR", "/nonexistent")
        .env("HOME", state.path())
        .env_remove("NEKTON_TOKEN")
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // A tenant and a token for it; stdout is the token alone.
    let out = cli(&["tenant", "create", "ci", "--max-running", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["token", "create", "--tenant", "ci", "--scope", "jobs:read"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(
        token.starts_with("nk_") && token.trim_end().len() == 35 && token.lines().count() == 1,
        "{token:?}"
    );
    let out = Command::new(BIN)
        .args(["whoami", "--server", &base, "--token", token.trim()])
        .env("HOME", state.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"tenant\": \"ci\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `nekton login` saves it; then the CLI sends it without being told (the saved token comes
    // before the admin.token fallback).
    let mut login = Command::new(BIN)
        .args(["login", "--server", &base])
        .env("HOME", state.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["whoami"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"tenant\": \"ci\""));
    let saved = state.path().join(".config/nekton/credentials.json");
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The audit log has the bootstrap and the changes.
    let out = cli(&["logout"]);
    assert!(out.status.success());
    let out = cli(&["audit"]);
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains("tenant.create") && audit.contains("token.create"),
        "{audit}"
    );

    // --auth off is for loopback only.
    let other_port = common::free_port();
    let out = Command::new(BIN)
        .args(["serve", "--auth", "off", "--no-bridge-network", "--listen"])
        .arg(format!("0.0.0.0:{other_port}"))
        .arg("--state-dir")
        .arg(state.path().join("second"))
        .env_remove("NEKTON_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--auth off") && err.contains("0.0.0.0"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restarts_its_embedded_postgres_after_a_crash() {
    // `nekton serve` on a fresh state dir; then its PostgreSQL is killed with SIGKILL.
    let state = common::serve_state_dir("nekton-heal-");
    let port = common::free_port();
    let log_path = state.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--no-bridge-network", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("NEKTON_DATABASE_URL")
        .env("NEKTON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let serve = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let start = Instant::now();
    // The first start writes the admin token into the state dir; the client reads it from there.
    let token_path = nekton::server::admin_token_path(state.path());
    let mut client = nekton::cli::Client::new(&base).unwrap();
    let digest = loop {
        if let Ok(token) = std::fs::read_to_string(&token_path) {
            client = nekton::cli::Client::with_token(&base, Some(token.trim())).unwrap();
        }
        match client.push_module(guests::hello()).await {
            Ok(m) => break m.digest,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "serve did not come up: {e:#}\n{}",
                    log_text()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let spec = Harness::spec(&digest);
    let before = client.submit(&spec, Some("before-crash")).await.unwrap();

    let pid_file = state.path().join("postgres/data/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster.pid names the server");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();

    // New work is accepted and runs again, with nobody's help.
    let after = loop {
        match client.submit(&spec, Some("after-crash")).await {
            Ok(job) => break job,
            Err(e) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(60),
                    "serve never accepted a job after its database was killed: {e:#}\n{}",
                    log_text()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let finished = loop {
        match client.get_job(after.id).await {
            Ok(job) if job.state.is_terminal() => break job,
            _ => {
                assert!(
                    killed.elapsed() < Duration::from_secs(60),
                    "the job submitted after the crash did not finish\n{}",
                    log_text()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let healed = killed.elapsed();
    assert_eq!(finished.state, JobState::Succeeded, "{finished:?}");
    // How fast is a measurement (docs/operations.md), not an assertion: crash recovery's time
    // depends on the machine's load; the loops above fail the test after 60 s.
    eprintln!("serve healed: kill -9 of PostgreSQL → a new job succeeded in {healed:?}");
    // Nothing accepted before the crash is lost.
    let before = client.get_job(before.id).await.unwrap();
    assert!(
        before.state == JobState::Succeeded || !before.state.is_terminal(),
        "{before:?}"
    );
    let log = log_text();
    assert!(log.contains("exited unexpectedly"), "{log}");
    assert!(log.contains("running again"), "{log}");
    let new_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster.pid names the new server");
    assert_ne!(new_pid, pid);

    // A clean stop still stops the (new) server.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut serve = serve;
    let status = serve.0.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", log_text());
    assert!(
        !pid_file.exists(),
        "the restarted PostgreSQL was not stopped"
    );
}

/// The files in `examples/`, run the way README.md and examples/README.md say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_run_as_the_readme_says() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let h = Harness::start().await;
    let out = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["run", "--server", &h.base])
        .arg(examples.join("hello.wat"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello from a nekton Wasm job!\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    let mut child = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["run", "-i", "--server", &h.base])
        .arg(examples.join("echo.wat"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.status.code(), Some(0));

    let report = tempfile::tempdir().unwrap();
    let suite = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["test", "--server", &h.base, "--junit"])
        .arg(report.path().join("report.xml"))
        .arg(examples.join("suite.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        suite.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&suite.stdout),
        String::from_utf8_lossy(&suite.stderr)
    );
    assert!(String::from_utf8_lossy(&suite.stdout).ends_with("3 of 3 passed, score 3/3\n"));
    assert!(
        std::fs::read_to_string(report.path().join("report.xml"))
            .unwrap()
            .contains(r#"tests="3" failures="0" errors="0" skipped="0""#)
    );

    let push = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["module", "push", "--server", &h.base])
        .arg(examples.join("echo.wat"))
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let digest = String::from_utf8_lossy(&push.stdout).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let batch = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args([
            "batch",
            "submit",
            "--server",
            &h.base,
            "--wait",
            "--defaults",
        ])
        .arg(format!("{{\"module\":\"{digest}\"}}"))
        .arg(examples.join("batch.jsonl"))
        .output()
        .unwrap();
    assert_eq!(
        batch.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&batch.stderr)
    );
    let ls = Command::new(BIN)
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args([
            "jobs",
            "ls",
            "--server",
            &h.base,
            "--label",
            "example=batch",
        ])
        .args(["--format", "{{.labels.n}} {{.state}}"])
        .output()
        .unwrap();
    let mut rows: Vec<String> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    rows.sort();
    assert_eq!(rows, ["1 succeeded", "2 succeeded", "3 succeeded"]);

    // The container example is a valid job spec (submitted to an API without workers here: no
    // test pulls from a public registry), stored with its image normalised.
    let api_only = Harness::start_with(|o| o.worker_slots = None).await;
    let body = std::fs::read(examples.join("container-job.json")).unwrap();
    let resp = api_only
        .http
        .post(format!("{}/v1/jobs", api_only.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let job: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(job["state"], "queued", "{job}");
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    api_only.client.cancel(id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_cancels_and_waits_for_batches_and_lists_modules() {
    let h = Harness::start().await;
    let token = h.admin_token.clone().unwrap();
    let nekton = |args: &[&str]| {
        Command::new(BIN)
            .env("NEKTON_TOKEN", &token)
            .env("NEKTON_SERVER", &h.base)
            .args(args)
            .output()
            .unwrap()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let hello = h.push(guests::hello()).await;
    let three = h.push(guests::exit_with(3)).await;
    let spec = nekton::api::types::BatchSpec {
        defaults: Default::default(),
        jobs: vec![
            serde_json::json!({ "module": hello }),
            serde_json::json!({ "module": three }),
            serde_json::json!({ "module": hello }),
        ],
        labels: [("team".to_string(), "x".to_string())].into(),
    };
    let created = h.client.submit_batch(&spec).await.unwrap();
    let id = created.id.to_string();

    // wait: counts, the job that failed with its result, exit 1.
    let out = nekton(&["batch", "wait", &id]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}{}", text(&out.stderr));
    assert!(report.contains("3 jobs: failed 1, succeeded 2"), "{report}");
    let failed = created.job_ids[1].to_string();
    assert!(
        report
            .lines()
            .any(|l| l.contains(&failed) && l.contains("failed") && l.contains("exit 3")),
        "{report}"
    );
    assert_eq!(
        report.lines().count(),
        2,
        "only the failed job is named: {report}"
    );

    // A batch that only succeeds: exit 0.
    let ok = h
        .client
        .submit_batch(&nekton::api::types::BatchSpec {
            jobs: vec![serde_json::json!({ "module": hello })],
            ..spec.clone()
        })
        .await
        .unwrap();
    let out = nekton(&["batch", "wait", &ok.id.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // cancel: a parked batch's waiting jobs end at once.
    let parked = h
        .client
        .submit_batch(&nekton::api::types::BatchSpec {
            defaults: [("queue".to_string(), serde_json::json!("nowhere"))]
                .into_iter()
                .collect(),
            jobs: vec![serde_json::json!({ "module": hello }); 2],
            labels: Default::default(),
        })
        .await
        .unwrap();
    let out = nekton(&["batch", "cancel", &parked.id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 waiting jobs cancelled, 0 running jobs asked to stop"),
        "{}",
        text(&out.stdout)
    );

    // ls: table, ids, JSON, templates, filters.
    let out = nekton(&["batch", "ls"]);
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table.lines().nth(3).unwrap().starts_with(&id),
        "oldest last: {table}"
    );
    let out = nekton(&["batch", "ls", "-q", "--label", "team=x"]);
    assert_eq!(text(&out.stdout), format!("{}\n{id}\n", ok.id));
    let out = nekton(&["batch", "ls", "--json", "--done"]);
    let listed: Vec<nekton::api::types::Batch> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 3);
    let out = nekton(&["batch", "ls", "--unfinished", "-q"]);
    assert_eq!(text(&out.stdout), "");
    let out = nekton(&[
        "batch",
        "ls",
        "--limit",
        "1",
        "--format",
        "{{.id}} {{.total}}",
    ]);
    assert_eq!(text(&out.stdout), format!("{} 2\n", parked.id));
    assert!(
        text(&out.stderr).contains("--cursor"),
        "{}",
        text(&out.stderr)
    );

    // get: JSON by default.
    let out = nekton(&["batch", "get", &id]);
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["total"], 3);
    assert_eq!(got["counts"]["failed"], 1);

    // module ls.
    let out = nekton(&["module", "ls"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("DIGEST"), "{table}");
    let out = nekton(&["module", "ls", "-q"]);
    assert_eq!(text(&out.stdout), format!("{three}\n{hello}\n"));
    let out = nekton(&["module", "ls", "--json", "--limit", "1", "--all"]);
    let modules: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(modules.len(), 2);

    // version: both sides; an unreachable server still prints the client's and exits 1.
    let out = nekton(&["version"]);
    let v = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        v.starts_with(&format!("client: nekton {}\n", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains("server: nekton") && v.contains("API v1"), "{v}");
    let out = Command::new(BIN)
        .args(["version", "--server", "http://127.0.0.1:1"])
        .env_remove("NEKTON_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("client: nekton"));
    assert!(
        text(&out.stderr).contains("could not ask http://127.0.0.1:1"),
        "{}",
        text(&out.stderr)
    );
}
