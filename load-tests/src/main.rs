//! `load-tests`: nekton's performance benchmarks, measured against the targets of the
//! performance issue, on whatever machine runs them.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/cache/nekton/target
//! cargo build --release -p nekton -p load-tests
//! $CARGO_TARGET_DIR/release/load-tests all --json results.json   # everything, own server
//! $CARGO_TARGET_DIR/release/load-tests latency [--latency-jobs 300 --latency-warmup 20]
//! $CARGO_TARGET_DIR/release/load-tests throughput [--throughput-jobs 20000 --batch-size 500 --submitters 4]
//! $CARGO_TARGET_DIR/release/load-tests logs [--log-mib 256 --write-size 4096 --trickle-writes 500]
//! $CARGO_TARGET_DIR/release/load-tests queue [--queue-jobs 20000 --queue-workers 4]
//! $CARGO_TARGET_DIR/release/load-tests fairness [--backlog-jobs 50000 --probe-jobs 20]
//! $CARGO_TARGET_DIR/release/load-tests auth-overhead [--rounds 2]   # starts its own servers
//! $CARGO_TARGET_DIR/release/load-tests grading --serve-arg=--slots=16 [--grading-cases 100]
//! $CARGO_TARGET_DIR/release/load-tests chaos [--backlog-jobs 10000 --lease-secs 5 --faults …]
//! ```
//!
//! By default each run starts its own server: `nekton serve --listen 127.0.0.1:<free port>
//! --state-dir /tmp/nekton-load-…/state` (embedded PostgreSQL), from `--nekton PATH` or the
//! `nekton` next to this executable; it waits for `/readyz`, runs the benchmarks, stops the server
//! with SIGTERM and removes the directory (`--keep-state` keeps it, with the server's log).
//! `--serve-arg=ARG` (repeatable) passes flags to `nekton serve`, `--database-url` makes it use
//! that PostgreSQL instead of the embedded one. `--server http://127.0.0.1:PORT` uses a running
//! server instead (add `--database-url` for the PostgreSQL figures and the queue-only benchmark,
//! `--server-pid` for its CPU time, `--token` for the API token). A server load-tests starts has
//! auth on: the benchmarks use the admin token it writes to its state directory. Only 127.0.0.1
//! is ever contacted.
//!
//! Benchmarks:
//! - `latency`: hello-world Wasm jobs one at a time; submit → `exit` event on the job's SSE log
//!   stream (client), `finished_at − created_at` and `queue_wait_ms` (server); target p50 ≤ 10 ms.
//! - `throughput`: hello jobs through `POST /v1/batches` by concurrent submitters until every batch
//!   is finished; every job checked; target ≥ 1,000 jobs/s. `--queued-first` queues them all
//!   before any may run and times the drain alone.
//! - `logs`: 256 MiB of stdout in 4 KiB writes followed over SSE: MB/s and write → receive latency
//!   (the guest stamps each write with the realtime clock); then a trickle; targets ≥ 50 MB/s and
//!   p50 ≤ 250 ms.
//! - `queue`: the service's claim/complete statements alone (no HTTP, no sandbox), for reference.
//! - `all`: all of them, on one server.
//! - `fairness`: tenant B's lone hello jobs, idle and then behind tenant A's 50,000-job backlog;
//!   target: B's p50 behind the backlog ≤ 3 × idle.
//! - `grading`: one test-suite job (a tcc build, or gcc with `--compiler gcc`, + 100 container
//!   cases) vs 100 jobs that each build, submit → last result (target ≥ 3×); a 1000-case Wasm
//!   suite's cost per case in the worker (target ≤ 200 µs).
//! - `auth-overhead`: fresh servers with auth on and `--auth off` in turn, the same requests and
//!   benchmarks on each; targets: ≤ 5 % of the throughput, ≤ 0.2 ms on the POST p50.
//! - `chaos`: its own stack (private PostgreSQL on a Unix socket, one `nekton api`, three
//!   `nekton worker`s, all on loopback) under a backlog and a trickle of idempotent submissions,
//!   through kill -9 and SIGTERM of workers, PostgreSQL restarts (fast, immediate), an outage and
//!   a cancel racing a kill; targets: lost = 0, recorded twice = 0, stuck = 0, rescue-to-rerun ≤
//!   lease + 5 s.
//!
//! Every benchmark reports the CPU time the machine, nekton (by thread), its PostgreSQL (by role)
//! and this process used, and PostgreSQL's transactions, rows and WAL per job. The report is
//! printed; `--json FILE` also writes it as JSON.

mod auth_overhead;
mod bench;
mod chain;
mod chaos;
mod containers;
mod dbstats;
mod fairness;
mod grading;
mod guests;
mod latency;
mod logs;
mod procstat;
mod queue;
mod scaling;
mod server;
mod stats;
mod throughput;
mod versus;
mod watchers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;

use bench::{Ctx, Section};
use server::OwnServer;
use stats::Verdict;

#[derive(Parser)]
#[command(
    name = "load-tests",
    about = "nekton's performance benchmarks: latency, throughput, log streaming (and the queue alone)"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Use this running server (http://127.0.0.1:PORT only) instead of starting one.
    #[arg(long, global = true)]
    server: Option<String>,
    /// The nekton binary to start (default: the `nekton` next to this executable).
    #[arg(long, global = true)]
    nekton: Option<PathBuf>,
    /// PostgreSQL for the server to use (passed to `nekton serve`), or, with --server, the
    /// server's database (for PostgreSQL figures and the queue benchmark). Local only.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Extra argument for `nekton serve` (repeatable), e.g. --serve-arg=--slots=64.
    #[arg(long = "serve-arg", global = true, allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// With --server: the server's pid, for its CPU time.
    #[arg(long, global = true)]
    server_pid: Option<i32>,
    /// With --server: the API token to send (`fairness` needs one with the admin scope). A server
    /// load-tests starts is used with the admin token it writes to its state directory.
    #[arg(long, global = true, env = "NEKTON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Keep the started server's state directory and log.
    #[arg(long, global = true)]
    keep_state: bool,
    /// Seconds to let PostgreSQL's statistics settle before reading them after a benchmark
    /// (0: read at once; counts are then incomplete).
    #[arg(long, global = true, default_value_t = 11)]
    settle_secs: u64,
    /// Longest to wait for a started server's /readyz.
    #[arg(long, global = true, default_value_t = 180)]
    ready_timeout_secs: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Hello jobs one at a time: submit → finished.
    Latency(latency::LatencyArgs),
    /// Hello jobs through batches: jobs per second, every job verified.
    Throughput(throughput::ThroughputArgs),
    /// Log streaming: MB/s and write → receive latency over SSE.
    Logs(logs::LogsArgs),
    /// The queue's own statements alone (reference figure; needs database access).
    Queue(queue::QueueArgs),
    /// latency, throughput, logs and queue, on one server.
    All(AllArgs),
    /// /bin/true containers: nekton (direct and through the API) vs crun vs runc. Root only.
    Containers(containers::ContainersArgs),
    /// A test suite's case on a kept build's base vs a plain container job (the container
    /// backend called directly; no server). Root only.
    Chain(chain::ChainArgs),
    /// Test-suite jobs: 1 build + N container cases vs N jobs that each build; the per-case
    /// cost of a Wasm suite in the worker. The container part needs root and the compiler
    /// (tcc, or gcc with `--compiler gcc`).
    Grading(grading::GradingArgs),
    /// Thousands of SSE clients following live jobs: latency, RSS per client, descriptors.
    Watchers(watchers::WatchersArgs),
    /// Tenant B's lone jobs, idle and behind tenant A's backlog (needs the admin token).
    Fairness(fairness::FairnessArgs),
    /// Auth on vs --auth off: the same benchmarks on fresh servers of each (starts its own).
    AuthOverhead(auth_overhead::AuthOverheadArgs),
    /// Faults under load — kill -9 and SIGTERM of workers, PostgreSQL restarts and an outage, a
    /// cancel racing a kill — on its own stack (private PostgreSQL, 1 api, 3 workers): lost,
    /// recorded twice, stuck, rescue delay.
    Chaos(chaos::ChaosArgs),
    /// nekton vs graphile-worker 0.17.3 on one private PostgreSQL, interleaved rounds:
    /// throughput (batched, unbatched) and latency; the ratios and verdicts. Needs
    /// `npm ci --prefix load-tests/graphile` first (not done by CI).
    Versus(versus::VersusArgs),
    /// Throughput with 1, 2 and 4 `nekton worker` processes on one private PostgreSQL, and the
    /// cost per job as the output grows (1 KiB, 1 MiB, 10 MiB).
    Scaling(scaling::ScalingArgs),
}

#[derive(Args)]
struct AllArgs {
    #[command(flatten)]
    latency: latency::LatencyArgs,
    #[command(flatten)]
    throughput: throughput::ThroughputArgs,
    #[command(flatten)]
    logs: logs::LogsArgs,
    #[command(flatten)]
    queue: queue::QueueArgs,
    /// Leave out the queue-only benchmark.
    #[arg(long)]
    skip_queue: bool,
}

/// Refuses database URLs that point anywhere but a Unix socket or 127.0.0.1.
fn local_db_options(url: &str) -> Result<PgConnectOptions> {
    let options: PgConnectOptions = url
        .parse()
        .context("--database-url is not a PostgreSQL URL (postgres://user@127.0.0.1/db)")?;
    let host = options.get_host();
    if !(host.starts_with('/') || host == "127.0.0.1") {
        bail!("--database-url must point at 127.0.0.1 or a Unix socket directory, not {host:?}");
    }
    Ok(options)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn machine_line() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb as f64 / 1048576.0));
    format!(
        "nproc={nproc}, {model}, {mem} RAM, Linux {}",
        read_trimmed("/proc/sys/kernel/osrelease")
    )
}

fn profile_of(path: &Path) -> &'static str {
    let names: Vec<_> = path.components().map(|c| c.as_os_str()).collect();
    if names.iter().any(|n| *n == "release") {
        "release"
    } else if names.iter().any(|n| *n == "debug") {
        "debug"
    } else {
        "unknown profile"
    }
}

/// The benchmarks a command runs, in order.
enum Bench<'a> {
    Latency(&'a latency::LatencyArgs),
    Throughput(&'a throughput::ThroughputArgs),
    Logs(&'a logs::LogsArgs),
    Queue(&'a queue::QueueArgs),
    Containers(&'a containers::ContainersArgs),
    Watchers(&'a watchers::WatchersArgs),
    Fairness(&'a fairness::FairnessArgs),
    Grading(&'a grading::GradingArgs),
}

impl Bench<'_> {
    fn name(&self) -> &'static str {
        match self {
            Bench::Latency(_) => "latency",
            Bench::Throughput(_) => "throughput",
            Bench::Logs(_) => "logs",
            Bench::Queue(_) => "queue",
            Bench::Containers(_) => "containers",
            Bench::Watchers(_) => "watchers",
            Bench::Fairness(_) => "fairness",
            Bench::Grading(_) => "grading",
        }
    }

    async fn run(&self, ctx: &Ctx) -> Result<Section> {
        match self {
            Bench::Latency(a) => latency::run(ctx, a).await,
            Bench::Throughput(a) => throughput::run(ctx, a).await,
            Bench::Logs(a) => logs::run(ctx, a).await,
            Bench::Queue(a) => queue::run(ctx, a).await,
            Bench::Containers(a) => containers::run(ctx, a).await,
            Bench::Watchers(a) => watchers::run(ctx, a).await,
            Bench::Fairness(a) => fairness::run(ctx, a).await,
            Bench::Grading(a) => grading::run(ctx, a).await,
        }
    }
}

fn plan(command: &Command) -> Vec<Bench<'_>> {
    match command {
        Command::Latency(a) => vec![Bench::Latency(a)],
        Command::Throughput(a) => vec![Bench::Throughput(a)],
        Command::Logs(a) => vec![Bench::Logs(a)],
        Command::Queue(a) => vec![Bench::Queue(a)],
        Command::Containers(a) => vec![Bench::Containers(a)],
        Command::Watchers(a) => vec![Bench::Watchers(a)],
        Command::Fairness(a) => vec![Bench::Fairness(a)],
        Command::Grading(a) => vec![Bench::Grading(a)],
        // Starts its own servers / needs none: see `main_inner`.
        Command::AuthOverhead(_)
        | Command::Chain(_)
        | Command::Chaos(_)
        | Command::Versus(_)
        | Command::Scaling(_) => Vec::new(),
        Command::All(a) => {
            let mut v = vec![
                Bench::Latency(&a.latency),
                Bench::Throughput(&a.throughput),
                Bench::Logs(&a.logs),
            ];
            if !a.skip_queue {
                v.push(Bench::Queue(&a.queue));
            }
            v
        }
    }
}

/// Runs the benchmarks in order; a failed one is reported and the others still run.
async fn run_all(ctx: &Ctx, benches: &[Bench<'_>]) -> Vec<(&'static str, Result<Section>)> {
    let mut out = Vec::new();
    for b in benches {
        eprintln!("load-tests: running {} …", b.name());
        let r = b.run(ctx).await;
        if let Err(e) = &r {
            eprintln!("load-tests: {} failed: {e:#}", b.name());
        }
        out.push((b.name(), r));
    }
    out
}

async fn main_inner(cli: Cli) -> Result<bool> {
    let g = &cli.global;
    let started_at = chrono::Utc::now();
    let load_before = read_trimmed("/proc/loadavg");
    let db_options = g
        .database_url
        .as_deref()
        .map(local_db_options)
        .transpose()?;

    let (server_line, outcome, stop_note) = if let Command::Chain(args) = &cli.command {
        if g.server.is_some() || g.database_url.is_some() {
            bail!(
                "chain calls the container backend directly: leave out --server and --database-url"
            );
        }
        eprintln!("load-tests: running chain …");
        let r = tokio::select! {
            r = chain::run(args) => r,
            _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted")),
        };
        if let Err(e) = &r {
            eprintln!("load-tests: chain failed: {e:#}");
        }
        (
            "none (ContainerBackend called directly)".to_string(),
            Ok(("not used".to_string(), vec![("chain", r)])),
            None,
        )
    } else if let Command::Chaos(args) = &cli.command {
        if g.server.is_some() || g.database_url.is_some() || !g.serve_args.is_empty() {
            bail!(
                "chaos starts its own PostgreSQL, API and workers: leave out --server, \
                 --database-url and --serve-arg"
            );
        }
        let nekton = match &g.nekton {
            Some(p) => p.clone(),
            None => server::default_nekton()?,
        };
        eprintln!("load-tests: running chaos …");
        let r = tokio::select! {
            r = chaos::run(&nekton, args, g.keep_state) => r,
            _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted")),
        };
        let (server_line, db_line, r) = match r {
            Ok((section, server_line, db_line)) => (server_line, db_line, Ok(section)),
            Err(e) => {
                eprintln!("load-tests: chaos failed: {e:#}");
                (
                    format!(
                        "started by the benchmark: {} api + workers",
                        nekton.display()
                    ),
                    "private PostgreSQL".to_string(),
                    Err(e),
                )
            }
        };
        (server_line, Ok((db_line, vec![("chaos", r)])), None)
    } else if let Command::Versus(args) = &cli.command {
        if g.server.is_some() || g.database_url.is_some() {
            bail!(
                "versus starts its own PostgreSQL and server: leave out --server and --database-url"
            );
        }
        let nekton = match &g.nekton {
            Some(p) => p.clone(),
            None => server::default_nekton()?,
        };
        // A setup error (exit 2), before anything starts.
        versus::check_args(args)?;
        versus::check_install(&args.graphile_dir)?;
        eprintln!("load-tests: running versus …");
        let r = tokio::select! {
            r = versus::run(
                &nekton,
                args,
                &g.serve_args,
                g.keep_state,
                Duration::from_secs(g.ready_timeout_secs),
                Duration::from_secs(g.settle_secs),
            ) => r,
            _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted")),
        };
        let (server_line, db_line, r) = match r {
            Ok((section, server_line, db_line)) => (server_line, db_line, Ok(section)),
            Err(e) => {
                eprintln!("load-tests: versus failed: {e:#}");
                (
                    format!("{} serve (started by the benchmark)", nekton.display()),
                    "private PostgreSQL".to_string(),
                    Err(e),
                )
            }
        };
        (server_line, Ok((db_line, vec![("versus", r)])), None)
    } else if let Command::Scaling(args) = &cli.command {
        if g.server.is_some() || g.database_url.is_some() || !g.serve_args.is_empty() {
            bail!(
                "scaling starts its own PostgreSQL, API and workers: leave out --server, \
                 --database-url and --serve-arg"
            );
        }
        let nekton = match &g.nekton {
            Some(p) => p.clone(),
            None => server::default_nekton()?,
        };
        eprintln!("load-tests: running scaling …");
        let r = tokio::select! {
            r = scaling::run(&nekton, args, g.keep_state, Duration::from_secs(g.settle_secs)) => r,
            _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted")),
        };
        let (server_line, db_line, r) = match r {
            Ok((section, server_line, db_line)) => (server_line, db_line, Ok(section)),
            Err(e) => {
                eprintln!("load-tests: scaling failed: {e:#}");
                (
                    format!(
                        "{} api + workers (started by the benchmark)",
                        nekton.display()
                    ),
                    "private PostgreSQL".to_string(),
                    Err(e),
                )
            }
        };
        (server_line, Ok((db_line, vec![("scaling", r)])), None)
    } else if let Command::AuthOverhead(args) = &cli.command {
        if g.server.is_some() || g.database_url.is_some() {
            bail!(
                "auth-overhead starts its own servers, each with its embedded PostgreSQL: leave out \
                 --server and --database-url"
            );
        }
        let nekton = match &g.nekton {
            Some(p) => p.clone(),
            None => server::default_nekton()?,
        };
        let launcher = auth_overhead::Launcher {
            nekton: nekton.clone(),
            serve_args: g.serve_args.clone(),
            keep: g.keep_state,
            ready_timeout: Duration::from_secs(g.ready_timeout_secs),
        };
        eprintln!("load-tests: running auth-overhead …");
        let r = tokio::select! {
            r = auth_overhead::run(&launcher, args) => r,
            _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted")),
        };
        if let Err(e) = &r {
            eprintln!("load-tests: auth-overhead failed: {e:#}");
        }
        let line = format!(
            "started by the benchmark ({} build): {} serve{}{}, in turn with and without --auth=off",
            profile_of(&nekton),
            nekton.display(),
            if g.serve_args.is_empty() { "" } else { " " },
            g.serve_args.join(" ")
        );
        let db_line = "embedded, one per server (nekton serve's own)".to_string();
        (line, Ok((db_line, vec![("auth-overhead", r)])), None)
    } else {
        let mut own = None;
        let mut token = g.token.clone();
        let (url, server_line) = match &g.server {
            Some(url) => {
                let url = server::check_local_url(url)?;
                let line = format!("existing server {url}");
                (url, line)
            }
            None => {
                let nekton = match &g.nekton {
                    Some(p) => p.clone(),
                    None => server::default_nekton()?,
                };
                eprintln!("load-tests: starting {} serve …", nekton.display());
                let s = OwnServer::start(
                    &nekton,
                    g.database_url.as_deref(),
                    &g.serve_args,
                    g.keep_state,
                    Duration::from_secs(g.ready_timeout_secs),
                )
                .await?;
                let line = format!(
                    "started by load-tests ({} build): {}",
                    profile_of(&nekton),
                    s.command
                );
                let url = s.url.clone();
                token = s.admin_token();
                own = Some(s);
                (url, line)
            }
        };

        let outcome = async {
            let embedded = own.is_some() && g.database_url.is_none();
            let db_options = match (&own, db_options) {
                (_, Some(o)) => Some(o),
                (Some(s), None) => Some(dbstats::embedded_options(&s.state_dir)),
                (None, None) => None,
            };
            let db = match db_options {
                Some(o) => match dbstats::connect(o, 8).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        eprintln!("load-tests: no PostgreSQL figures: {e:#}");
                        None
                    }
                },
                None => None,
            };
            let db_line = match &db {
                Some(pool) => format!(
                    "{}{}",
                    if embedded {
                        "embedded (nekton serve's own), "
                    } else {
                        "external (--database-url), "
                    },
                    dbstats::describe(pool)
                        .await
                        .unwrap_or_else(|e| format!("{e:#}"))
                ),
                None if g.server.is_some() => {
                    "unknown (existing server; pass --database-url for its figures)".into()
                }
                None => "no access".into(),
            };
            let ctx = Ctx {
                client: nekton::cli::Client::with_token(&url, token.as_deref())?,
                token: token.clone(),
                url: url.clone(),
                server_pid: own.as_ref().map(|s| s.pid).or(g.server_pid),
                extra_pids: Vec::new(),
                server_label: "nekton",
                db,
                settle: Duration::from_secs(g.settle_secs),
            };
            let benches = plan(&cli.command);
            let results = tokio::select! {
                r = run_all(&ctx, &benches) => r,
                _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted")),
            };
            if let Some(pool) = &ctx.db {
                pool.close().await;
            }
            Ok::<_, anyhow::Error>((db_line, results))
        }
        .await;

        let stop_note = match own {
            Some(s) => {
                let tail = s.log_tail(20);
                let failed = !matches!(&outcome, Ok((_, r)) if r.iter().all(|(_, x)| x.is_ok()));
                let note = s.stop().await.unwrap_or_else(|e| format!("{e:#}"));
                if failed {
                    eprintln!("load-tests: the server's log ends with:\n{tail}");
                }
                Some(note)
            }
            None => None,
        };
        (server_line, outcome, stop_note)
    };
    let (db_line, results) = outcome?;

    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let header = vec![
        (
            "when",
            started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ),
        ("command", command_line.clone()),
        ("machine", machine_line()),
        ("load before", load_before),
        (
            "load-tests",
            format!(
                "{} build",
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
            ),
        ),
        ("server", server_line),
        ("postgres", db_line),
    ];
    let mut text = vec!["== nekton load-tests ==".to_string()];
    for (k, v) in &header {
        text.push(format!("{k:<12} {v}"));
    }
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut sections_json = serde_json::Map::new();
    let mut all_ran = true;
    for (name, r) in &results {
        match r {
            Ok(s) => {
                text.push(String::new());
                text.push(format!("## {}", s.title));
                text.extend(s.lines.iter().cloned());
                verdicts.extend(s.verdicts.iter().cloned());
                sections_json.insert((*name).into(), s.json.clone());
            }
            Err(e) => {
                all_ran = false;
                text.push(String::new());
                text.push(format!("## {name}: FAILED: {e:#}"));
                verdicts.push(Verdict::new(
                    format!("{name} benchmark"),
                    format!("failed: {e:#}"),
                    None,
                ));
                sections_json.insert((*name).into(), json!({"error": format!("{e:#}")}));
            }
        }
    }
    text.push(String::new());
    text.push("## verdicts".into());
    text.push(format!("  {:<62} {:<44} verdict", "target", "measured"));
    for v in &verdicts {
        text.push(format!(
            "  {:<62} {:<44} {}",
            v.target,
            v.measured,
            v.word()
        ));
    }
    if let Some(note) = &stop_note {
        text.push(String::new());
        text.push(format!("({note})"));
    }
    println!("{}", text.join("\n"));

    if let Some(path) = &g.json {
        let header_json: serde_json::Map<String, Value> = header
            .iter()
            .map(|(k, v)| (k.replace(' ', "_"), Value::String(v.clone())))
            .collect();
        let doc = json!({
            "header": header_json,
            "benchmarks": sections_json,
            "verdicts": verdicts.iter().map(Verdict::json).collect::<Vec<_>>(),
            "server_stop": stop_note,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("load-tests: JSON report written to {}", path.display());
    }
    Ok(all_ran)
}

fn main() {
    // The workspace builds reqwest with rustls but no default crypto provider (oci-client's
    // `rustls-tls-no-provider`); the load tests speak plain HTTP, yet building a client needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // `watchers` opens thousands of connections: lift the soft descriptor limit to the hard one.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    // Before any thread exists: the container benchmark needs its own mount namespace.
    if matches!(cli.command, Command::Containers(_))
        && let Err(e) = containers::prepare_namespace()
    {
        eprintln!("load-tests: {e:#}");
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load-tests: starting the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match runtime.block_on(main_inner(cli)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("load-tests: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_every_command() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "load-tests",
            "all",
            "--latency-jobs",
            "5",
            "--serve-arg=--slots=8",
            "--json",
            "x.json",
        ])
        .unwrap();
        assert_eq!(cli.global.serve_args, vec!["--slots=8".to_string()]);
        assert_eq!(plan(&cli.command).len(), 4);
        let cli = Cli::try_parse_from(["load-tests", "logs", "--log-mib", "1"]).unwrap();
        assert_eq!(plan(&cli.command).len(), 1);
        let cli = Cli::try_parse_from([
            "load-tests",
            "fairness",
            "--backlog-jobs",
            "1000",
            "--token",
            "nk_x",
        ])
        .unwrap();
        assert_eq!(plan(&cli.command).len(), 1);
        assert_eq!(cli.global.token.as_deref(), Some("nk_x"));
        let cli = Cli::try_parse_from([
            "load-tests",
            "auth-overhead",
            "--rounds",
            "1",
            "--throughput-jobs",
            "2000",
        ])
        .unwrap();
        assert!(
            plan(&cli.command).is_empty(),
            "auth-overhead starts its own servers"
        );
        let cli = Cli::try_parse_from([
            "load-tests",
            "grading",
            "--grading-cases",
            "10",
            "--skip-wasm",
        ])
        .unwrap();
        assert_eq!(plan(&cli.command).len(), 1);
        let cli = Cli::try_parse_from([
            "load-tests",
            "chaos",
            "--faults",
            "kill,pg-outage:5",
            "--backlog-jobs",
            "1000",
        ])
        .unwrap();
        assert!(plan(&cli.command).is_empty(), "chaos starts its own stack");
        let cli = Cli::try_parse_from(["load-tests", "chain", "--chain-jobs", "10"]).unwrap();
        assert!(plan(&cli.command).is_empty(), "chain needs no server");
        let cli = Cli::try_parse_from([
            "load-tests",
            "versus",
            "--rounds",
            "1",
            "--graphile-jobs",
            "1000",
            "--throughput-jobs",
            "500",
            "--latency-jobs",
            "10",
        ])
        .unwrap();
        assert!(plan(&cli.command).is_empty(), "versus starts its own stack");
        let cli = Cli::try_parse_from([
            "load-tests",
            "scaling",
            "--scaling-workers",
            "1,2",
            "--sizes",
            "1024,1048576",
        ])
        .unwrap();
        match &cli.command {
            Command::Scaling(a) => {
                assert_eq!(a.workers, vec![1, 2]);
                assert_eq!(a.sizes, vec![1024, 1 << 20]);
            }
            _ => panic!("not scaling"),
        }
        let cli =
            Cli::try_parse_from(["load-tests", "throughput", "--output-bytes", "1024"]).unwrap();
        assert_eq!(plan(&cli.command).len(), 1);
    }

    #[test]
    fn database_urls_must_be_local() {
        assert!(local_db_options("postgres://u@127.0.0.1/db").is_ok());
        assert!(local_db_options("postgres://u@db.example.com/db").is_err());
        assert!(local_db_options("postgres://u@%2Ftmp%2Fsock/db").is_ok());
    }

    #[test]
    fn profiles_come_from_the_path() {
        assert_eq!(profile_of(Path::new("/t/release/nekton")), "release");
        assert_eq!(profile_of(Path::new("/t/debug/nekton")), "debug");
    }
}
