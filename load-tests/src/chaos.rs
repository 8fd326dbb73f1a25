//! `chaos`: the delivery guarantees of docs/operations.md under faults, measured.
//!
//! The benchmark starts its own stack on this machine — a private PostgreSQL on a Unix socket
//! (durable: fsync and synchronous commit on), one `nekton api` on 127.0.0.1 and `--workers`
//! `nekton worker` processes (default 3) with a short lease (`--lease-secs`, default 5) — and
//! keeps it busy: a backlog of hello jobs submitted in batches (default 10,000 waiting, topped up
//! while the faults run unless `--backlog-once`) plus a trickle of single submissions, each with
//! an `Idempotency-Key` and retried with the same key until answered (some first tries are cut
//! by the client after a few milliseconds, on purpose). Meanwhile it runs a bounded schedule of
//! faults (`--faults`): `kill` (kill -9 of a worker, restarted after `--restart-after-ms`, as a
//! DaemonSet would), `kill-all` (all workers at once), `term` (SIGTERM: the worker drains and
//! requeues, then is restarted), `pg-fast` / `pg-immediate` (PostgreSQL stopped the way
//! `pg_ctl restart -m fast|immediate` does: SIGINT / SIGQUIT to the postmaster, then started
//! again on the same data), `pg-outage[:SECS]` (stopped, down SECS seconds, started) and
//! `cancel-kill` (a job is cancelled through the API at the moment its worker is killed).
//!
//! Then it waits for the queue to drain and reports, from the database and the API: what was
//! submitted and accepted, how jobs ended, **lost** (accepted, missing), **recorded twice** (more
//! than one result among a job's attempts, a final state without its attempt's result, or output
//! stored twice), **stuck** (not finished at the drain deadline) and the **rescue delay** of
//! every attempt lost to a kill: from the kill to the start of the job's next attempt (target:
//! ≤ lease + 5 s).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use nekton::cli::Client;
use nekton::pg::{EmbeddedOptions, EmbeddedPostgres};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::bench::{Section, module_spec};
use crate::guests;
use crate::procstat::{self, CpuUse};
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// The default fault schedule.
pub const DEFAULT_FAULTS: &str =
    "kill,term,pg-fast,kill-all,pg-immediate,cancel-kill,pg-outage:15,kill";

/// Seconds the rescue delay may exceed the lease (the target: rescue-to-rerun ≤ lease + 5 s).
pub const RESCUE_MARGIN_SECS: f64 = 5.0;

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Jobs waiting in the backlog (hello jobs, submitted in batches): filled before the first
    /// fault and topped up to this many waiting jobs while the faults run (0: no backlog).
    #[arg(long, default_value_t = 10_000)]
    pub backlog_jobs: usize,
    /// Fill the backlog once at the start instead of keeping it topped up.
    #[arg(long)]
    pub backlog_once: bool,
    /// Jobs per backlog batch.
    #[arg(long, default_value_t = 1000)]
    pub backlog_batch: usize,
    /// Single submissions per second (each with its own Idempotency-Key, retried until answered).
    #[arg(long, default_value_t = 20)]
    pub trickle_per_sec: u32,
    /// Every Nth single submission's first try is cut by the client after 1–8 ms (0: none).
    #[arg(long, default_value_t = 4)]
    pub cut_every: u32,
    /// How long one submission is retried before the benchmark counts it as unanswered.
    #[arg(long, default_value_t = 60)]
    pub answer_timeout_secs: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Slots of each worker.
    #[arg(long, default_value_t = 32)]
    pub worker_slots: usize,
    /// The lease of every process (`--lease-secs`): a worker silent this long loses its jobs.
    #[arg(long, default_value_t = 5)]
    pub lease_secs: u64,
    /// The workers' `--shutdown-grace-secs` (how long a SIGTERMed worker lets jobs finish).
    #[arg(long, default_value_t = 2)]
    pub shutdown_grace_secs: u64,
    /// The faults, in order, comma-separated: kill, kill-all, term, pg-fast, pg-immediate,
    /// pg-outage[:SECS] (default 15 s), cancel-kill.
    #[arg(long, default_value = DEFAULT_FAULTS)]
    pub faults: String,
    /// Seconds of normal running before the first fault and between faults.
    #[arg(long, default_value_t = 12)]
    pub fault_gap_secs: u64,
    /// How long a killed or stopped worker stays down before it is started again.
    #[arg(long, default_value_t = 1000)]
    pub restart_after_ms: u64,
    /// Longest wait, after the last fault, for every job to finish.
    #[arg(long, default_value_t = 180)]
    pub drain_timeout_secs: u64,
    /// `max_attempts` of every job (attempts lost to the faults count against it).
    #[arg(long, default_value_t = 10)]
    pub max_attempts: u32,
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of one worker (in turn), restarted after a moment.
    Kill,
    /// kill -9 of every worker at once, restarted after a moment.
    KillAll,
    /// SIGTERM of one worker (in turn): it drains and requeues; restarted once it has exited.
    Term,
    /// PostgreSQL fast shutdown (SIGINT, like `pg_ctl stop -m fast`), then started again.
    PgFast,
    /// PostgreSQL immediate shutdown (SIGQUIT, like `pg_ctl stop -m immediate`), then started.
    PgImmediate,
    /// PostgreSQL stopped (fast) for this long, then started.
    PgOutage(Duration),
    /// A job cancelled through the API at the moment its worker is killed with kill -9.
    CancelKill,
}

impl Fault {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s, None),
        };
        let fault = match name {
            "kill" => Fault::Kill,
            "kill-all" => Fault::KillAll,
            "term" => Fault::Term,
            "pg-fast" => Fault::PgFast,
            "pg-immediate" => Fault::PgImmediate,
            "pg-outage" => {
                let secs = match arg {
                    None => 15,
                    Some(a) => a
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=300).contains(n))
                        .with_context(|| {
                            format!("pg-outage:{a}: the outage is whole seconds from 1 to 300")
                        })?,
                };
                return Ok(Fault::PgOutage(Duration::from_secs(secs)));
            }
            "cancel-kill" => Fault::CancelKill,
            other => bail!(
                "unknown fault {other:?}: use kill, kill-all, term, pg-fast, pg-immediate, \
                 pg-outage[:SECS] or cancel-kill"
            ),
        };
        if let Some(a) = arg {
            bail!("fault {name} takes no argument (got {name}:{a})");
        }
        Ok(fault)
    }

    pub fn name(&self) -> String {
        match self {
            Fault::Kill => "kill".into(),
            Fault::KillAll => "kill-all".into(),
            Fault::Term => "term".into(),
            Fault::PgFast => "pg-fast".into(),
            Fault::PgImmediate => "pg-immediate".into(),
            Fault::PgOutage(d) => format!("pg-outage:{}", d.as_secs()),
            Fault::CancelKill => "cancel-kill".into(),
        }
    }

    /// Roughly how long the fault itself takes (not counting the gap before it).
    fn duration_estimate(&self, restart_after: Duration) -> Duration {
        match self {
            Fault::Kill | Fault::KillAll | Fault::CancelKill => restart_after,
            Fault::Term => restart_after + Duration::from_secs(3),
            Fault::PgFast | Fault::PgImmediate => Duration::from_secs(2),
            Fault::PgOutage(d) => *d + Duration::from_secs(2),
        }
    }
}

/// Parses a comma-separated schedule (at least one fault, at most 50).
pub fn parse_schedule(s: &str) -> Result<Vec<Fault>> {
    let faults: Vec<Fault> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Fault::parse)
        .collect::<Result<_>>()?;
    if faults.is_empty() || faults.len() > 50 {
        bail!(
            "--faults needs 1 to 50 faults, comma-separated (got {})",
            faults.len()
        );
    }
    Ok(faults)
}

/// How long the fault phase will take: a gap before each fault plus the faults.
pub fn schedule_estimate(faults: &[Fault], gap: Duration, restart_after: Duration) -> Duration {
    faults
        .iter()
        .map(|f| gap + f.duration_estimate(restart_after))
        .sum::<Duration>()
        + gap
}

// ---------------------------------------------------------------------------------------------
// Processes

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) pid: i32,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(nekton: &Path, args: &[String], log: &Path) -> Result<Proc> {
        let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(nekton)
            .args(args)
            .env_remove("NEKTON_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("duplicating a log handle")?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {}", nekton.display(), args.join(" ")))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .context("the process exited at once")?;
        Ok(Proc {
            child,
            pid,
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid), sig)
            .with_context(|| format!("sending {sig} to pid {}", self.pid))
    }

    /// Waits up to `timeout` for the process to exit; SIGKILL after that. Returns its status.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> String {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(s)) => s.to_string(),
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                format!("did not exit within {timeout:?}; killed")
            }
        }
    }

    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The worker id a `nekton worker --log-json` logged when it started.
pub fn worker_id_from_log(text: &str) -> Option<Uuid> {
    text.lines()
        .filter(|l| l.contains("worker started"))
        .find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            v["fields"]["worker"].as_str()?.parse().ok()
        })
}

/// From the workers' JSON logs: attempts whose completion the fence refused (they had been
/// taken over), and "lease lost" warnings.
pub fn scan_worker_log(text: &str) -> (usize, usize) {
    let mut fenced = 0;
    let mut lease_lost = 0;
    for line in text.lines() {
        if line.contains("completions not applied") {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let stale = v["fields"]["stale"].as_str().unwrap_or_default();
            fenced += stale
                .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
                .filter(|t| t.len() == 36 && t.parse::<Uuid>().is_ok())
                .count();
        } else if line.contains("lease lost; stopping the job") {
            lease_lost += 1;
        }
    }
    (fenced, lease_lost)
}

struct WorkerSlot {
    proc: Option<Proc>,
    generation: u32,
    id: Option<Uuid>,
    /// It exited on its own and could not be started again yet: `revive` keeps trying.
    down: bool,
}

/// Where each worker id ran: (worker index, generation).
type WorkerIds = HashMap<Uuid, (usize, u32)>;

struct Stack {
    root: PathBuf,
    nekton: PathBuf,
    pg_root: PathBuf,
    pg: Option<EmbeddedPostgres>,
    url: String,
    api: Proc,
    api_url: String,
    token: Option<String>,
    workers: Vec<WorkerSlot>,
    ids: WorkerIds,
    lease_secs: u64,
    slots: usize,
    grace_secs: u64,
    /// Workers that exited without being told to, and were started again.
    unexpected_exits: Vec<String>,
}

fn pg_options() -> EmbeddedOptions {
    // Durable, as in production: an accepted job must survive an immediate shutdown.
    EmbeddedOptions::default()
}

impl Stack {
    async fn start(nekton: &Path, args: &ChaosArgs, root: &Path) -> Result<Stack> {
        let pg_root = root.join("pg");
        let pg = EmbeddedPostgres::start(&pg_root, pg_options())
            .await
            .context("starting the private PostgreSQL")?;
        pg.create_database_if_missing("nekton")
            .await
            .context("creating the nekton database")?;
        let url = pg.url("nekton");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .context("finding a free port on 127.0.0.1")?;
            l.local_addr()?.port()
        };
        let api_state = root.join("api");
        make_dir(&api_state)?;
        let api_args: Vec<String> = vec![
            "api".into(),
            "--database-url".into(),
            url.clone(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--state-dir".into(),
            api_state.display().to_string(),
            "--lease-secs".into(),
            args.lease_secs.to_string(),
            "--log-json".into(),
        ];
        let api = Proc::spawn(nekton, &api_args, &root.join("api.log"))?;
        let api_url = format!("http://127.0.0.1:{port}");
        let mut stack = Stack {
            root: root.to_path_buf(),
            nekton: nekton.to_path_buf(),
            pg_root,
            pg: Some(pg),
            url,
            api,
            api_url,
            token: None,
            workers: Vec::new(),
            ids: HashMap::new(),
            lease_secs: args.lease_secs,
            slots: args.worker_slots,
            grace_secs: args.shutdown_grace_secs,
            unexpected_exits: Vec::new(),
        };
        stack.wait_api_ready(Duration::from_secs(120)).await?;
        stack.token = fs::read_to_string(api_state.join("admin.token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        for i in 0..args.workers {
            make_dir(&root.join(format!("worker-{i}")))?;
            stack.workers.push(WorkerSlot {
                proc: None,
                generation: 0,
                id: None,
                down: false,
            });
            stack.start_worker(i).await?;
        }
        Ok(stack)
    }

    async fn wait_api_ready(&mut self, timeout: Duration) -> Result<()> {
        wait_api_ready(&mut self.api, &self.api_url, timeout).await
    }

    async fn start_worker(&mut self, i: usize) -> Result<()> {
        let slot = &mut self.workers[i];
        slot.generation += 1;
        let state = self.root.join(format!("worker-{i}"));
        let args: Vec<String> = vec![
            "worker".into(),
            "--database-url".into(),
            self.url.clone(),
            "--state-dir".into(),
            state.display().to_string(),
            "--slots".into(),
            self.slots.to_string(),
            "--lease-secs".into(),
            self.lease_secs.to_string(),
            "--shutdown-grace-secs".into(),
            self.grace_secs.to_string(),
            "--no-bridge-network".into(),
            "--log-json".into(),
        ];
        let log = self
            .root
            .join(format!("worker-{i}.{}.log", slot.generation));
        let mut proc = Proc::spawn(&self.nekton, &args, &log)?;
        let id = wait_worker_started(&mut proc, i, &log).await?;
        slot.id = Some(id);
        slot.proc = Some(proc);
        self.ids.insert(id, (i, slot.generation));
        Ok(())
    }

    /// kill -9 of worker `i`; returns the moment of the kill and the worker's id.
    async fn kill_worker(&mut self, i: usize) -> Result<(DateTime<Utc>, Uuid)> {
        let slot = &mut self.workers[i];
        let id = slot.id.context("worker has no id")?;
        let mut proc = slot.proc.take().context("worker is not running")?;
        let at = Utc::now();
        proc.signal(Signal::SIGKILL)?;
        proc.wait_exit(Duration::from_secs(10)).await;
        Ok((at, id))
    }

    /// SIGTERM of worker `i`; waits for it to exit. Returns (sent at, exited after, status, id).
    async fn term_worker(&mut self, i: usize) -> Result<(DateTime<Utc>, Duration, String, Uuid)> {
        let slot = &mut self.workers[i];
        let id = slot.id.context("worker has no id")?;
        let mut proc = slot.proc.take().context("worker is not running")?;
        let at = Utc::now();
        let t = Instant::now();
        proc.signal(Signal::SIGTERM)?;
        let status = proc
            .wait_exit(Duration::from_secs(self.grace_secs + 60))
            .await;
        Ok((at, t.elapsed(), status, id))
    }

    /// Starts again, as a DaemonSet would, every worker that exited on its own (one second
    /// later; a start that fails is retried at the next call).
    async fn revive(&mut self) -> Result<()> {
        for i in 0..self.workers.len() {
            let exited = match self.workers[i].proc.as_mut() {
                Some(p) => p.child.try_wait()?.map(|s| (s, p.log_tail(5))),
                None => None,
            };
            if let Some((status, tail)) = exited {
                self.workers[i].proc = None;
                self.workers[i].down = true;
                self.unexpected_exits.push(format!(
                    "{} worker {i} (generation {}) exited on its own with {status}; log: {}",
                    Utc::now().format("%H:%M:%S%.3f"),
                    self.workers[i].generation,
                    tail.replace('\n', " | ")
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if self.workers[i].down {
                match self.start_worker(i).await {
                    Ok(()) => self.workers[i].down = false,
                    Err(e) => self.unexpected_exits.push(format!(
                        "{} worker {i} could not be started again: {}",
                        Utc::now().format("%H:%M:%S%.3f"),
                        format!("{e:#}").replace('\n', " | ")
                    )),
                }
            }
        }
        Ok(())
    }

    /// Stops PostgreSQL: fast (SIGINT) or immediate (SIGQUIT). Returns when it has exited.
    async fn pg_down(&mut self, immediate: bool) -> Result<DateTime<Utc>> {
        let pg = self.pg.take().context("PostgreSQL is not running")?;
        let at = Utc::now();
        if immediate {
            kill(Pid::from_raw(pg.pid()), Signal::SIGQUIT).context("SIGQUIT to PostgreSQL")?;
            let t = Instant::now();
            while pg.is_running() {
                if t.elapsed() > Duration::from_secs(30) {
                    bail!("PostgreSQL did not exit within 30 s of SIGQUIT");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            drop(pg);
        } else {
            pg.stop().await;
        }
        Ok(at)
    }

    /// Starts PostgreSQL again on the same data; returns when it accepts connections.
    async fn pg_up(&mut self) -> Result<DateTime<Utc>> {
        let pg = EmbeddedPostgres::start(&self.pg_root, pg_options())
            .await
            .context("starting PostgreSQL again")?;
        self.pg = Some(pg);
        Ok(Utc::now())
    }

    fn worker_pids(&self) -> Vec<i32> {
        self.workers
            .iter()
            .filter_map(|w| w.proc.as_ref().map(|p| p.pid))
            .collect()
    }

    /// SIGTERM to every process, PostgreSQL stopped; returns a note on how they ended.
    async fn stop(mut self, keep: bool) -> String {
        let workers = self.workers.iter_mut().filter_map(|w| w.proc.as_mut());
        shutdown(workers, &mut self.api, self.pg.take(), &self.root, keep).await
    }
}

/// Polls `<api_url>/readyz` until it answers 200; fails with the tail of the API's log if the
/// process exits first or `timeout` passes (the stacks of `chaos` and `scaling`).
pub(crate) async fn wait_api_ready(api: &mut Proc, api_url: &str, timeout: Duration) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("{api_url}/readyz");
    let start = Instant::now();
    loop {
        if let Some(status) = api.child.try_wait()? {
            bail!(
                "`nekton api` exited with {status} before it was ready; its log ends with:\n{}",
                api.log_tail(30)
            );
        }
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "`nekton api` did not answer 200 on {url} within {timeout:?}; its log ends \
                 with:\n{}",
                api.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until worker `i` logs `worker started` (in `log`) and returns its id; fails with the
/// tail of its log if it exits first or 60 s pass (the stacks of `chaos` and `scaling`).
pub(crate) async fn wait_worker_started(proc: &mut Proc, i: usize, log: &Path) -> Result<Uuid> {
    let start = Instant::now();
    loop {
        if let Some(id) = worker_id_from_log(&fs::read_to_string(log).unwrap_or_default()) {
            return Ok(id);
        }
        if let Some(status) = proc.child.try_wait()? {
            bail!(
                "worker {i} exited with {status} before it started; its log ends with:\n{}",
                proc.log_tail(30)
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "worker {i} did not log `worker started` within 60 s; its log ends with:\n{}",
                proc.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM to every worker, then the API (each waited for), PostgreSQL stopped, `root` removed
/// unless kept; what happened, for the report (the stacks of `chaos` and `scaling`).
pub(crate) async fn shutdown<'a>(
    workers: impl Iterator<Item = &'a mut Proc>,
    api: &mut Proc,
    pg: Option<EmbeddedPostgres>,
    root: &Path,
    keep: bool,
) -> String {
    let mut notes = Vec::new();
    for (i, p) in workers.enumerate() {
        let _ = p.signal(Signal::SIGTERM);
        notes.push(format!(
            "worker {i}: {}",
            p.wait_exit(Duration::from_secs(60)).await
        ));
    }
    let _ = api.signal(Signal::SIGTERM);
    notes.push(format!(
        "api: {}",
        api.wait_exit(Duration::from_secs(60)).await
    ));
    if let Some(pg) = pg {
        pg.stop().await;
    }
    if keep {
        notes.push(format!("state and logs kept in {}", root.display()));
    } else if let Err(e) = fs::remove_dir_all(root) {
        notes.push(format!("could not remove {}: {e}", root.display()));
    }
    notes.join("; ")
}

pub(crate) fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // PostgreSQL's own account must be able to reach its data root below.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", dir.display()))
}

// ---------------------------------------------------------------------------------------------
// Submissions

/// What one submission (one Idempotency-Key) was answered, over all its tries.
#[derive(Debug, Clone, Default)]
pub struct KeyRecord {
    pub key: String,
    /// HTTP requests sent for this key.
    pub tries: u32,
    /// Tries the client cut on purpose (timeout of a few ms).
    pub cut: u32,
    /// Tries that failed without an HTTP answer (connection refused or reset, timeout).
    pub conn_errors: u32,
    /// HTTP statuses of every answered try, in order.
    pub statuses: Vec<u16>,
    /// Job (or batch) ids named by the 2xx answers, in order.
    pub ids: Vec<Uuid>,
    /// Jobs the answer named (a batch's jobs; one for a single job).
    pub jobs: Vec<Uuid>,
    /// The first error that was not worth retrying (a 4xx other than 408/429), if any.
    pub refused: Option<String>,
    /// Seconds from the first try to the first 2xx answer.
    pub answer_secs: Option<f64>,
}

impl KeyRecord {
    pub fn answered(&self) -> bool {
        !self.ids.is_empty()
    }
    /// Whether the first 2xx answer was 201 (created by that very try).
    pub fn first_created(&self) -> bool {
        self.statuses.iter().find(|s| (200..300).contains(*s)) == Some(&201)
    }
    /// Whether two answers named different jobs (the idempotency key failed).
    pub fn conflicting(&self) -> bool {
        self.ids.windows(2).any(|w| w[0] != w[1])
    }
}

/// Summary of the submissions, computed from the key records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitTally {
    pub keys: usize,
    pub tries: u64,
    pub cut: u64,
    pub conn_errors: u64,
    pub status_503: u64,
    pub other_5xx: u64,
    pub answered: usize,
    pub first_201: usize,
    /// Answered 200 first: an earlier try (cut or failed) had created the job.
    pub first_200: usize,
    pub refused: usize,
    pub unanswered: usize,
    pub conflicting: usize,
    pub jobs: usize,
}

pub fn tally(records: &[KeyRecord]) -> SubmitTally {
    let mut t = SubmitTally {
        keys: records.len(),
        ..Default::default()
    };
    for r in records {
        t.tries += u64::from(r.tries);
        t.cut += u64::from(r.cut);
        t.conn_errors += u64::from(r.conn_errors);
        t.status_503 += r.statuses.iter().filter(|s| **s == 503).count() as u64;
        t.other_5xx += r
            .statuses
            .iter()
            .filter(|s| **s >= 500 && **s != 503)
            .count() as u64;
        if r.answered() {
            t.answered += 1;
            if r.first_created() {
                t.first_201 += 1;
            } else {
                t.first_200 += 1;
            }
            t.jobs += r.jobs.len();
        } else if r.refused.is_some() {
            t.refused += 1;
        } else {
            t.unanswered += 1;
        }
        if r.conflicting() {
            t.conflicting += 1;
        }
    }
    t
}

/// Posts `body` to `url` with `key` until a 2xx answer, a refusal (4xx other than 408/429) or
/// the deadline. With `cut`, the first try is abandoned by the client after that long.
async fn submit_keyed(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    key: &str,
    cut: Option<Duration>,
    timeout: Duration,
    batch: bool,
) -> KeyRecord {
    let mut rec = KeyRecord {
        key: key.to_string(),
        ..Default::default()
    };
    let start = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        let first = rec.tries == 0;
        rec.tries += 1;
        let per_try = match (first, cut) {
            (true, Some(c)) => c,
            _ => Duration::from_secs(10),
        };
        let sent = http
            .post(url)
            .header("Idempotency-Key", key)
            .timeout(per_try)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                rec.statuses.push(status);
                if (200..300).contains(&status) {
                    match resp.json::<Value>().await {
                        Ok(v) => {
                            let id = v["id"].as_str().and_then(|s| s.parse::<Uuid>().ok());
                            if let Some(id) = id {
                                rec.ids.push(id);
                                rec.jobs = if batch {
                                    v["job_ids"]
                                        .as_array()
                                        .map(|a| {
                                            a.iter()
                                                .filter_map(|x| x.as_str()?.parse().ok())
                                                .collect()
                                        })
                                        .unwrap_or_default()
                                } else {
                                    vec![id]
                                };
                                rec.answer_secs = Some(start.elapsed().as_secs_f64());
                                return rec;
                            }
                            rec.refused = Some(format!("{status} without an id: {v}"));
                            return rec;
                        }
                        // The body was cut: the answer is lost, try again.
                        Err(_) => rec.conn_errors += 1,
                    }
                } else if !(status >= 500 || status == 408 || status == 429) {
                    let text = resp.text().await.unwrap_or_default();
                    rec.refused = Some(format!(
                        "{status}: {}",
                        text.chars().take(300).collect::<String>()
                    ));
                    return rec;
                }
            }
            Err(e) => {
                if first && cut.is_some() && e.is_timeout() {
                    rec.cut += 1;
                } else {
                    rec.conn_errors += 1;
                }
            }
        }
        if start.elapsed() > timeout {
            return rec;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// Jobs waiting to be claimed (queued or scheduled), or None if the database does not answer.
async fn waiting(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'scheduled')")
        .fetch_one(pool)
        .await
        .ok()
}

struct Submitter {
    http: reqwest::Client,
    jobs_url: String,
    batches_url: String,
    run: String,
    timeout: Duration,
}

impl Submitter {
    async fn batch(&self, n: usize, index: usize, defaults: &Value) -> KeyRecord {
        let body = json!({
            "defaults": defaults,
            "jobs": vec![json!({}); n],
            "labels": {"load-test": "chaos-backlog"},
        });
        let key = format!("chaos-{}-batch-{index}", self.run);
        submit_keyed(
            &self.http,
            &self.batches_url,
            &body,
            &key,
            None,
            self.timeout,
            true,
        )
        .await
    }
}

/// The backlog: `target` jobs waiting, topped up (or filled once) in batches until `stop`.
struct Backlog {
    sub: Arc<Submitter>,
    pool: PgPool,
    defaults: Value,
    target: usize,
    batch: usize,
    once: bool,
    stop: Stop,
    records: Arc<Mutex<Vec<KeyRecord>>>,
}

impl Backlog {
    async fn run(self) {
        let mut index = 0usize;
        let mut first = true;
        while first || !self.stop.is_set() {
            let deficit = if first {
                self.target
            } else {
                match waiting(&self.pool).await {
                    Some(w) => self.target.saturating_sub(usize::try_from(w).unwrap_or(0)),
                    None => 0,
                }
            };
            if deficit >= self.batch.min(self.target).div_ceil(2).max(1) {
                // Up to 4 batches in flight: one at a time cannot keep up with three workers.
                let mut left = deficit;
                let mut inflight = tokio::task::JoinSet::new();
                while left > 0 && (first || !self.stop.is_set()) {
                    if inflight.len() >= 4 {
                        let _ = inflight.join_next().await;
                        continue;
                    }
                    let n = left.min(self.batch);
                    let (sub, defaults, records) = (
                        self.sub.clone(),
                        self.defaults.clone(),
                        self.records.clone(),
                    );
                    let i = index;
                    inflight.spawn(async move {
                        let rec = sub.batch(n, i, &defaults).await;
                        lock(&records).push(rec);
                    });
                    index += 1;
                    left -= n;
                }
                while inflight.join_next().await.is_some() {}
            }
            first = false;
            if self.once {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A stop flag (set once, read anywhere).
#[derive(Clone, Default)]
struct Stop(Arc<std::sync::atomic::AtomicBool>);

impl Stop {
    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Single submissions at `per_sec`, each retried with its key until answered, until `stop`.
async fn trickle_loop(
    sub: Arc<Submitter>,
    spec: Value,
    per_sec: u32,
    cut_every: u32,
    stop: Stop,
    records: Arc<Mutex<Vec<KeyRecord>>>,
) {
    if per_sec == 0 {
        return;
    }
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_sec)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i: u32 = 0;
    while !stop.is_set() {
        tick.tick().await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let cut = (cut_every > 0 && i.is_multiple_of(cut_every))
            .then(|| Duration::from_millis(u64::from(1 + (i / cut_every.max(1)) % 8)));
        let key = format!("chaos-{}-job-{i}", sub.run);
        let sub = sub.clone();
        let spec = spec.clone();
        let records = records.clone();
        tasks.spawn(async move {
            let rec = submit_keyed(
                &sub.http,
                &sub.jobs_url,
                &spec,
                &key,
                cut,
                sub.timeout,
                false,
            )
            .await;
            lock(&records).push(rec);
            drop(permit);
        });
        i += 1;
    }
    while tasks.join_next().await.is_some() {}
}

// ---------------------------------------------------------------------------------------------
// The fault schedule

/// A worker killed with kill -9 (its attempts then wait for the rescuer).
#[derive(Debug, Clone)]
pub struct Kill {
    pub at: DateTime<Utc>,
    pub worker: Uuid,
    pub fault: usize,
}

/// What happened at one step of the schedule.
#[derive(Debug, Clone)]
struct Event {
    fault: Fault,
    at: DateTime<Utc>,
    offset_s: f64,
    /// Jobs waiting when the fault struck (None: the database did not answer).
    waiting: Option<i64>,
    what: String,
    /// PostgreSQL back (pg faults).
    pg_up: Option<DateTime<Utc>>,
}

/// The cancel-vs-kill race of a `cancel-kill` fault.
#[derive(Debug, Clone)]
struct CancelRace {
    job: Uuid,
    worker: Uuid,
    killed_at: DateTime<Utc>,
    cancel_answered_at: Option<DateTime<Utc>>,
    cancel_answer: String,
}

/// A SIGTERM: when, and the worker it stopped.
#[derive(Debug, Clone)]
struct Term {
    at: DateTime<Utc>,
    worker: Uuid,
}

async fn wait_running(pool: &PgPool, job: Uuid, timeout: Duration) -> Result<Uuid> {
    let start = Instant::now();
    loop {
        let row: Option<(String, Option<Uuid>)> =
            sqlx::query_as("SELECT state::text, worker_id FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_optional(pool)
                .await
                .ok()
                .flatten();
        if let Some((state, Some(worker))) = &row
            && state == "running"
        {
            return Ok(*worker);
        }
        if start.elapsed() > timeout {
            bail!("job {job} was not running within {timeout:?} (last seen: {row:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sleeps `d`, starting again any worker that exited on its own meanwhile.
async fn sleep_watching(stack: &mut Stack, d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        tokio::time::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250)),
        )
        .await;
        stack.revive().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The report

/// Rescue delays, in seconds, and whether the slowest is within the target.
#[derive(Debug, Clone, PartialEq)]
pub struct RescueSummary {
    pub lost: usize,
    pub rerun: usize,
    pub not_rerun: usize,
    pub delays: Option<Dist>,
    pub limit_s: f64,
}

impl RescueSummary {
    pub fn of(delays_s: &[Option<f64>], lease_secs: u64) -> Self {
        let rerun: Vec<f64> = delays_s.iter().flatten().copied().collect();
        RescueSummary {
            lost: delays_s.len(),
            rerun: rerun.len(),
            not_rerun: delays_s.len() - rerun.len(),
            delays: Dist::of(&rerun),
            limit_s: lease_secs as f64 + RESCUE_MARGIN_SECS,
        }
    }

    /// PASS when every rerun started within the limit; undecided with no samples.
    pub fn pass(&self) -> Option<bool> {
        self.delays.map(|d| d.max <= self.limit_s)
    }
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a)
        .num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1e6)
}

/// Whether an attempt of a killed worker was lost to the kill: taken back by the rescuer after
/// the kill (not, say, rescued earlier while the database was away, or requeued at a SIGTERM).
pub fn lost_to_kill(rescued: bool, recorded_at: DateTime<Utc>, killed_at: DateTime<Utc>) -> bool {
    rescued && recorded_at >= killed_at
}

/// One attempt lost with its worker, and what followed.
#[derive(Debug, Clone)]
struct LostAttempt {
    job: Uuid,
    attempt: i32,
    worker: Option<Uuid>,
    detail: String,
    /// When the rescue (or requeue) wrote the attempt's record.
    recorded_at: DateTime<Utc>,
    next_started_at: Option<DateTime<Utc>>,
    job_state: String,
}

async fn lost_attempts(pool: &PgPool) -> Result<Vec<LostAttempt>> {
    let rows = sqlx::query(
        "SELECT a.job_id, a.attempt, a.worker_id, coalesce(a.detail, '') AS detail, \
                a.finished_at, \
                coalesce(n.started_at, CASE WHEN j.attempt = a.attempt + 1 THEN j.started_at END) \
                    AS next_started_at, \
                j.state::text AS job_state \
         FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
         LEFT JOIN job_attempts n ON n.job_id = a.job_id AND n.attempt = a.attempt + 1 \
         WHERE a.reason = 'worker_lost' \
            OR (a.reason = 'cancelled' AND a.detail LIKE '%stopped renewing its lease%')",
    )
    .fetch_all(pool)
    .await
    .context("reading the lost attempts")?;
    rows.iter()
        .map(|r| {
            Ok(LostAttempt {
                job: r.try_get("job_id")?,
                attempt: r.try_get("attempt")?,
                worker: r.try_get("worker_id")?,
                detail: r.try_get("detail")?,
                recorded_at: r.try_get("finished_at")?,
                next_started_at: r.try_get("next_started_at")?,
                job_state: r.try_get("job_state")?,
            })
        })
        .collect()
}

fn delays_line(label: &str, s: &RescueSummary) -> Vec<String> {
    let mut out = vec![format!(
        "  {label}: {} attempts lost, {} rerun, {} not rerun (cancelled or ended)",
        s.lost, s.rerun, s.not_rerun
    )];
    out.push(dist_row(
        "    kill → next attempt started",
        s.delays.as_ref(),
    ));
    out
}

fn pct_row(label: &str, v: &[f64]) -> String {
    dist_row(label, Dist::of(v).as_ref())
}

pub async fn run(nekton: &Path, args: &ChaosArgs, keep: bool) -> Result<(Section, String, String)> {
    let faults = parse_schedule(&args.faults)?;
    if args.workers == 0 || args.worker_slots == 0 || args.lease_secs == 0 {
        bail!("--workers, --worker-slots and --lease-secs must be at least 1");
    }
    if args.backlog_batch == 0 || args.backlog_batch > 10_000 {
        bail!("--backlog-batch must be 1 to 10,000 (the API's batch limit)");
    }
    if !nekton.is_file() {
        bail!(
            "no nekton binary at {}: build it (`cargo build --release -p nekton -p load-tests`) \
             or pass --nekton PATH",
            nekton.display()
        );
    }
    let gap = Duration::from_secs(args.fault_gap_secs);
    let restart_after = Duration::from_millis(args.restart_after_ms);
    let estimate = schedule_estimate(&faults, gap, restart_after);
    eprintln!(
        "load-tests: chaos: {} faults ({}), ≈ {} s of faults, then up to {} s of drain",
        faults.len(),
        faults
            .iter()
            .map(Fault::name)
            .collect::<Vec<_>>()
            .join(", "),
        estimate.as_secs(),
        args.drain_timeout_secs
    );

    let tag = Uuid::new_v4().simple().to_string();
    let root = PathBuf::from(format!(
        "/tmp/nekton-chaos-{}-{}",
        std::process::id(),
        &tag[..8]
    ));
    make_dir(&root)?;
    let mut stack = match Stack::start(nekton, args, &root).await {
        Ok(s) => s,
        Err(e) => {
            if !keep {
                let _ = fs::remove_dir_all(&root);
            }
            return Err(e);
        }
    };
    let server_line = format!(
        "started by the benchmark ({}): 1 × `nekton api` on {} + {} × `nekton worker --slots {} \
         --lease-secs {} --shutdown-grace-secs {} --no-bridge-network`, one private PostgreSQL",
        if nekton.components().any(|c| c.as_os_str() == "release") {
            "release build"
        } else if nekton.components().any(|c| c.as_os_str() == "debug") {
            "debug build"
        } else {
            "build profile unknown"
        },
        stack.api_url,
        args.workers,
        args.worker_slots,
        args.lease_secs,
        args.shutdown_grace_secs
    );
    let result = drive(&mut stack, args, &faults, &tag[..8]).await;
    let db_line = match &result {
        Ok((_, d)) => d.clone(),
        Err(_) => "private PostgreSQL".into(),
    };
    let failed = result.is_err();
    if failed {
        eprintln!(
            "load-tests: chaos: the API's log ends with:\n{}",
            stack.api.log_tail(20)
        );
    }
    let note = stack.stop(keep || failed).await;
    let (mut section, _) = result?;
    section.lines.push(String::new());
    section.lines.push(format!("  ({note})"));
    Ok((section, server_line, db_line))
}

async fn drive(
    stack: &mut Stack,
    args: &ChaosArgs,
    faults: &[Fault],
    run_tag: &str,
) -> Result<(Section, String)> {
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(
            stack
                .pg
                .as_ref()
                .context("PostgreSQL is not running")?
                .connect_options("nekton")
                .application_name("nekton-load-tests"),
        )
        .await
        .context("connecting to the private PostgreSQL")?;
    let db_line = format!(
        "private (EmbeddedPostgres, Unix socket only, restarted by the faults), {}",
        crate::dbstats::describe(&pool)
            .await
            .unwrap_or_else(|e| format!("{e:#}"))
    );
    let client = Client::with_token(&stack.api_url, stack.token.as_deref())?;
    let hello = client
        .push_module(guests::hello()?)
        .await
        .context("uploading the hello module")?;
    // Runs ≈ 2 s (4 writes, 500 ms apart): long enough to be cancelled while its worker dies.
    let sleeper = client
        .push_module(guests::log_writer(4, 64, 500)?)
        .await
        .context("uploading the sleeper module")?;
    let mut spec = module_spec(&hello.digest, "chaos-trickle", 30_000);
    spec.max_attempts = Some(args.max_attempts);
    let trickle_spec = serde_json::to_value(&spec)?;
    let defaults = json!({
        "module": hello.digest,
        "limits": {"wall_time_ms": 30_000},
        "max_attempts": args.max_attempts,
    });
    let sub = Arc::new(Submitter {
        http: client.http().clone(),
        jobs_url: client.url("v1/jobs")?.to_string(),
        batches_url: client.url("v1/batches")?.to_string(),
        run: run_tag.to_string(),
        timeout: Duration::from_secs(args.answer_timeout_secs),
    });

    let cpu_before = procstat::snapshot(None);
    let t0 = Instant::now();
    let started = Utc::now();
    let stop = Stop::default();
    let batch_records = Arc::new(Mutex::new(Vec::new()));
    let trickle_records = Arc::new(Mutex::new(Vec::new()));
    let backlog = (args.backlog_jobs > 0).then(|| {
        tokio::spawn(
            Backlog {
                sub: sub.clone(),
                pool: pool.clone(),
                defaults: defaults.clone(),
                target: args.backlog_jobs,
                batch: args.backlog_batch,
                once: args.backlog_once,
                stop: stop.clone(),
                records: batch_records.clone(),
            }
            .run(),
        )
    });
    // Wait for the first fill before the trickle and the first fault.
    let fill_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let submitted: usize = lock(&batch_records).iter().map(|r| r.jobs.len()).sum();
        if submitted >= args.backlog_jobs || Instant::now() > fill_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fill_secs = t0.elapsed().as_secs_f64();
    let trickle = tokio::spawn(trickle_loop(
        sub.clone(),
        trickle_spec,
        args.trickle_per_sec,
        args.cut_every,
        stop.clone(),
        trickle_records.clone(),
    ));

    let mut events: Vec<Event> = Vec::new();
    let mut kills: Vec<Kill> = Vec::new();
    let mut terms: Vec<Term> = Vec::new();
    let mut races: Vec<CancelRace> = Vec::new();
    let mut cancel_jobs: Vec<Uuid> = Vec::new();
    let mut next_worker = 0usize;
    let restart_after = Duration::from_millis(args.restart_after_ms);
    let mut pick = |n: usize| {
        let i = next_worker % n;
        next_worker += 1;
        i
    };

    for (fi, fault) in faults.iter().enumerate() {
        sleep_watching(stack, Duration::from_secs(args.fault_gap_secs)).await?;
        let waiting_now = waiting(&pool).await;
        let at = Utc::now();
        let offset_s = t0.elapsed().as_secs_f64();
        eprintln!(
            "load-tests: chaos: t+{offset_s:.1}s fault {} of {}: {} ({} jobs waiting)",
            fi + 1,
            faults.len(),
            fault.name(),
            waiting_now.map_or("?".into(), |w| w.to_string())
        );
        let mut pg_up = None;
        let what = match fault {
            Fault::Kill => {
                let i = pick(stack.workers.len());
                let (kat, id) = stack.kill_worker(i).await?;
                kills.push(Kill {
                    at: kat,
                    worker: id,
                    fault: fi,
                });
                sleep_watching(stack, restart_after).await?;
                stack.start_worker(i).await?;
                format!("kill -9 worker {i} ({id}); restarted after {restart_after:?}")
            }
            Fault::KillAll => {
                let mut ids = Vec::new();
                let pids = stack.worker_pids();
                for i in 0..stack.workers.len() {
                    let (kat, id) = stack.kill_worker(i).await?;
                    kills.push(Kill {
                        at: kat,
                        worker: id,
                        fault: fi,
                    });
                    ids.push(id);
                }
                tokio::time::sleep(restart_after).await;
                for i in 0..stack.workers.len() {
                    stack.start_worker(i).await?;
                }
                format!(
                    "kill -9 of all {} workers (pids {pids:?}); restarted after {restart_after:?}",
                    ids.len()
                )
            }
            Fault::Term => {
                let i = pick(stack.workers.len());
                let (tat, took, status, id) = stack.term_worker(i).await?;
                terms.push(Term {
                    at: tat,
                    worker: id,
                });
                sleep_watching(stack, restart_after).await?;
                stack.start_worker(i).await?;
                format!(
                    "SIGTERM worker {i} ({id}): exited after {:.2} s ({status}); restarted",
                    took.as_secs_f64()
                )
            }
            Fault::PgFast | Fault::PgImmediate => {
                let immediate = *fault == Fault::PgImmediate;
                let down = stack.pg_down(immediate).await?;
                let up = stack.pg_up().await?;
                pg_up = Some(up);
                format!(
                    "PostgreSQL {} shutdown, started again: down {:.2} s",
                    if immediate { "immediate" } else { "fast" },
                    secs_between(down, up)
                )
            }
            Fault::PgOutage(d) => {
                let down = stack.pg_down(false).await?;
                sleep_watching(stack, *d).await?;
                let up = stack.pg_up().await?;
                pg_up = Some(up);
                format!(
                    "PostgreSQL stopped (fast), down {:.2} s",
                    secs_between(down, up)
                )
            }
            Fault::CancelKill => {
                let mut s = module_spec(&sleeper.digest, "chaos-cancel", 30_000);
                s.max_attempts = Some(args.max_attempts);
                s.priority = Some(100);
                let key = format!("chaos-{run_tag}-cancel-{fi}");
                let rec = submit_keyed(
                    &sub.http,
                    &sub.jobs_url,
                    &serde_json::to_value(&s)?,
                    &key,
                    None,
                    sub.timeout,
                    false,
                )
                .await;
                let job = *rec
                    .ids
                    .first()
                    .with_context(|| format!("submitting the cancel-race job: {rec:?}"))?;
                lock(&trickle_records).push(rec);
                cancel_jobs.push(job);
                let worker = wait_running(&pool, job, Duration::from_secs(60)).await?;
                // Let the guest run a little: the race is with a job that is executing.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let Some(&(i, _)) = stack.ids.get(&worker) else {
                    bail!("job {job} runs on worker {worker}, which this benchmark did not start");
                };
                if stack.workers[i].id != Some(worker) || stack.workers[i].proc.is_none() {
                    bail!("job {job} runs on worker {worker}, which is no longer running");
                }
                let cancel = {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let start = Instant::now();
                        loop {
                            match client.cancel(job).await {
                                Ok(j) => return (Some(Utc::now()), format!("{:?}", j.state)),
                                Err(e) if start.elapsed() > Duration::from_secs(30) => {
                                    return (None, format!("{e:#}"));
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                        }
                    })
                };
                let (kat, id) = stack.kill_worker(i).await?;
                kills.push(Kill {
                    at: kat,
                    worker: id,
                    fault: fi,
                });
                let (answered_at, answer) = cancel.await.unwrap_or((None, "panicked".into()));
                races.push(CancelRace {
                    job,
                    worker: id,
                    killed_at: kat,
                    cancel_answered_at: answered_at,
                    cancel_answer: answer.clone(),
                });
                sleep_watching(stack, restart_after).await?;
                stack.start_worker(i).await?;
                format!(
                    "job {job} running on worker {i} ({id}): cancel sent as its worker was \
                     killed -9 (cancel answered: {answer}); worker restarted"
                )
            }
        };
        events.push(Event {
            fault: *fault,
            at,
            offset_s,
            waiting: waiting_now,
            what,
            pg_up,
        });
    }
    sleep_watching(stack, Duration::from_secs(args.fault_gap_secs)).await?;
    let faults_secs = t0.elapsed().as_secs_f64();

    // Drain: no new work; every submission answered; every job finished.
    stop.set();
    if let Some(b) = backlog {
        let _ = b.await;
    }
    let _ = trickle.await;
    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs(args.drain_timeout_secs);
    let mut unfinished: i64;
    loop {
        stack.revive().await?;
        unfinished = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'scheduled', 'running')",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
        if unfinished == 0 || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let cpu = CpuUse::between(&cpu_before, &procstat::snapshot(None));
    eprintln!(
        "load-tests: chaos: drained ({unfinished} unfinished) in {drain_secs:.1} s; checking …"
    );

    let (mut fenced, mut lease_lost) = (0, 0);
    for entry in fs::read_dir(&stack.root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("worker-") && name.ends_with(".log") {
            let (f, l) = scan_worker_log(&fs::read_to_string(entry.path()).unwrap_or_default());
            fenced += f;
            lease_lost += l;
        }
    }
    let batch_records = std::mem::take(&mut *lock(&batch_records));
    let trickle_records = std::mem::take(&mut *lock(&trickle_records));
    let report = Report::gather(
        &pool,
        &client,
        args,
        &hello.digest,
        &batch_records,
        &trickle_records,
        &cancel_jobs,
        &kills,
        &terms,
        &races,
        &events,
    )
    .await?;
    pool.close().await;

    let mut lines = vec![
        format!(
            "  stack: 1 api + {} workers × {} slots, lease {} s (target rescue ≤ {} s), \
             PostgreSQL durable (fsync, synchronous_commit on)",
            args.workers,
            args.worker_slots,
            args.lease_secs,
            args.lease_secs as f64 + RESCUE_MARGIN_SECS
        ),
        format!(
            "  load: backlog {} waiting hello jobs ({}; first fill {:.1} s), trickle {}/s single \
             submissions with Idempotency-Key (every {}th first try cut by the client)",
            args.backlog_jobs,
            if args.backlog_once {
                "filled once"
            } else {
                "topped up while the faults ran"
            },
            fill_secs,
            args.trickle_per_sec,
            args.cut_every
        ),
        format!(
            "  timeline: started {}, faults over {:.1} s, drain {:.1} s ({} unfinished at the end)",
            started.format("%H:%M:%S UTC"),
            faults_secs,
            drain_secs,
            unfinished
        ),
    ];
    for e in &events {
        lines.push(format!(
            "    t+{:>6.1}s {:<14} waiting {:>6}  {}",
            e.offset_s,
            e.fault.name(),
            e.waiting.map_or("?".into(), |w| w.to_string()),
            e.what
        ));
    }
    for u in &stack.unexpected_exits {
        lines.push(format!("    unexpected: {u}"));
    }
    lines.extend(report.lines());
    lines.push(format!(
        "  worker logs: {fenced} completions refused by the fence (attempts taken over while \
         their worker lived); {lease_lost} \"lease lost\" warnings"
    ));
    lines.extend(cpu.lines(None));
    let verdicts = report.verdicts();
    let json = json!({
        "args": {
            "backlog_jobs": args.backlog_jobs, "backlog_once": args.backlog_once,
            "backlog_batch": args.backlog_batch, "trickle_per_sec": args.trickle_per_sec,
            "cut_every": args.cut_every, "workers": args.workers, "worker_slots": args.worker_slots,
            "lease_secs": args.lease_secs, "shutdown_grace_secs": args.shutdown_grace_secs,
            "faults": args.faults, "fault_gap_secs": args.fault_gap_secs,
            "restart_after_ms": args.restart_after_ms, "max_attempts": args.max_attempts,
        },
        "fill_secs": fill_secs,
        "faults_secs": faults_secs,
        "drain_secs": drain_secs,
        "unfinished_at_end": unfinished,
        "events": events.iter().map(|e| json!({
            "fault": e.fault.name(), "at": e.at.to_rfc3339(), "offset_s": e.offset_s,
            "waiting": e.waiting, "what": e.what, "pg_up": e.pg_up.map(|t| t.to_rfc3339()),
        })).collect::<Vec<_>>(),
        "unexpected_worker_exits": stack.unexpected_exits,
        "worker_log_fenced_completions": fenced,
        "worker_log_lease_lost_warnings": lease_lost,
        "report": report.json(),
        "cpu": cpu.json(None),
    });
    Ok((
        Section {
            title: "chaos: faults under load (delivery guarantees)".into(),
            lines,
            verdicts,
            json,
        },
        db_line,
    ))
}

/// Everything the report says, read back from the database and the API.
struct Report {
    batches: SubmitTally,
    singles: SubmitTally,
    refused_examples: Vec<String>,
    accepted_jobs: usize,
    lost: Vec<Uuid>,
    states: BTreeMap<String, i64>,
    attempts_hist: BTreeMap<i32, i64>,
    unexpected_states: Vec<String>,
    two_results: Vec<String>,
    state_mismatch: Vec<String>,
    output_bad_db: Vec<String>,
    output_checked_api: usize,
    output_bad_api: Vec<String>,
    earlier_attempt_chunks: i64,
    internal_errors: i64,
    stuck: Vec<String>,
    kill_rescue: RescueSummary,
    kill_to_rescued: Vec<f64>,
    rescued_to_rerun: Vec<f64>,
    kill_by_fault: Vec<(String, RescueSummary)>,
    slowest: Vec<String>,
    term_requeued: RescueSummary,
    other_lost: Vec<(String, usize, Vec<f64>)>,
    unattributed_lost: usize,
    races: Vec<String>,
    races_ok: Option<bool>,
    lease_secs: u64,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    async fn gather(
        pool: &PgPool,
        client: &Client,
        args: &ChaosArgs,
        hello_digest: &str,
        batch_records: &[KeyRecord],
        trickle_records: &[KeyRecord],
        cancel_jobs: &[Uuid],
        kills: &[Kill],
        terms: &[Term],
        races: &[CancelRace],
        events: &[Event],
    ) -> Result<Report> {
        let batches = tally(batch_records);
        let singles = tally(trickle_records);
        let refused_examples: Vec<String> = batch_records
            .iter()
            .chain(trickle_records)
            .filter_map(|r| r.refused.as_ref().map(|x| format!("{}: {x}", r.key)))
            .take(3)
            .collect();

        // Lost: accepted (answered 2xx) but not in the jobs table.
        let accepted: Vec<Uuid> = batch_records
            .iter()
            .chain(trickle_records)
            .flat_map(|r| r.jobs.iter().copied())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut found: HashSet<Uuid> = HashSet::new();
        for chunk in accepted.chunks(20_000) {
            let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
                .bind(chunk)
                .fetch_all(pool)
                .await
                .context("looking up the accepted jobs")?;
            found.extend(ids);
        }
        let lost: Vec<Uuid> = accepted
            .iter()
            .filter(|id| !found.contains(id))
            .copied()
            .collect();

        let states: BTreeMap<String, i64> =
            sqlx::query_as::<_, (String, i64)>("SELECT state::text, count(*) FROM jobs GROUP BY 1")
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect();
        let attempts_hist: BTreeMap<i32, i64> =
            sqlx::query_as::<_, (i32, i64)>("SELECT attempt, count(*) FROM jobs GROUP BY 1")
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect();
        // Every job should succeed, except the cancel-race jobs, which should be cancelled.
        let unexpected_states: Vec<String> = sqlx::query_as::<_, (Uuid, String)>(
            "SELECT id, state::text FROM jobs \
             WHERE (id = ANY($1) AND state <> 'cancelled') \
                OR (NOT id = ANY($1) AND state <> 'succeeded' \
                    AND state NOT IN ('queued', 'scheduled', 'running')) \
             ORDER BY id LIMIT 20",
        )
        .bind(cancel_jobs)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, s)| format!("{id} {s}"))
        .collect();
        let unexpected_count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs \
             WHERE (id = ANY($1) AND state <> 'cancelled') \
                OR (NOT id = ANY($1) AND state <> 'succeeded' \
                    AND state NOT IN ('queued', 'scheduled', 'running'))",
        )
        .bind(cancel_jobs)
        .fetch_one(pool)
        .await?;
        let mut unexpected_states = unexpected_states;
        if unexpected_count as usize > unexpected_states.len() {
            unexpected_states.push(format!("… {} in all", unexpected_count));
        }

        // Recorded twice (1): more than one result among a job's attempts. Lost attempts
        // (worker_lost) and infrastructure failures (internal_error, retried) are not results.
        let two_results: Vec<String> = sqlx::query_as::<_, (Uuid, String)>(
            "SELECT job_id, string_agg(attempt || ':' || reason, ', ' ORDER BY attempt) \
             FROM job_attempts WHERE reason NOT IN ('worker_lost', 'internal_error') \
             GROUP BY job_id HAVING count(*) > 1 LIMIT 1000",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, s)| format!("{id}: {s}"))
        .collect();
        // (2): a finished job whose own attempt has no matching result.
        let state_mismatch: Vec<String> = sqlx::query_as::<_, (Uuid, String, i32, Option<String>)>(
            "SELECT j.id, j.state::text, j.attempt, a.reason FROM jobs j \
             LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt \
             WHERE j.state IN ('succeeded', 'failed', 'cancelled', 'error') \
               AND (a.job_id IS NULL \
                    OR (j.state = 'succeeded' AND (a.reason <> 'exited' OR a.exit_code <> 0)) \
                    OR (j.state = 'cancelled' AND a.reason <> 'cancelled')) \
             LIMIT 1000",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, s, a, r)| format!("{id} {s} attempt {a}: {}", r.unwrap_or("no record".into())))
        .collect();
        // (3): output stored twice — a succeeded hello job's stored output (its attempt's chunks,
        // in order) must be the hello line exactly once.
        let output_bad_db: Vec<String> = sqlx::query_as::<_, (Uuid, i64, Option<Vec<u8>>)>(
            "SELECT j.id, o.n, o.out FROM jobs j JOIN job_specs s ON s.job_id = j.id \
             CROSS JOIN LATERAL (SELECT count(*) AS n, string_agg(c.data, ''::bytea ORDER BY c.seq) AS out \
                 FROM log_chunks c WHERE c.job_id = j.id AND c.attempt = j.attempt) o \
             WHERE j.state = 'succeeded' AND s.program = $1 AND o.out IS DISTINCT FROM $2 \
             LIMIT 1000",
        )
        .bind(hello_digest)
        .bind(guests::HELLO_OUTPUT)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, n, out)| {
            format!(
                "{id}: {n} chunks {:?}",
                String::from_utf8_lossy(&out.unwrap_or_default())
            )
        })
        .collect();
        let earlier_attempt_chunks: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM log_chunks c JOIN jobs j ON j.id = c.job_id \
             WHERE c.attempt < j.attempt",
        )
        .fetch_one(pool)
        .await?;
        let internal_errors: i64 =
            sqlx::query_scalar("SELECT count(*) FROM job_attempts WHERE reason = 'internal_error'")
                .fetch_one(pool)
                .await?;
        let stuck: Vec<String> = sqlx::query_as::<_, (Uuid, String, i32)>(
            "SELECT id, state::text, attempt FROM jobs \
             WHERE state IN ('queued', 'scheduled', 'running') ORDER BY id LIMIT 20",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, s, a)| format!("{id} {s} attempt {a}"))
        .collect();
        let stuck_count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'scheduled', 'running')",
        )
        .fetch_one(pool)
        .await?;
        let mut stuck = stuck;
        if stuck_count as usize > stuck.len() {
            stuck.push(format!("… {stuck_count} in all"));
        }

        // Through the API: every job that ran more than once (the interesting ones) and every
        // single submission, up to 5,000: the stored output must be the hello line once.
        let mut api_ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT j.id FROM jobs j JOIN job_specs s ON s.job_id = j.id \
             WHERE j.state = 'succeeded' AND s.program = $1 AND j.attempt > 1 LIMIT 5000",
        )
        .bind(hello_digest)
        .fetch_all(pool)
        .await?;
        let singles_ok: HashSet<Uuid> = trickle_records
            .iter()
            .flat_map(|r| r.jobs.iter().copied())
            .filter(|id| !cancel_jobs.contains(id))
            .collect();
        let have: HashSet<Uuid> = api_ids.iter().copied().collect();
        api_ids.extend(singles_ok.into_iter().filter(|id| !have.contains(id)));
        api_ids.truncate(5000);
        let mut output_bad_api = Vec::new();
        {
            use futures::StreamExt as _;
            let mut reads = futures::stream::iter(api_ids.iter().copied())
                .map(|id| {
                    let client = client.clone();
                    async move { (id, client.plain_log_bytes(id, None).await) }
                })
                .buffer_unordered(16);
            while let Some((id, r)) = reads.next().await {
                match r {
                    Ok(b) if b == guests::HELLO_OUTPUT => {}
                    Ok(b) => {
                        output_bad_api.push(format!("{id}: {:?}", String::from_utf8_lossy(&b)))
                    }
                    Err(e) => output_bad_api.push(format!("{id}: {e:#}")),
                }
            }
        }

        // Rescue delays.
        let lost_attempts = lost_attempts(pool).await?;
        let kill_of: HashMap<Uuid, &Kill> = kills.iter().map(|k| (k.worker, k)).collect();
        let term_of: HashMap<Uuid, &Term> = terms.iter().map(|t| (t.worker, t)).collect();
        let mut kill_delays = Vec::new();
        let mut kill_to_rescued = Vec::new();
        let mut rescued_to_rerun = Vec::new();
        let mut by_fault: BTreeMap<usize, Vec<Option<f64>>> = BTreeMap::new();
        let mut slowest: Vec<(f64, String)> = Vec::new();
        let mut term_delays = Vec::new();
        let pg_ups: Vec<(usize, DateTime<Utc>)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.pg_up.map(|u| (i, u)))
            .collect();
        let mut other: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        let mut unattributed = 0usize;
        for a in &lost_attempts {
            let rescued = a.detail.contains("stopped renewing");
            let worker = a.worker.unwrap_or_default();
            // A worker's id names one process, but that process may have lost attempts to a
            // database outage before it was killed: only a rescue after the kill is the kill's.
            let kill = kill_of
                .get(&worker)
                .filter(|k| lost_to_kill(rescued, a.recorded_at, k.at));
            if let Some(k) = kill {
                let d = a.next_started_at.map(|n| secs_between(k.at, n));
                kill_delays.push(d);
                by_fault.entry(k.fault).or_default().push(d);
                kill_to_rescued.push(secs_between(k.at, a.recorded_at));
                if let Some(n) = a.next_started_at {
                    rescued_to_rerun.push(secs_between(a.recorded_at, n));
                }
                if let Some(d) = d {
                    slowest.push((
                        d,
                        format!(
                            "job {} attempt {}: killed {}, rescued +{:.2} s, rerun +{:.2} s ({})",
                            a.job,
                            a.attempt,
                            k.at.format("%H:%M:%S%.3f"),
                            secs_between(k.at, a.recorded_at),
                            d,
                            a.job_state
                        ),
                    ));
                }
            } else if let Some(t) = term_of.get(&worker) {
                term_delays.push(a.next_started_at.map(|n| secs_between(t.at, n)));
            } else if rescued {
                // A live worker's lease expired: the database was away too long. Attributed to
                // the last PostgreSQL fault that came back before the rescue.
                match pg_ups.iter().rev().find(|(_, up)| *up <= a.recorded_at) {
                    Some((i, up)) => {
                        if let Some(n) = a.next_started_at {
                            other.entry(*i).or_default().push(secs_between(*up, n));
                        } else {
                            other.entry(*i).or_default();
                        }
                    }
                    None => unattributed += 1,
                }
            } else {
                unattributed += 1;
            }
        }
        slowest.sort_by(|x, y| y.0.total_cmp(&x.0));
        let kill_rescue = RescueSummary::of(&kill_delays, args.lease_secs);
        let kill_by_fault = by_fault
            .into_iter()
            .map(|(fi, d)| {
                (
                    format!("fault {} ({})", fi + 1, events[fi].fault.name()),
                    RescueSummary::of(&d, args.lease_secs),
                )
            })
            .collect();
        let other_lost = other
            .into_iter()
            .map(|(i, d)| {
                (
                    format!("fault {} ({})", i + 1, events[i].fault.name()),
                    d.len(),
                    d,
                )
            })
            .collect();

        // The cancel races: cancelled, and no attempt started after the cancel was answered.
        let mut race_lines = Vec::new();
        let mut races_ok = None;
        for r in races {
            let (state, attempts): (String, String) = sqlx::query_as(
                "SELECT j.state::text, coalesce((SELECT string_agg(a.attempt || ':' || a.reason \
                    || coalesce(' started ' || to_char(a.started_at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS'), ''), \
                    ', ' ORDER BY a.attempt) FROM job_attempts a WHERE a.job_id = j.id), '') \
                 FROM jobs j WHERE j.id = $1",
            )
            .bind(r.job)
            .fetch_one(pool)
            .await?;
            let rerun_after_cancel: i64 =
                match r.cancel_answered_at {
                    Some(t) => sqlx::query_scalar(
                        "SELECT count(*) FROM job_attempts WHERE job_id = $1 AND started_at > $2",
                    )
                    .bind(r.job)
                    .bind(t)
                    .fetch_one(pool)
                    .await?,
                    None => -1,
                };
            let ok = state == "cancelled" && rerun_after_cancel == 0;
            races_ok = Some(races_ok.unwrap_or(true) && ok);
            race_lines.push(format!(
                "    job {} on worker {}: killed {}, cancel answered {} ({}); final state {state}; \
                 attempts [{attempts}]; started after the cancel: {}",
                r.job,
                r.worker,
                r.killed_at.format("%H:%M:%S%.3f"),
                r.cancel_answered_at
                    .map_or("never".into(), |t| t.format("%H:%M:%S%.3f").to_string()),
                r.cancel_answer,
                if rerun_after_cancel < 0 {
                    "?".to_string()
                } else {
                    rerun_after_cancel.to_string()
                }
            ));
        }

        Ok(Report {
            batches,
            singles,
            refused_examples,
            accepted_jobs: accepted.len(),
            lost,
            states,
            attempts_hist,
            unexpected_states,
            two_results,
            state_mismatch,
            output_bad_db,
            output_checked_api: api_ids.len(),
            output_bad_api,
            earlier_attempt_chunks,
            internal_errors,
            stuck,
            kill_rescue,
            kill_to_rescued,
            rescued_to_rerun,
            kill_by_fault,
            slowest: slowest.into_iter().take(5).map(|(_, s)| s).collect(),
            term_requeued: RescueSummary::of(&term_delays, args.lease_secs),
            other_lost,
            unattributed_lost: unattributed,
            races: race_lines,
            races_ok,
            lease_secs: args.lease_secs,
        })
    }

    fn recorded_twice(&self) -> usize {
        self.two_results.len()
            + self.state_mismatch.len()
            + self.output_bad_db.len()
            + self.output_bad_api.len()
    }

    fn stuck_count(&self) -> usize {
        self.states
            .iter()
            .filter(|(s, _)| matches!(s.as_str(), "queued" | "scheduled" | "running"))
            .map(|(_, n)| *n as usize)
            .sum()
    }

    fn lines(&self) -> Vec<String> {
        let s = &self.singles;
        let b = &self.batches;
        let mut out = vec![
            String::new(),
            "  submitted".into(),
            format!(
                "    batches: {} keys in {} tries ({} × 503, {} other 5xx, {} without an answer); \
                 answered {} ({} jobs), unanswered {}, refused {}",
                b.keys,
                b.tries,
                b.status_503,
                b.other_5xx,
                b.conn_errors,
                b.answered,
                b.jobs,
                b.unanswered,
                b.refused
            ),
            format!(
                "    single jobs: {} keys in {} tries ({} cut by the client, {} × 503, {} other \
                 5xx, {} other failures without an answer)",
                s.keys, s.tries, s.cut, s.status_503, s.other_5xx, s.conn_errors
            ),
            format!(
                "    accepted: {} keys answered (201 at the first answer: {}; 200 at the first \
                 answer, i.e. an earlier cut or failed try had created the job: {}); unanswered \
                 {}; refused {}",
                s.answered, s.first_201, s.first_200, s.unanswered, s.refused
            ),
            format!(
                "    one key, two jobs (idempotency broken): {}",
                s.conflicting + b.conflicting
            ),
        ];
        for r in &self.refused_examples {
            out.push(format!("      refused: {r}"));
        }
        out.push(format!(
            "  jobs: {} accepted; by state: {}",
            self.accepted_jobs,
            self.states
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push(format!(
            "    attempts per job: {}",
            self.attempts_hist
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push(format!(
            "    infrastructure failures retried (internal_error attempts): {}",
            self.internal_errors
        ));
        out.push(format!(
            "  lost (accepted, not in the database): {}{}",
            self.lost.len(),
            self.lost
                .first()
                .map_or(String::new(), |id| format!(" (e.g. {id})"))
        ));
        out.push(format!(
            "  recorded twice: {} (two results among a job's attempts: {}; final state without \
             its attempt's result: {}; stored output not the hello line once: {} in the \
             database, {} of {} read through the API)",
            self.recorded_twice(),
            self.two_results.len(),
            self.state_mismatch.len(),
            self.output_bad_db.len(),
            self.output_bad_api.len(),
            self.output_checked_api
        ));
        for x in self
            .two_results
            .iter()
            .chain(&self.state_mismatch)
            .chain(&self.output_bad_db)
            .chain(&self.output_bad_api)
            .take(5)
        {
            out.push(format!("      {x}"));
        }
        out.push(format!(
            "    chunks stored by earlier, lost attempts (hidden by the attempt fence): {}",
            self.earlier_attempt_chunks
        ));
        out.push(format!(
            "  unexpected end states (all succeeded but the cancel-race jobs, cancelled): {}",
            self.unexpected_states.len()
        ));
        for x in self.unexpected_states.iter().take(5) {
            out.push(format!("      {x}"));
        }
        out.push(format!("  stuck after the drain: {}", self.stuck_count()));
        for x in self.stuck.iter().take(5) {
            out.push(format!("      {x}"));
        }
        out.push(String::new());
        out.push(format!(
            "  rescue: attempts lost to kill -9, kill → next attempt started (target ≤ lease {} s \
             + {RESCUE_MARGIN_SECS} s = {} s)",
            self.lease_secs, self.kill_rescue.limit_s
        ));
        out.push(dist_header("  (seconds)"));
        out.extend(delays_line("all kills", &self.kill_rescue));
        out.push(pct_row(
            "    kill → rescued (lease + rescuer tick)",
            &self.kill_to_rescued,
        ));
        out.push(pct_row(
            "    rescued → next attempt started",
            &self.rescued_to_rerun,
        ));
        for (label, s) in &self.kill_by_fault {
            out.extend(delays_line(label, s));
        }
        if !self.slowest.is_empty() {
            out.push("    slowest:".into());
            for s in &self.slowest {
                out.push(format!("      {s}"));
            }
        }
        out.push(format!(
            "  SIGTERM: {} attempts requeued by the draining worker, {} rerun",
            self.term_requeued.lost, self.term_requeued.rerun
        ));
        out.push(dist_row(
            "    SIGTERM → next attempt started",
            self.term_requeued.delays.as_ref(),
        ));
        for (label, n, d) in &self.other_lost {
            out.push(format!(
                "  {label}: {n} attempts of live workers lost (leases expired while the database \
                 was away)"
            ));
            out.push(pct_row("    PostgreSQL back → next attempt started", d));
        }
        if self.unattributed_lost > 0 {
            out.push(format!(
                "  lost attempts not attributed to a fault: {}",
                self.unattributed_lost
            ));
        }
        if !self.races.is_empty() {
            out.push("  cancel racing kill -9:".into());
            out.extend(self.races.iter().cloned());
        }
        out.push(String::new());
        out
    }

    fn verdicts(&self) -> Vec<Verdict> {
        let zero = |n: usize| Some(n == 0);
        let mut v = vec![
            Verdict::new(
                "chaos: lost = 0 (accepted, not in the database)",
                format!("{} of {} accepted", self.lost.len(), self.accepted_jobs),
                zero(self.lost.len()),
            ),
            Verdict::new(
                "chaos: recorded twice = 0 (results, output)",
                format!("{}", self.recorded_twice()),
                zero(self.recorded_twice()),
            ),
            Verdict::new(
                "chaos: stuck = 0 after the drain",
                format!("{}", self.stuck_count()),
                zero(self.stuck_count()),
            ),
            Verdict::new(
                "chaos: one job per Idempotency-Key",
                format!(
                    "{} keys named two jobs",
                    self.singles.conflicting + self.batches.conflicting
                ),
                zero(self.singles.conflicting + self.batches.conflicting),
            ),
            Verdict::new(
                "chaos: every submission answered",
                format!(
                    "{} unanswered, {} refused",
                    self.singles.unanswered + self.batches.unanswered,
                    self.singles.refused + self.batches.refused
                ),
                zero(
                    self.singles.unanswered
                        + self.batches.unanswered
                        + self.singles.refused
                        + self.batches.refused,
                ),
            ),
            Verdict::new(
                "chaos: end states as expected",
                format!("{} unexpected", self.unexpected_states.len()),
                zero(self.unexpected_states.len()),
            ),
            Verdict::new(
                format!(
                    "chaos: rescue-to-rerun ≤ lease + 5 s = {} s",
                    self.kill_rescue.limit_s
                ),
                match self.kill_rescue.delays {
                    Some(d) => format!(
                        "p50 {} s, max {} s ({} attempts)",
                        num(d.p50),
                        num(d.max),
                        d.n
                    ),
                    None => "no attempt was lost to a kill".into(),
                },
                self.kill_rescue.pass(),
            ),
        ];
        if let Some(ok) = self.races_ok {
            v.push(Verdict::new(
                "chaos: cancel racing kill -9 ends cancelled, no rerun",
                format!("{} race(s)", self.races.len()),
                Some(ok),
            ));
        }
        v
    }

    fn json(&self) -> Value {
        let t = |t: &SubmitTally| {
            json!({"keys": t.keys, "tries": t.tries, "cut_by_client": t.cut,
                   "failed_without_answer": t.conn_errors, "answers_503": t.status_503,
                   "answers_other_5xx": t.other_5xx, "answered": t.answered,
                   "first_answer_201": t.first_201, "first_answer_200": t.first_200,
                   "unanswered": t.unanswered, "refused": t.refused,
                   "key_named_two_jobs": t.conflicting, "jobs": t.jobs})
        };
        let rescue = |s: &RescueSummary| {
            json!({"lost": s.lost, "rerun": s.rerun, "not_rerun": s.not_rerun,
                   "delay_s": dist_json(s.delays.as_ref()), "limit_s": s.limit_s,
                   "pass": s.pass()})
        };
        json!({
            "batches": t(&self.batches),
            "single_jobs": t(&self.singles),
            "accepted_jobs": self.accepted_jobs,
            "lost": self.lost.len(),
            "lost_examples": self.lost.iter().take(20).collect::<Vec<_>>(),
            "states": self.states,
            "attempts_per_job": self.attempts_hist.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "internal_error_attempts": self.internal_errors,
            "recorded_twice": self.recorded_twice(),
            "two_results": self.two_results.iter().take(20).collect::<Vec<_>>(),
            "state_without_result": self.state_mismatch.iter().take(20).collect::<Vec<_>>(),
            "output_bad_db": self.output_bad_db.iter().take(20).collect::<Vec<_>>(),
            "output_checked_api": self.output_checked_api,
            "output_bad_api": self.output_bad_api.iter().take(20).collect::<Vec<_>>(),
            "earlier_attempt_chunks": self.earlier_attempt_chunks,
            "unexpected_states": self.unexpected_states,
            "stuck": self.stuck_count(),
            "stuck_examples": self.stuck,
            "rescue_after_kill": rescue(&self.kill_rescue),
            "kill_to_rescued_s": dist_json(Dist::of(&self.kill_to_rescued).as_ref()),
            "rescued_to_rerun_s": dist_json(Dist::of(&self.rescued_to_rerun).as_ref()),
            "rescue_by_fault": self.kill_by_fault.iter().map(|(l, s)| json!({"fault": l, "rescue": rescue(s)})).collect::<Vec<_>>(),
            "slowest_rescues": self.slowest,
            "sigterm_requeued": rescue(&self.term_requeued),
            "lost_while_database_away": self.other_lost.iter().map(|(l, n, d)| json!({"fault": l, "attempts": n, "pg_back_to_rerun_s": dist_json(Dist::of(d).as_ref())})).collect::<Vec<_>>(),
            "unattributed_lost": self.unattributed_lost,
            "cancel_races": self.races,
            "cancel_races_ok": self.races_ok,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_refuse_nonsense() {
        let f = parse_schedule(DEFAULT_FAULTS).unwrap();
        assert_eq!(
            f,
            vec![
                Fault::Kill,
                Fault::Term,
                Fault::PgFast,
                Fault::KillAll,
                Fault::PgImmediate,
                Fault::CancelKill,
                Fault::PgOutage(Duration::from_secs(15)),
                Fault::Kill
            ]
        );
        assert_eq!(
            parse_schedule(" pg-outage , kill ").unwrap(),
            vec![Fault::PgOutage(Duration::from_secs(15)), Fault::Kill]
        );
        assert_eq!(
            parse_schedule("pg-outage:3").unwrap(),
            vec![Fault::PgOutage(Duration::from_secs(3))]
        );
        for bad in [
            "",
            ",",
            "reboot",
            "kill:3",
            "pg-outage:0",
            "pg-outage:x",
            "pg-outage:301",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad:?}");
        }
        assert!(parse_schedule(&vec!["kill"; 51].join(",")).is_err());
        for f in &f {
            assert_eq!(&Fault::parse(&f.name()).unwrap(), f);
        }
    }

    #[test]
    fn the_default_schedule_is_bounded() {
        let f = parse_schedule(DEFAULT_FAULTS).unwrap();
        let d = schedule_estimate(&f, Duration::from_secs(12), Duration::from_secs(1));
        // 9 gaps of 12 s, 8 faults: 3 s of kills... the whole fault phase stays under 3 minutes.
        assert!(d < Duration::from_secs(180), "{d:?}");
        assert!(d > Duration::from_secs(100), "{d:?}");
    }

    fn rec(statuses: &[u16], ids: &[u128], cut: u32) -> KeyRecord {
        KeyRecord {
            key: "k".into(),
            tries: statuses.len() as u32 + cut,
            cut,
            statuses: statuses.to_vec(),
            ids: ids.iter().map(|i| Uuid::from_u128(*i)).collect(),
            jobs: ids
                .first()
                .map(|i| vec![Uuid::from_u128(*i)])
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn submissions_are_tallied_by_their_first_answer() {
        let records = vec![
            rec(&[201], &[1], 0),
            // Cut, then 503 during an outage, then 200: the cut try had created the job.
            rec(&[503, 200], &[2], 1),
            rec(&[503, 503, 201], &[3], 0),
            // Never answered.
            rec(&[503, 503], &[], 0),
            KeyRecord {
                refused: Some("422: bad".into()),
                statuses: vec![422],
                tries: 1,
                ..Default::default()
            },
        ];
        let t = tally(&records);
        assert_eq!(t.keys, 5);
        assert_eq!(t.tries, 1 + 3 + 3 + 2 + 1);
        assert_eq!(t.cut, 1);
        assert_eq!(t.status_503, 5);
        assert_eq!((t.answered, t.first_201, t.first_200), (3, 2, 1));
        assert_eq!((t.unanswered, t.refused, t.conflicting), (1, 1, 0));
        assert_eq!(t.jobs, 3);
        // Two answers naming different jobs: the key did not hold.
        let mut r = rec(&[201], &[1], 0);
        r.ids.push(Uuid::from_u128(9));
        assert!(r.conflicting());
        assert_eq!(tally(&[r]).conflicting, 1);
    }

    #[test]
    fn rescue_delays_against_the_limit() {
        let s = RescueSummary::of(&[Some(6.0), Some(9.5), None, Some(7.0)], 5);
        assert_eq!((s.lost, s.rerun, s.not_rerun), (4, 3, 1));
        assert_eq!(s.limit_s, 10.0);
        let d = s.delays.unwrap();
        assert_eq!((d.p50, d.max), (7.0, 9.5));
        assert_eq!(s.pass(), Some(true));
        let s = RescueSummary::of(&[Some(6.0), Some(10.01)], 5);
        assert_eq!(s.pass(), Some(false));
        // Nothing rerun: nothing decided.
        assert_eq!(RescueSummary::of(&[None], 5).pass(), None);
        assert_eq!(RescueSummary::of(&[], 5).pass(), None);
    }

    #[test]
    fn worker_ids_come_from_the_json_log() {
        let log = concat!(
            r#"{"timestamp":"x","level":"INFO","fields":{"message":"images ready"}}"#,
            "\n",
            r#"{"timestamp":"x","level":"INFO","fields":{"message":"worker started","worker":"0190f5a4-0000-7000-8000-000000000001","slots":32},"target":"nekton::worker"}"#,
            "\n"
        );
        assert_eq!(
            worker_id_from_log(log),
            Some("0190f5a4-0000-7000-8000-000000000001".parse().unwrap())
        );
        assert_eq!(worker_id_from_log("worker started but not json"), None);
        assert_eq!(worker_id_from_log(""), None);
    }

    #[test]
    fn worker_logs_are_scanned_for_fenced_completions() {
        let log = concat!(
            r#"{"level":"WARN","fields":{"message":"completions not applied: these attempts were taken over (fenced)","stale":"[01a24450-7641-734a-8dfd-02520b3e2317, 01a24450-7641-734a-8dfd-0253e639847b]"}}"#,
            "\n",
            r#"{"level":"WARN","fields":{"message":"lease lost; stopping the job without recording anything","job":"01a24450-7641-734a-8dfd-02520b3e2317"}}"#,
            "\n",
            r#"{"level":"INFO","fields":{"message":"worker started"}}"#,
            "\n"
        );
        assert_eq!(scan_worker_log(log), (2, 1));
        assert_eq!(scan_worker_log(""), (0, 0));
    }

    #[test]
    fn seconds_between_instants() {
        let a = DateTime::parse_from_rfc3339("2026-12-05T03:00:00Z")
            .unwrap()
            .to_utc();
        let b = DateTime::parse_from_rfc3339("2026-12-05T03:00:07.250Z")
            .unwrap()
            .to_utc();
        assert_eq!(secs_between(a, b), 7.25);
        assert_eq!(secs_between(b, a), -7.25);
        // Rescued after the kill: the kill's. Rescued before it (an outage): not the kill's.
        assert!(lost_to_kill(true, b, a));
        assert!(!lost_to_kill(true, a, b));
        assert!(!lost_to_kill(false, b, a));
    }
}
