//! `versus`: nekton side by side with graphile-worker 0.17.3, a well-regarded PostgreSQL job
//! queue, on one private PostgreSQL (durable: fsync and synchronous commit on), in interleaved
//! rounds of: graphile-worker's perf test with its batching on, the same with it off (its
//! defaults), nekton's `throughput`, graphile-worker's latency test, nekton's `latency`.
//!
//! graphile-worker runs from `load-tests/graphile/` (package.json + package-lock.json pinning
//! 0.17.3; `bench.mjs`, its perfTest adapted, see that file): the benchmark's setup installs it
//! with `npm ci`, CI never does. Each product has its own database in the one cluster (`nekton`,
//! `graphile`), so neither sees the other's tables; they run one after the other, never together.
//!
//! What is compared, and how it differs: graphile-worker's figure is no-op jobs (a JavaScript
//! function that returns) drained from a queue filled beforehand in one `add_jobs` statement;
//! nekton's is real sandboxed Wasm hello jobs submitted through the HTTP API in batches while
//! they run, each one's output stored and read back. Each round also runs nekton's `throughput
//! --queued-first` (its jobs queued before the clock, the drain alone timed: graphile-worker's
//! shape), reported as a second ratio beside the end-to-end one, which the verdicts keep.
//! Latency: graphile's `add_job` → the task function called (in-process, one worker pool);
//! nekton's `POST /v1/jobs` → the `exit` event on the job's log stream (HTTP client, the job run
//! and finished).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use nekton::pg::{EmbeddedOptions, EmbeddedPostgres};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

use crate::bench::{Ctx, Section};
use crate::dbstats::{self, DbUse};
use crate::latency::{self, LatencyArgs};
use crate::procstat::{self, CpuUse};
use crate::server::OwnServer;
use crate::stats::{Verdict, num};
use crate::throughput::{self, ThroughputArgs};

/// The bar: nekton's real hello jobs/s over graphile-worker's batched no-op jobs/s.
pub const BAR_RATIO: f64 = 0.5;
/// The goal.
pub const GOAL_RATIO: f64 = 1.0;
/// nekton's p50 submit → finished, client-side, on an idle server.
pub const TARGET_P50_MS: f64 = 2.0;

#[derive(Debug, Clone, clap::Args)]
pub struct VersusArgs {
    /// Interleaved rounds (each: graphile batched, graphile unbatched, nekton throughput, the
    /// same queued first, graphile latency, nekton latency).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// No-op jobs graphile-worker drains per throughput run (its perf test's JOB_COUNT).
    #[arg(long, default_value_t = 200_000)]
    pub graphile_jobs: usize,
    /// graphile-worker processes draining the queue (its perf test's PARALLELISM).
    #[arg(long, default_value_t = 4)]
    pub graphile_processes: usize,
    /// Concurrent jobs per graphile-worker process (its perf test's CONCURRENT_JOBS).
    #[arg(long, default_value_t = 24)]
    pub graphile_concurrency: usize,
    /// Sequential jobs of graphile-worker's latency test (after 100 warm-up jobs).
    #[arg(long, default_value_t = 1000)]
    pub graphile_latency_samples: usize,
    /// Where graphile-worker is installed (package.json, node_modules, bench.mjs).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/graphile"))]
    pub graphile_dir: PathBuf,
    /// The Node.js executable.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
    /// Longest one graphile-worker run may take (queueing included).
    #[arg(long, default_value_t = 1200)]
    pub graphile_timeout_secs: u64,
    #[command(flatten)]
    pub throughput: ThroughputArgs,
    #[command(flatten)]
    pub latency: LatencyArgs,
}

/// Refuses `throughput`'s options that `versus` sets itself: `--queued-first` (every round runs
/// nekton both end to end and queued first; with the flag, the end-to-end run would be a drain
/// labelled end to end).
pub fn check_args(args: &VersusArgs) -> Result<()> {
    if args.throughput.queued_first {
        bail!(
            "versus runs nekton's throughput both end to end and queued first in every round; \
             drop --queued-first (it is `throughput`'s option)"
        );
    }
    Ok(())
}

/// Refuses to start without graphile-worker installed, saying how to install it.
pub fn check_install(dir: &Path) -> Result<()> {
    if !dir.join("bench.mjs").is_file() || !dir.join("package-lock.json").is_file() {
        bail!(
            "{} has no bench.mjs and package-lock.json: pass --graphile-dir load-tests/graphile \
             (of this repository)",
            dir.display()
        );
    }
    if !dir
        .join("node_modules/graphile-worker/package.json")
        .is_file()
    {
        bail!(
            "graphile-worker is not installed in {d}/node_modules: the benchmark's setup installs \
             it (CI does not) — run `npm ci --prefix {d}` (needs Node.js ≥ 18 and npm)",
            d = dir.display()
        );
    }
    Ok(())
}

/// One graphile-worker run: its final JSON line and what the machine and database did while
/// it ran (between "go" and "done").
struct GraphileRun {
    done: Value,
    cpu: CpuUse,
    db: Option<DbUse>,
}

impl GraphileRun {
    fn lines(&self, jobs: u64) -> Vec<String> {
        let mut out = self.cpu.lines(Some(jobs));
        if let Some(db) = &self.db {
            out.extend(db.lines(Some(jobs)));
        }
        out
    }

    fn json(&self, jobs: u64) -> Value {
        json!({
            "result": self.done,
            "cpu": self.cpu.json(Some(jobs)),
            "postgres": self.db.as_ref().map(|d| d.json(Some(jobs))),
        })
    }
}

/// Reads node's stdout until the JSON line of `phase`; other JSON is an error, other text is
/// passed on.
async fn next_phase(
    out: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    line: &str,
    phase: &str,
) -> Result<Value> {
    loop {
        let l = tokio::time::timeout_at(deadline, out.next_line())
            .await
            .with_context(|| format!("`{line}` did not say {phase:?} within {timeout:?}"))?
            .with_context(|| format!("reading the output of `{line}`"))?;
        let Some(l) = l else {
            bail!("`{line}` ended before {phase:?} (its errors are above)");
        };
        let Ok(v) = serde_json::from_str::<Value>(&l) else {
            eprintln!("graphile: {l}");
            continue;
        };
        match v["phase"].as_str() {
            Some(p) if p == phase => return Ok(v),
            Some("error") => bail!("`{line}` failed: {}", v["error"].as_str().unwrap_or("?")),
            _ => bail!("`{line}` said {v} while {phase:?} was expected"),
        }
    }
}

struct Graphile<'a> {
    args: &'a VersusArgs,
    pg: &'a EmbeddedPostgres,
    db: &'a PgPool,
    settle: Duration,
}

impl Graphile<'_> {
    /// Runs `node bench.mjs <what…>` against the `graphile` database: waits for "ready",
    /// marks, says "go", waits for "done", measures, then lets it exit.
    async fn run(&self, what: &[String]) -> Result<GraphileRun> {
        let script = self.args.graphile_dir.join("bench.mjs");
        let socket = self.pg.socket_dir().display().to_string();
        let mut cmd = Command::new(&self.args.node);
        cmd.arg(&script)
            .args(what)
            .args([
                "--host",
                &socket,
                "--port",
                "5432",
                "--user",
                "postgres",
                "--database",
                "graphile",
            ])
            .current_dir(&self.args.graphile_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let line = format!(
            "{} {} {}",
            self.args.node.display(),
            script.display(),
            what.join(" ")
        );
        let mut child = cmd.spawn().with_context(|| {
            format!("starting `{line}` (is Node.js installed? --node PATH names another)")
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .context("node exited at once")?;
        let mut stdin = child.stdin.take().context("node's stdin")?;
        let mut out = BufReader::new(child.stdout.take().context("node's stdout")?).lines();
        let timeout = Duration::from_secs(self.args.graphile_timeout_secs.max(1));
        let deadline = tokio::time::Instant::now() + timeout;
        next_phase(&mut out, deadline, timeout, &line, "ready").await?;
        let cpu0 = procstat::snapshot_with(Some(pid), &[self.pg.pid()], "node");
        let db0 = dbstats::snapshot(self.db).await.ok();
        stdin
            .write_all(b"go\n")
            .await
            .context("telling node to go")?;
        let done = next_phase(&mut out, deadline, timeout, &line, "done").await?;
        let cpu = CpuUse::between(
            &cpu0,
            &procstat::snapshot_with(Some(pid), &[self.pg.pid()], "node"),
        );
        drop(stdin);
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .with_context(|| format!("`{line}` did not exit within 60 s of its end"))??;
        if !status.success() {
            bail!("`{line}` exited with {status}");
        }
        let db = match db0 {
            Some(before) => {
                tokio::time::sleep(self.settle).await;
                dbstats::snapshot(self.db)
                    .await
                    .ok()
                    .map(|after| DbUse::between(&before, &after))
            }
            None => None,
        };
        Ok(GraphileRun { done, cpu, db })
    }

    async fn throughput(&self, batched: bool) -> Result<GraphileRun> {
        let a = self.args;
        let what: Vec<String> = [
            "throughput",
            "--mode",
            if batched { "batched" } else { "unbatched" },
            "--jobs",
            &a.graphile_jobs.to_string(),
            "--processes",
            &a.graphile_processes.to_string(),
            "--concurrency",
            &a.graphile_concurrency.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let r = self.run(&what).await?;
        let (ran, left) = (r.done["ran"].as_u64(), r.done["left"].as_u64());
        if ran != Some(a.graphile_jobs as u64) || left != Some(0) {
            bail!(
                "graphile-worker ran {ran:?} of {} jobs, {left:?} left in the queue",
                a.graphile_jobs
            );
        }
        Ok(r)
    }

    async fn latency(&self) -> Result<GraphileRun> {
        let what: Vec<String> = [
            "latency",
            "--samples",
            &self.args.graphile_latency_samples.to_string(),
            "--concurrency",
            &self.args.graphile_concurrency.to_string(),
        ]
        .map(String::from)
        .to_vec();
        self.run(&what).await
    }
}

/// What one round measured.
#[derive(Default)]
struct Round {
    batched: Option<f64>,
    unbatched: Option<f64>,
    nekton: Option<f64>,
    /// nekton's `throughput --queued-first`: the drain of a queue filled beforehand.
    drain: Option<f64>,
    graphile_p50: Option<f64>,
    nekton_p50: Option<f64>,
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("—".into(), num)
}

/// Runs the rounds; returns the section and the server and database lines for the header.
pub async fn run(
    nekton: &Path,
    args: &VersusArgs,
    serve_args: &[String],
    keep: bool,
    ready_timeout: Duration,
    settle: Duration,
) -> Result<(Section, String, String)> {
    check_args(args)?;
    check_install(&args.graphile_dir)?;
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let node_version = std::process::Command::new(&args.node)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running `{} --version`: is Node.js installed?",
                args.node.display()
            )
        })?;
    let node_version = String::from_utf8_lossy(&node_version.stdout)
        .trim()
        .to_string();
    let gw_version = fs::read_to_string(
        args.graphile_dir
            .join("node_modules/graphile-worker/package.json"),
    )
    .ok()
    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    .and_then(|v| v["version"].as_str().map(String::from))
    .unwrap_or_else(|| "?".into());

    let tag = uuid::Uuid::new_v4().simple().to_string();
    let root = PathBuf::from(format!(
        "/tmp/nekton-versus-{}-{}",
        std::process::id(),
        &tag[..8]
    ));
    crate::chaos::make_dir(&root)?;
    let pg = EmbeddedPostgres::start(&root.join("pg"), EmbeddedOptions::default())
        .await
        .context("starting the private PostgreSQL")?;
    let outcome = async {
        for db in ["nekton", "graphile"] {
            pg.create_database_if_missing(db)
                .await
                .with_context(|| format!("creating the {db} database"))?;
        }
        let nekton_db = dbstats::connect(pg.connect_options("nekton"), 8).await?;
        let graphile_db = dbstats::connect(pg.connect_options("graphile"), 2).await?;
        let db_line = format!(
            "private, one cluster on a Unix socket ({}), databases `nekton` and `graphile`; {}",
            pg.socket_dir().display(),
            dbstats::describe(&nekton_db)
                .await
                .unwrap_or_else(|e| format!("{e:#}"))
        );
        eprintln!("load-tests: starting {} serve …", nekton.display());
        let server = OwnServer::start(
            nekton,
            Some(&pg.url("nekton")),
            serve_args,
            keep,
            ready_timeout,
        )
        .await?;
        let server_line = format!(
            "started by load-tests ({} build): {}; graphile-worker {gw_version} on Node.js \
             {node_version} ({})",
            crate::profile_of(nekton),
            server.command,
            args.graphile_dir.display()
        );
        let ctx = Ctx {
            client: nekton::cli::Client::with_token(&server.url, server.admin_token().as_deref())?,
            token: server.admin_token(),
            url: server.url.clone(),
            server_pid: Some(server.pid),
            extra_pids: vec![pg.pid()],
            server_label: "nekton",
            db: Some(nekton_db),
            settle,
        };
        let g = Graphile {
            args,
            pg: &pg,
            db: &graphile_db,
            settle,
        };
        let r = rounds(&ctx, &g, args).await;
        if let Some(p) = &ctx.db {
            p.close().await;
        }
        graphile_db.close().await;
        let stop = server.stop().await.unwrap_or_else(|e| format!("{e:#}"));
        let mut section = r?;
        section.lines.push(format!("  ({stop})"));
        Ok::<_, anyhow::Error>((section, server_line, db_line))
    }
    .await;
    pg.stop().await;
    if keep {
        eprintln!("load-tests: PostgreSQL's data kept in {}", root.display());
    } else {
        let _ = fs::remove_dir_all(&root);
    }
    outcome
}

async fn rounds(ctx: &Ctx, g: &Graphile<'_>, args: &VersusArgs) -> Result<Section> {
    let mut lines = Vec::new();
    let mut rounds_json = Vec::new();
    let mut rounds: Vec<Round> = Vec::new();
    let gjobs = args.graphile_jobs as u64;
    let failed = |what: &str, e: &anyhow::Error, lines: &mut Vec<String>| {
        eprintln!("load-tests: {what} failed: {e:#}");
        lines.push(format!("  {what}: FAILED: {e:#}"));
    };
    for i in 1..=args.rounds {
        let mut r = Round::default();
        let mut j = serde_json::Map::new();
        lines.push(format!("### round {i} of {}", args.rounds));
        for batched in [true, false] {
            let name = if batched { "batched" } else { "unbatched" };
            eprintln!("load-tests: round {i}: graphile-worker throughput, {name} …");
            match g.throughput(batched).await {
                Ok(run) => {
                    let rate = run.done["jobs_per_s"].as_f64();
                    lines.push(format!(
                        "  graphile-worker {name}: {} no-op jobs/s ({gjobs} jobs drained in {} s by \
                         {} processes × {} concurrent; queued beforehand in {} s)",
                        fmt(rate),
                        fmt(run.done["wall_ms"].as_f64().map(|m| m / 1000.0)),
                        args.graphile_processes,
                        args.graphile_concurrency,
                        fmt(run.done["queue_ms"].as_f64().map(|m| m / 1000.0)),
                    ));
                    lines.extend(run.lines(gjobs));
                    j.insert(format!("graphile_{name}"), run.json(gjobs));
                    if batched {
                        r.batched = rate;
                    } else {
                        r.unbatched = rate;
                    }
                }
                Err(e) => failed(&format!("graphile-worker {name}"), &e, &mut lines),
            }
        }
        eprintln!("load-tests: round {i}: nekton throughput …");
        match throughput::run(ctx, &args.throughput).await {
            Ok(s) => {
                r.nekton = s.json["jobs_per_s"].as_f64();
                lines.push(format!("  nekton throughput: {}", s.title));
                lines.extend(s.lines.iter().cloned());
                j.insert("nekton_throughput".into(), s.json);
            }
            Err(e) => failed("nekton throughput", &e, &mut lines),
        }
        eprintln!("load-tests: round {i}: nekton throughput, queued first …");
        let drain_args = ThroughputArgs {
            queued_first: true,
            ..args.throughput.clone()
        };
        match throughput::run(ctx, &drain_args).await {
            Ok(s) => {
                r.drain = s.json["jobs_per_s"].as_f64();
                lines.push(format!("  nekton throughput, queued first: {}", s.title));
                lines.extend(s.lines.iter().cloned());
                j.insert("nekton_queued_first".into(), s.json);
            }
            Err(e) => failed("nekton throughput, queued first", &e, &mut lines),
        }
        eprintln!("load-tests: round {i}: graphile-worker latency …");
        match g.latency().await {
            Ok(run) => {
                let d = &run.done["add_job_to_task_start_ms"];
                r.graphile_p50 = d["p50"].as_f64();
                lines.push(format!(
                    "  graphile-worker latency, add_job → task start over {} sequential jobs (ms): \
                     p50 {}  p90 {}  p99 {}  max {}",
                    args.graphile_latency_samples,
                    fmt(d["p50"].as_f64()),
                    fmt(d["p90"].as_f64()),
                    fmt(d["p99"].as_f64()),
                    fmt(d["max"].as_f64())
                ));
                lines.extend(run.lines(args.graphile_latency_samples as u64));
                j.insert(
                    "graphile_latency".into(),
                    run.json(args.graphile_latency_samples as u64),
                );
            }
            Err(e) => failed("graphile-worker latency", &e, &mut lines),
        }
        eprintln!("load-tests: round {i}: nekton latency …");
        match latency::run(ctx, &args.latency).await {
            Ok(s) => {
                r.nekton_p50 = s.json["client_submit_to_finished_p50_ms"].as_f64();
                lines.push(format!("  nekton latency: {}", s.title));
                lines.extend(s.lines.iter().cloned());
                j.insert("nekton_latency".into(), s.json);
            }
            Err(e) => failed("nekton latency", &e, &mut lines),
        }
        lines.push(format!(
            "  round {i}: nekton {} jobs/s = {}× graphile batched ({}), {}× unbatched ({}); queued \
             first, nekton drains {} jobs/s = {}× graphile batched; p50 nekton {} ms vs graphile {} ms",
            fmt(r.nekton),
            fmt(ratio(r.nekton, r.batched)),
            fmt(r.batched),
            fmt(ratio(r.nekton, r.unbatched)),
            fmt(r.unbatched),
            fmt(r.drain),
            fmt(ratio(r.drain, r.batched)),
            fmt(r.nekton_p50),
            fmt(r.graphile_p50)
        ));
        j.insert(
            "ratios".into(),
            json!({
                "nekton_over_graphile_batched": ratio(r.nekton, r.batched),
                "nekton_over_graphile_unbatched": ratio(r.nekton, r.unbatched),
                "nekton_queued_first_over_graphile_batched": ratio(r.drain, r.batched),
                "nekton_p50_ms": r.nekton_p50,
                "graphile_p50_ms": r.graphile_p50,
            }),
        );
        rounds_json.push(Value::Object(j));
        rounds.push(r);
    }

    let col = |f: fn(&Round) -> Option<f64>| -> Vec<f64> { rounds.iter().filter_map(f).collect() };
    let per_round = |f: &dyn Fn(&Round) -> Option<f64>| -> String {
        rounds
            .iter()
            .map(|r| fmt(f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let to_batched: Vec<f64> = rounds
        .iter()
        .filter_map(|r| ratio(r.nekton, r.batched))
        .collect();
    let to_unbatched: Vec<f64> = rounds
        .iter()
        .filter_map(|r| ratio(r.nekton, r.unbatched))
        .collect();
    let m_ratio = median(&to_batched);
    let m_ratio_u = median(&to_unbatched);
    let m_drain = median(
        &rounds
            .iter()
            .filter_map(|r| ratio(r.drain, r.batched))
            .collect::<Vec<_>>(),
    );
    let m_p50 = median(&col(|r| r.nekton_p50));
    let m_gp50 = median(&col(|r| r.graphile_p50));
    let mut summary = vec![
        "### summary (median of the rounds; per round in brackets)".to_string(),
        format!(
            "  graphile-worker batched   {} no-op jobs/s  [{}]",
            fmt(median(&col(|r| r.batched))),
            per_round(&|r| r.batched)
        ),
        format!(
            "  graphile-worker unbatched {} no-op jobs/s  [{}]",
            fmt(median(&col(|r| r.unbatched))),
            per_round(&|r| r.unbatched)
        ),
        format!(
            "  nekton                    {} hello jobs/s (sandboxed, output stored and verified)  [{}]",
            fmt(median(&col(|r| r.nekton))),
            per_round(&|r| r.nekton)
        ),
        format!(
            "  nekton ÷ graphile batched   {}×  [{}]",
            fmt(m_ratio),
            per_round(&|r| ratio(r.nekton, r.batched))
        ),
        format!(
            "  nekton ÷ graphile unbatched {}×  [{}]",
            fmt(m_ratio_u),
            per_round(&|r| ratio(r.nekton, r.unbatched))
        ),
        format!(
            "  nekton queued first (the drain alone, as graphile's jobs) {} hello jobs/s  [{}]; \
             ÷ graphile batched {}×  [{}] (not the verdicts' figure)",
            fmt(median(&col(|r| r.drain))),
            per_round(&|r| r.drain),
            fmt(m_drain),
            per_round(&|r| ratio(r.drain, r.batched))
        ),
        format!(
            "  latency p50: nekton submit → finished (the quicker of ?wait= and SSE follow) {} ms [{}]; \
             graphile add_job → task start {} ms \
             [{}]; ratio {}×",
            fmt(m_p50),
            per_round(&|r| r.nekton_p50),
            fmt(m_gp50),
            per_round(&|r| r.graphile_p50),
            fmt(ratio(m_p50, m_gp50))
        ),
    ];
    summary.append(&mut lines);
    let verdicts = vec![
        Verdict::new(
            format!("nekton hello jobs/s ≥ {BAR_RATIO}× graphile batched no-op (bar)"),
            format!("{}× (median of {} rounds)", fmt(m_ratio), to_batched.len()),
            m_ratio.map(|x| x >= BAR_RATIO),
        ),
        Verdict::new(
            format!("nekton hello jobs/s ≥ {GOAL_RATIO}× graphile batched no-op (goal)"),
            format!("{}×", fmt(m_ratio)),
            m_ratio.map(|x| x >= GOAL_RATIO),
        ),
        Verdict::new(
            format!("nekton p50 submit → finished ≤ {TARGET_P50_MS} ms client-side, idle server"),
            format!(
                "{} ms (graphile add_job → start {} ms)",
                fmt(m_p50),
                fmt(m_gp50)
            ),
            m_p50.map(|p| p <= TARGET_P50_MS),
        ),
    ];
    let json = json!({
        "rounds": rounds_json,
        "graphile_jobs": args.graphile_jobs,
        "graphile_processes": args.graphile_processes,
        "graphile_concurrency": args.graphile_concurrency,
        "median": {
            "graphile_batched_jobs_per_s": median(&col(|r| r.batched)),
            "graphile_unbatched_jobs_per_s": median(&col(|r| r.unbatched)),
            "nekton_jobs_per_s": median(&col(|r| r.nekton)),
            "nekton_over_graphile_batched": m_ratio,
            "nekton_over_graphile_unbatched": m_ratio_u,
            "nekton_queued_first_jobs_per_s": median(&col(|r| r.drain)),
            "nekton_queued_first_over_graphile_batched": m_drain,
            "nekton_p50_ms": m_p50,
            "graphile_p50_ms": m_gp50,
        },
        "verdicts": verdicts.iter().map(Verdict::json).collect::<Vec<_>>(),
    });
    Ok(Section {
        title: format!(
            "versus — nekton and graphile-worker on one PostgreSQL, {} interleaved rounds",
            args.rounds
        ),
        lines: summary,
        verdicts,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }

    #[test]
    fn refuses_queued_first_which_it_sets_itself() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            versus: VersusArgs,
        }
        use clap::Parser as _;
        let plain = Cli::try_parse_from(["versus"]).unwrap();
        check_args(&plain.versus).unwrap();
        let flagged = Cli::try_parse_from(["versus", "--queued-first"]).unwrap();
        let e = check_args(&flagged.versus).unwrap_err().to_string();
        assert!(e.contains("drop --queued-first"), "{e}");
    }

    #[test]
    fn refuses_without_node_modules() {
        let dir = std::env::temp_dir().join(format!("versus-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("bench.mjs"), "").unwrap();
        fs::write(dir.join("package-lock.json"), "{}").unwrap();
        let e = check_install(&dir).unwrap_err().to_string();
        assert!(
            e.contains(&format!("npm ci --prefix {}", dir.display())),
            "{e}"
        );
        fs::create_dir_all(dir.join("node_modules/graphile-worker")).unwrap();
        fs::write(dir.join("node_modules/graphile-worker/package.json"), "{}").unwrap();
        check_install(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(check_install(Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn the_repository_pins_graphile_worker() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphile");
        let lock: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("package-lock.json")).unwrap())
                .unwrap();
        assert_eq!(
            lock["packages"]["node_modules/graphile-worker"]["version"],
            "0.17.3"
        );
        assert!(dir.join("bench.mjs").is_file());
    }
}
