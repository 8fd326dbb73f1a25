//! Three worker "hosts" on one PostgreSQL, the way a worker DaemonSet runs on three nodes: each
//! worker is a separate `nekton worker` process in its own network namespace (only a down `lo`:
//! it reaches PostgreSQL through the server's Unix socket and nothing else) and its own mount
//! namespace, with its own state directory and image store. The API runs in this process.
//!
//! Under load, one worker is killed with SIGKILL, one is stopped with SIGTERM, and PostgreSQL is
//! restarted (a fast shutdown, then started again on the same data); killed and stopped hosts come
//! back as new processes, as a DaemonSet's pods would. Every job submitted must end `succeeded`,
//! exactly once: no job lost, none stuck, no result recorded twice, no output written twice.
//!
//! Root only (namespaces); a missing prerequisite fails the test with its name.

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::guests;
use nekton::api::types::{JobSpec, JobState};
use nekton::cli::Client;
use nekton::pg::{EmbeddedOptions, EmbeddedPostgres};
use nix::sys::signal::Signal;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_nekton");
const JOBS: usize = 90;
const LEASE_SECS: u64 = 3;

/// One simulated host: its state dir outlives its worker processes (a node's hostPath).
struct Host {
    name: &'static str,
    state: PathBuf,
    worker: Option<Child>,
}

impl Host {
    fn start(&mut self, url: &str) {
        let mut cmd = Command::new(BIN);
        cmd.args(["worker", "--database-url", url, "--slots", "4"])
            .arg("--lease-secs")
            .arg(LEASE_SECS.to_string())
            .arg("--shutdown-grace-secs")
            .arg("1")
            .arg("--state-dir")
            .arg(&self.state)
            .env("NEKTON_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec the closure makes only raw syscalls (unshare, mount) and
        // allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::sched::unshare(
                    nix::sched::CloneFlags::CLONE_NEWNET | nix::sched::CloneFlags::CLONE_NEWNS,
                )
                .map_err(std::io::Error::from)?;
                // This host's mounts (job root filesystems) stay in its own namespace.
                nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting host {}'s worker ({BIN}): {e}", self.name));
        self.worker = Some(child);
    }

    fn signal(&mut self, sig: Signal) {
        let child = self.worker.as_ref().expect("a running worker");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)
            .unwrap_or_else(|e| panic!("signalling host {}'s worker: {e}", self.name));
    }

    fn wait_exit(&mut self, timeout: Duration) {
        let mut child = self.worker.take().expect("a running worker");
        let start = Instant::now();
        loop {
            if child.try_wait().expect("wait for the worker").is_some() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "host {}'s worker did not exit within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The worker's network namespace is not the test's (it really is another "host").
    fn check_isolated(&self) {
        let pid = self.worker.as_ref().expect("a running worker").id();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("worker's netns");
        let ours = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        assert_ne!(theirs, ours, "host {} shares the test's network", self.name);
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("worker's mntns");
        let ours = std::fs::read_link("/proc/self/ns/mnt").expect("own mntns");
        assert_ne!(theirs, ours, "host {} shares the test's mounts", self.name);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.worker.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the multi-host simulation needs root (network and mount namespaces per worker host); run it as root, as scripts/test.sh does in CI"
    );
}

async fn start_pg(root: &Path) -> EmbeddedPostgres {
    EmbeddedPostgres::start(root, EmbeddedOptions::for_tests())
        .await
        .unwrap_or_else(|e| panic!("starting PostgreSQL for the simulation: {e}"))
}

/// Submits with an Idempotency-Key and retries through outages: the same key always names the
/// same job, so a retry after a cut connection cannot create a second one.
async fn submit_retrying(client: &Client, spec: &JobSpec, key: &str) -> Uuid {
    let start = Instant::now();
    loop {
        match client.submit(spec, Some(key)).await {
            Ok(job) => return job.id,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "submitting {key} kept failing: {e:#}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_hosts_survive_kill_sigterm_and_a_database_restart() {
    require_root();
    let dir = common::serve_state_dir("nkmulti");
    let pg_root = dir.path().join("pg");
    let pg = start_pg(&pg_root).await;
    pg.create_database_if_missing("nekton").await.unwrap();
    let url = pg.url("nekton");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(pg.connect_options("nekton"))
        .await
        .unwrap();
    nekton::store::migrate(&pool).await.unwrap();

    // The API, in this process, without a worker.
    let api_state = tempfile::tempdir().unwrap();
    let mut opts = common::options(api_state.path());
    opts.worker_slots = None;
    let running = nekton::server::start(pool.clone(), opts).await.unwrap();
    let base = format!("http://{}", running.api_addr.unwrap());
    let client = Client::with_token(&base, running.admin_token.as_deref()).unwrap();

    let mut hosts: Vec<Host> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|name| {
            let state = dir.path().join(name);
            std::fs::create_dir_all(&state).unwrap();
            Host {
                name,
                state,
                worker: None,
            }
        })
        .collect();
    for h in &mut hosts {
        h.start(&url);
    }
    for h in &hosts {
        h.check_isolated();
    }

    let digest = client
        .push_module(guests::sleep_then_print(400))
        .await
        .unwrap()
        .digest;
    let spec = JobSpec {
        module: Some(digest),
        max_attempts: Some(10),
        ..Default::default()
    };
    let mut ids = Vec::with_capacity(JOBS);
    for i in 0..JOBS / 3 {
        ids.push(submit_retrying(&client, &spec, &format!("sim-{i}")).await);
    }

    // kill -9 on node-a while it runs jobs; it comes back after a while, as a new pod would.
    // Killed once every host runs some (30 jobs of 400 ms on 3 × 4 slots: the first waves), not
    // after a fixed delay: a host that had started slowly, or whose jobs had all just ended,
    // once took the SIGKILL with nothing running, and the run exercised no rescue.
    let busy_until = Instant::now() + Duration::from_secs(20);
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT worker_id) FROM jobs WHERE state = 'running'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if busy == 3 {
            break;
        }
        assert!(
            Instant::now() < busy_until,
            "the three hosts never ran jobs at once ({busy} did)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hosts[0].signal(Signal::SIGKILL);
    hosts[0].wait_exit(Duration::from_secs(5));
    for i in JOBS / 3..2 * JOBS / 3 {
        ids.push(submit_retrying(&client, &spec, &format!("sim-{i}")).await);
    }
    // SIGTERM on node-b: it drains (1 s grace), requeues the rest and exits; then comes back.
    hosts[1].signal(Signal::SIGTERM);
    hosts[1].wait_exit(Duration::from_secs(20));
    hosts[0].start(&url);
    hosts[1].start(&url);

    // PostgreSQL restarts under load; submissions continue through it (retrying, idempotent).
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop().await;
    let submitter = {
        let client = client.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let mut more = Vec::new();
            for i in 2 * JOBS / 3..JOBS {
                more.push(submit_retrying(&client, &spec, &format!("sim-{i}")).await);
            }
            more
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg = start_pg(&pg_root).await;
    ids.extend(submitter.await.unwrap());
    // A replayed key names the same job: nothing submitted twice.
    assert_eq!(submit_retrying(&client, &spec, "sim-0").await, ids[0]);

    // Every job ends, succeeded, once.
    let deadline = Instant::now() + Duration::from_secs(120);
    for &id in &ids {
        let job = loop {
            match client.get_job(id).await {
                Ok(job) if job.state.is_terminal() => break job,
                Ok(job) => assert!(
                    Instant::now() < deadline,
                    "job {id} still {:?} (attempt {}): stuck",
                    job.state,
                    job.attempt
                ),
                Err(e) => assert!(Instant::now() < deadline, "job {id}: {e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(
            client.plain_log_bytes(id, None).await.unwrap(),
            b"done\n",
            "job {id}'s output, exactly once"
        );
    }
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), JOBS, "every submission is its own job");
    let (jobs, ok_attempts, lost): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs), \
                (SELECT count(*) FROM job_attempts WHERE reason = 'exited'), \
                (SELECT count(*) FROM job_attempts WHERE reason = 'worker_lost')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(jobs, JOBS as i64, "no job lost or duplicated in the table");
    assert_eq!(
        ok_attempts, JOBS as i64,
        "exactly one recorded result per job (lost attempts: {lost})"
    );
    let per_job_dupes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE reason = 'exited' \
         GROUP BY job_id HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(per_job_dupes, 0, "no job has two recorded results");
    assert!(
        lost >= 1,
        "the SIGKILL hit no running job: the simulation did not exercise a rescue"
    );
    eprintln!(
        "simulation: {JOBS} jobs succeeded once each; {lost} attempts lost with killed workers"
    );

    for h in &mut hosts {
        h.signal(Signal::SIGTERM);
        h.wait_exit(Duration::from_secs(20));
    }
    running.shutdown().await.unwrap();
    pool.close().await;
    pg.stop().await;
}
