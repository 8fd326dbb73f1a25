//! `scaling`: how throughput and the cost per job change with the number of worker processes
//! and the size of the jobs' output. For each worker count it starts its own stack — a private
//! PostgreSQL (durable, as `nekton serve`'s), one `nekton api` and that many `nekton worker`
//! processes, all on this machine, over loopback and a Unix socket — and runs the `throughput`
//! benchmark with a guest writing each output size (every byte stored and read back), then
//! tears the stack down (so each worker count starts from an empty database).
//!
//! Output is bounded: a run queues `min(--scaling-jobs, --output-budget-mib / size)` jobs, so a
//! 10 MiB run stores about `--output-budget-mib` (plus as much WAL), not jobs × 10 MiB.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use nekton::pg::{EmbeddedOptions, EmbeddedPostgres};
use serde_json::{Value, json};

use crate::bench::{Ctx, Section};
use crate::chaos::{Proc, make_dir};
use crate::dbstats;
use crate::stats::num;
use crate::throughput::{self, ThroughputArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct ScalingArgs {
    /// Worker process counts to measure (comma-separated).
    #[arg(
        long = "scaling-workers",
        value_delimiter = ',',
        default_value = "1,2,4"
    )]
    pub workers: Vec<usize>,
    /// Output sizes per job in bytes (comma-separated): 1 KiB, 1 MiB, 10 MiB by default.
    #[arg(long, value_delimiter = ',', default_value = "1024,1048576,10485760")]
    pub sizes: Vec<u64>,
    /// Most jobs per run (small outputs).
    #[arg(long, default_value_t = 5000)]
    pub scaling_jobs: usize,
    /// Most output one run stores, in MiB: bigger outputs get fewer jobs.
    #[arg(long, default_value_t = 512)]
    pub output_budget_mib: u64,
    /// `--slots` of each worker.
    #[arg(long, default_value_t = 32)]
    pub worker_slots: usize,
    /// Jobs per `POST /v1/batches`.
    #[arg(long, default_value_t = 500)]
    pub scaling_batch_size: usize,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 4)]
    pub scaling_submitters: usize,
}

/// Jobs of one run: the job cap, or fewer so that jobs × size stays within the budget.
pub fn jobs_for(size: u64, cap: usize, budget_mib: u64) -> usize {
    let budget = budget_mib.saturating_mul(1 << 20);
    let by_budget = budget
        .checked_div(size)
        .map_or(cap, |n| usize::try_from(n).unwrap_or(cap));
    cap.min(by_budget).max(1)
}

fn size_name(b: u64) -> String {
    match b {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

struct Stack {
    root: PathBuf,
    pg: Option<EmbeddedPostgres>,
    api: Proc,
    api_url: String,
    token: Option<String>,
    workers: Vec<Proc>,
}

impl Stack {
    async fn start(nekton: &Path, root: &Path, workers: usize, slots: usize) -> Result<Stack> {
        make_dir(root)?;
        let pg = EmbeddedPostgres::start(&root.join("pg"), EmbeddedOptions::default())
            .await
            .context("starting the private PostgreSQL")?;
        pg.create_database_if_missing("nekton")
            .await
            .context("creating the nekton database")?;
        let url = pg.url("nekton");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port on 127.0.0.1")?
            .port();
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
            "--log-json".into(),
        ];
        let api = Proc::spawn(nekton, &api_args, &root.join("api.log"))?;
        let mut stack = Stack {
            root: root.to_path_buf(),
            pg: Some(pg),
            api,
            api_url: format!("http://127.0.0.1:{port}"),
            token: None,
            workers: Vec::new(),
        };
        stack.wait_api_ready(Duration::from_secs(120)).await?;
        stack.token = fs::read_to_string(api_state.join("admin.token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        for i in 0..workers {
            let state = root.join(format!("worker-{i}"));
            make_dir(&state)?;
            let args: Vec<String> = vec![
                "worker".into(),
                "--database-url".into(),
                url.clone(),
                "--state-dir".into(),
                state.display().to_string(),
                "--slots".into(),
                slots.to_string(),
                "--no-bridge-network".into(),
                "--log-json".into(),
            ];
            let log = root.join(format!("worker-{i}.log"));
            let mut p = Proc::spawn(nekton, &args, &log)?;
            crate::chaos::wait_worker_started(&mut p, i, &log).await?;
            stack.workers.push(p);
        }
        Ok(stack)
    }

    async fn wait_api_ready(&mut self, timeout: Duration) -> Result<()> {
        crate::chaos::wait_api_ready(&mut self.api, &self.api_url, timeout).await
    }

    /// SIGTERM to every process, PostgreSQL stopped, the directory removed unless kept.
    async fn stop(mut self, keep: bool) -> String {
        let pg = self.pg.take();
        crate::chaos::shutdown(self.workers.iter_mut(), &mut self.api, pg, &self.root, keep).await
    }
}

/// One measured cell of the table.
struct Cell {
    workers: usize,
    size: u64,
    jobs: usize,
    rate: Option<f64>,
    /// core-ms per job: nekton (api + workers), PostgreSQL.
    nekton_ms: Option<f64>,
    pg_ms: Option<f64>,
    others_ms: Option<f64>,
    wal_per_job: Option<f64>,
    error: Option<String>,
}

pub async fn run(
    nekton: &Path,
    args: &ScalingArgs,
    keep: bool,
    settle: Duration,
) -> Result<(Section, String, String)> {
    if args.workers.is_empty() || args.workers.contains(&0) {
        bail!("--scaling-workers must list worker counts of at least 1");
    }
    if args.sizes.is_empty() {
        bail!("--sizes must list at least one output size");
    }
    if !nekton.is_file() {
        bail!(
            "no nekton binary at {}: build it or pass --nekton PATH",
            nekton.display()
        );
    }
    let mut cells = Vec::new();
    let mut lines = Vec::new();
    let mut runs_json = Vec::new();
    let mut db_line = String::from("private PostgreSQL per worker count");
    for &w in &args.workers {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let root = PathBuf::from(format!(
            "/tmp/nekton-scaling-{}-{}",
            std::process::id(),
            &tag[..8]
        ));
        eprintln!("load-tests: scaling: starting PostgreSQL, nekton api and {w} worker(s) …");
        let stack = Stack::start(nekton, &root, w, args.worker_slots).await?;
        let outcome = async {
            let pg = stack.pg.as_ref().context("PostgreSQL is not running")?;
            let db = dbstats::connect(pg.connect_options("nekton"), 8).await?;
            db_line = format!(
                "private, one per worker count (Unix socket only), {}",
                dbstats::describe(&db)
                    .await
                    .unwrap_or_else(|e| format!("{e:#}"))
            );
            let mut extra = vec![pg.pid()];
            extra.extend(stack.workers.iter().map(|p| p.pid));
            let ctx = Ctx {
                client: nekton::cli::Client::with_token(&stack.api_url, stack.token.as_deref())?,
                token: stack.token.clone(),
                url: stack.api_url.clone(),
                server_pid: Some(stack.api.pid),
                extra_pids: extra,
                server_label: "nekton api",
                db: Some(db),
                settle,
            };
            for &size in &args.sizes {
                let jobs = jobs_for(size, args.scaling_jobs, args.output_budget_mib);
                let targs = ThroughputArgs {
                    throughput_jobs: jobs,
                    batch_size: args.scaling_batch_size.min(jobs).max(1),
                    submitters: args.scaling_submitters.max(1),
                    poll_ms: 25,
                    throughput_timeout_secs: 1800,
                    verify_budget_secs: 300,
                    verify_sample: jobs.min(1000),
                    output_bytes: Some(size),
                    queued_first: false,
                };
                eprintln!(
                    "load-tests: scaling: {w} worker(s), {} per job, {jobs} jobs …",
                    size_name(size)
                );
                let mut cell = Cell {
                    workers: w,
                    size,
                    jobs,
                    rate: None,
                    nekton_ms: None,
                    pg_ms: None,
                    others_ms: None,
                    wal_per_job: None,
                    error: None,
                };
                lines.push(format!(
                    "### {w} worker process(es) × {} slots, {} of output per job, {jobs} jobs",
                    args.worker_slots,
                    size_name(size)
                ));
                match throughput::run(&ctx, &targs).await {
                    Ok(s) => {
                        let res = &s.json["resources"];
                        let cpu = &res["cpu"];
                        let per = |v: Option<f64>| v.map(|x| x * 1000.0 / jobs as f64);
                        let api = cpu["nekton_core_s"].as_f64();
                        let workers = cpu["children_core_s"].as_f64();
                        cell.rate = s.json["jobs_per_s"].as_f64();
                        cell.nekton_ms = per(match (api, workers) {
                            (Some(a), Some(b)) => Some(a + b),
                            (a, b) => a.or(b),
                        });
                        cell.pg_ms = per(cpu["postgres_core_s"].as_f64());
                        cell.others_ms = per(cpu["other_processes_core_s"].as_f64());
                        cell.wal_per_job = res["postgres"]["wal_bytes"]
                            .as_f64()
                            .map(|b| b / jobs as f64);
                        let all_ok = s.json["all_succeeded"].as_bool() == Some(true)
                            && s.json["records_ok"].as_u64() == Some(jobs as u64)
                            && s.json["outputs_bad"].as_u64() == Some(0);
                        if !all_ok {
                            cell.error = Some("NOT all succeeded with their output".into());
                        }
                        lines.extend(s.lines.iter().cloned());
                        runs_json.push(json!({"workers": w, "output_bytes": size, "jobs": jobs, "throughput": s.json}));
                    }
                    Err(e) => {
                        eprintln!("load-tests: scaling run failed: {e:#}");
                        lines.push(format!("  FAILED: {e:#}"));
                        cell.error = Some(format!("{e:#}"));
                        runs_json.push(json!({"workers": w, "output_bytes": size, "jobs": jobs, "error": format!("{e:#}")}));
                    }
                }
                cells.push(cell);
            }
            if let Some(p) = &ctx.db {
                p.close().await;
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let note = stack.stop(keep).await;
        lines.push(format!("  (stack with {w} worker(s) stopped: {note})"));
        outcome?;
    }

    let mut table = vec![
        "### summary: jobs/s and cost per job (core-ms; nekton = api + worker processes)"
            .to_string(),
        format!(
            "  {:>7} {:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>12}",
            "workers", "output", "jobs", "jobs/s", "nekton", "postgres", "others", "WAL B/job"
        ),
    ];
    for c in &cells {
        table.push(format!(
            "  {:>7} {:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>12}{}",
            c.workers,
            size_name(c.size),
            c.jobs,
            c.rate.map_or("—".into(), num),
            c.nekton_ms.map_or("—".into(), num),
            c.pg_ms.map_or("—".into(), num),
            c.others_ms.map_or("—".into(), num),
            c.wal_per_job.map_or("—".into(), |b| format!("{:.0}", b)),
            c.error.as_ref().map_or(String::new(), |e| format!(
                "  ({})",
                e.lines().next().unwrap_or("")
            )),
        ));
    }
    table.push(format!(
        "  (jobs per run: min({}, {} MiB ÷ output size); others = CPU of processes outside the \
         benchmark — other builds on a shared machine)",
        args.scaling_jobs, args.output_budget_mib
    ));
    table.append(&mut lines);
    let json = json!({
        "cells": cells.iter().map(|c| json!({
            "workers": c.workers,
            "output_bytes": c.size,
            "jobs": c.jobs,
            "jobs_per_s": c.rate,
            "nekton_core_ms_per_job": c.nekton_ms,
            "postgres_core_ms_per_job": c.pg_ms,
            "other_processes_core_ms_per_job": c.others_ms,
            "wal_bytes_per_job": c.wal_per_job,
            "error": c.error,
        })).collect::<Vec<Value>>(),
        "runs": runs_json,
    });
    let failed = cells.iter().filter(|c| c.error.is_some()).count();
    let server_line = format!(
        "started by the benchmark ({} build): {} api + {} worker(s) × {} slots, per worker count",
        crate::profile_of(nekton),
        nekton.display(),
        args.workers
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        args.worker_slots
    );
    if failed == cells.len() {
        bail!("every scaling run failed:\n{}", table.join("\n"));
    }
    Ok((
        Section {
            title: "scaling — worker processes × output size on one PostgreSQL".into(),
            lines: table,
            verdicts: vec![crate::stats::Verdict::new(
                "scaling: every run's jobs succeeded with their output verified",
                format!("{} of {} runs", cells.len() - failed, cells.len()),
                Some(failed == 0),
            )],
            json,
        },
        server_line,
        db_line,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_outputs_get_fewer_jobs() {
        assert_eq!(jobs_for(1024, 5000, 512), 5000);
        assert_eq!(jobs_for(1 << 20, 5000, 512), 512);
        assert_eq!(jobs_for(10 << 20, 5000, 512), 51);
        assert_eq!(jobs_for(1 << 40, 5000, 512), 1);
        assert_eq!(jobs_for(0, 7, 512), 7);
    }

    #[test]
    fn sizes_are_named() {
        assert_eq!(size_name(1024), "1 KiB");
        assert_eq!(size_name(10 << 20), "10 MiB");
        assert_eq!(size_name(13), "13 B");
    }
}
