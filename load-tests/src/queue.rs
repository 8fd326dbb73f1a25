//! `queue`: the queue alone, with no HTTP and no sandbox — the reference figure
//! docs/queue.md asks for beside the end-to-end one. Jobs are inserted straight into the
//! server's database on a queue of their own (the server's worker does not take from it), then
//! several loops claim and complete them with the service's own statements
//! (`nekton::store::queue::{claim, complete}`), optionally storing a one-chunk log per job
//! (`insert_chunks`) the way the worker's writer does. Needs database access.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nekton::api::types::{JobState, UsageView};
use nekton::store::jobs::{NewBatch, NewJob, submit_batch};
use nekton::store::queue::{self, Completion, NewChunk};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::bench::{Ctx, Section, ms};
use crate::guests;
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// Jobs per variant.
    #[arg(long, default_value_t = 20_000)]
    pub queue_jobs: usize,
    /// Concurrent claim/complete loops (each its own worker id).
    #[arg(long, default_value_t = 4)]
    pub queue_workers: usize,
    /// Jobs claimed per statement (the worker claims up to its free slots, 32 by default).
    #[arg(long, default_value_t = 32)]
    pub queue_claim: i64,
    /// Longest a variant may take.
    #[arg(long, default_value_t = 600)]
    pub queue_timeout_secs: u64,
    /// Also measure claim + complete of `--queue-jobs` jobs at the head of a queue this many
    /// jobs deeper (e.g. 1000000): the deep-backlog figure beside the plain one. 0: skip.
    #[arg(long, default_value_t = 0)]
    pub queue_backlog: usize,
    /// With `--queue-backlog`: the offered load of the paced pass behind the backlog, as a
    /// fraction of the plain variant's saturated rate. The loops then claim on a fixed schedule
    /// (open loop), and each claim's latency counts from its scheduled start, so a loop that
    /// falls behind pays for it. 0: skip the paced pass.
    #[arg(long, default_value_t = 0.5)]
    pub queue_paced_load: f64,
}

/// Claims with the service's own statement; returns (job id, attempt) pairs.
async fn claim_jobs(
    pool: &PgPool,
    worker: Uuid,
    queue_name: &str,
    limit: i64,
) -> Result<Vec<(Uuid, i32)>> {
    Ok(
        queue::claim(pool, worker, queue_name, limit, Duration::from_secs(30))
            .await
            .context("claim")?
            .into_iter()
            .map(|c| (c.id, c.attempt))
            .collect(),
    )
}

#[derive(Default)]
struct LoopStats {
    completed: usize,
    claim_ms: Vec<f64>,
    log_ms: Vec<f64>,
    complete_ms: Vec<f64>,
}

/// Jobs still to be claimed by the loops of a variant (the backlog behind them stays queued).
type Quota = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// Takes up to `want` jobs of `quota`.
fn take(quota: &Quota, want: usize) -> usize {
    use std::sync::atomic::Ordering;
    let mut got = 0;
    let _ = quota.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
        got = left.min(want);
        Some(left - got)
    });
    got
}

/// When a loop claims: as fast as it can, or on a schedule.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Claim again as soon as the last claim's jobs are completed (closed loop: saturation).
    Saturated,
    /// Claim at `first`, `first + every`, `first + 2 × every`, … (open loop); a claim's latency
    /// counts from its scheduled start.
    Every { first: Instant, every: Duration },
}

async fn worker_loop(
    pool: PgPool,
    queue_name: String,
    claim: i64,
    with_log: bool,
    deadline: Instant,
    quota: Quota,
    pace: Pace,
) -> Result<LoopStats> {
    let worker = Uuid::now_v7();
    let usage = UsageView {
        queue_wait_ms: Some(1),
        setup_ms: Some(0),
        wall_ms: Some(1),
        cpu_user_ms: Some(0),
        cpu_system_ms: Some(0),
        memory_peak_bytes: Some(65536),
        stdout_bytes: guests::HELLO_OUTPUT.len() as u64,
        fuel_consumed: Some(10),
        wasm_memory_peak_bytes: Some(65536),
        ..Default::default()
    };
    let mut s = LoopStats::default();
    for round in 0u32.. {
        if Instant::now() > deadline {
            bail!("timed out after completing {} jobs", s.completed);
        }
        let n = take(&quota, usize::try_from(claim).unwrap_or(1));
        if n == 0 {
            return Ok(s);
        }
        let t = match pace {
            Pace::Saturated => Instant::now(),
            Pace::Every { first, every } => {
                let at = first + every * round;
                tokio::time::sleep_until(at.into()).await;
                at
            }
        };
        let jobs = claim_jobs(&pool, worker, &queue_name, n as i64).await?;
        s.claim_ms.push(ms(t.elapsed()));
        if jobs.len() < n {
            bail!("claimed {} jobs, {n} were asked for and queued", jobs.len());
        }
        if with_log {
            let chunks: Vec<NewChunk> = jobs
                .iter()
                .map(|&(job_id, attempt)| NewChunk {
                    job_id,
                    attempt,
                    seq: 1,
                    stream: nekton::model::ChunkKind::Output(runtime_core::Stream::Stdout),
                    data: guests::HELLO_OUTPUT.to_vec(),
                })
                .collect();
            let t = Instant::now();
            queue::insert_chunks(&pool, worker, &chunks)
                .await
                .context("insert_chunks")?;
            s.log_ms.push(ms(t.elapsed()));
        }
        let completions: Vec<Completion> = jobs
            .iter()
            .map(|&(job_id, attempt)| Completion {
                job_id,
                attempt,
                state: JobState::Succeeded,
                retry_after: None,
                reason: runtime_core::OutcomeReason::Exited,
                exit_code: Some(0),
                signal: None,
                detail: None,
                usage: usage.clone(),
                tests: None,
            })
            .collect();
        let t = Instant::now();
        let applied = queue::complete(&pool, worker, &completions)
            .await
            .context("complete")?;
        s.complete_ms.push(ms(t.elapsed()));
        if applied.len() != completions.len() {
            bail!(
                "{} of {} completions were not applied",
                completions.len() - applied.len(),
                completions.len()
            );
        }
        s.completed += applied.len();
    }
    Ok(s)
}

struct Variant {
    lines: Vec<String>,
    json: serde_json::Value,
    rate: f64,
}

/// One pass of the loops over `total` jobs at the head of `queue_name`.
struct Pass {
    all: LoopStats,
    wall: Duration,
    res: crate::bench::Resources,
}

async fn pass(
    ctx: &Ctx,
    pool: &PgPool,
    args: &QueueArgs,
    queue_name: &str,
    with_log: bool,
    total: usize,
    rate: Option<f64>,
) -> Result<Pass> {
    let deadline = Instant::now() + Duration::from_secs(args.queue_timeout_secs.max(1));
    let loops_n = args.queue_workers.max(1);
    let claim = args.queue_claim.max(1);
    let mark = ctx.mark().await;
    let start = Instant::now();
    let quota: Quota = std::sync::Arc::new(total.into());
    let mut loops = Vec::new();
    for i in 0..loops_n {
        let pace = match rate {
            None => Pace::Saturated,
            Some(rate) => {
                // Each loop claims `claim` jobs every `every`; the loops' schedules interleave.
                let every = Duration::from_secs_f64(loops_n as f64 * claim as f64 / rate);
                Pace::Every {
                    first: start + every.mul_f64(i as f64 / loops_n as f64),
                    every,
                }
            }
        };
        loops.push(tokio::spawn(worker_loop(
            pool.clone(),
            queue_name.to_owned(),
            claim,
            with_log,
            deadline,
            quota.clone(),
            pace,
        )));
    }
    let mut all = LoopStats::default();
    for l in loops {
        let s = l.await.context("a queue loop panicked")??;
        all.completed += s.completed;
        all.claim_ms.extend(s.claim_ms);
        all.log_ms.extend(s.log_ms);
        all.complete_ms.extend(s.complete_ms);
    }
    let wall = start.elapsed();
    let res = ctx.measure(&mark, Some(total as u64)).await;
    if all.completed != total {
        bail!(
            "queue-only: {} completions applied, {total} claimed",
            all.completed
        );
    }
    Ok(Pass { all, wall, res })
}

/// The variant's lines and JSON for one pass.
fn report(
    name: &str,
    args: &QueueArgs,
    with_log: bool,
    p: &Pass,
    insert_s: f64,
) -> (Vec<String>, serde_json::Value) {
    let total = p.all.completed;
    let rate = total as f64 / p.wall.as_secs_f64();
    let (d_claim, d_log, d_complete) = (
        Dist::of(&p.all.claim_ms),
        Dist::of(&p.all.log_ms),
        Dist::of(&p.all.complete_ms),
    );
    let mut lines = vec![
        format!(
            "  {name}: {total} jobs, {} loops claiming ≤{} → {} jobs/s ({} s; inserting them took {} s)",
            args.queue_workers,
            args.queue_claim,
            num(rate),
            num(p.wall.as_secs_f64()),
            num(insert_s)
        ),
        dist_header("statement (ms)"),
        dist_row("claim", d_claim.as_ref()),
    ];
    if with_log {
        lines.push(dist_row("insert_chunks", d_log.as_ref()));
    }
    lines.push(dist_row("complete", d_complete.as_ref()));
    lines.extend(p.res.lines());
    let json = json!({
        "variant": name,
        "jobs": total,
        "loops": args.queue_workers,
        "claim_limit": args.queue_claim,
        "wall_s": p.wall.as_secs_f64(),
        "jobs_per_s": rate,
        "insert_s": insert_s,
        "claim_ms": dist_json(d_claim.as_ref()),
        "insert_chunks_ms": dist_json(d_log.as_ref()),
        "complete_ms": dist_json(d_complete.as_ref()),
        "resources": p.res.json(),
    });
    (lines, json)
}

/// Inserts the variant's jobs on a queue of its own, runs the loops over them and removes what is
/// left. `paced`: behind a backlog, a second pass over as many jobs again, offered at this rate
/// (jobs/s).
async fn variant(
    ctx: &Ctx,
    pool: &PgPool,
    args: &QueueArgs,
    with_log: bool,
    backlog: usize,
    paced: Option<f64>,
) -> Result<Variant> {
    let total = args.queue_jobs;
    let passes = if paced.is_some() { 2 } else { 1 };
    let queue_name = format!(
        "load-test-queue-only-{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let tenant = nekton::store::tenants::get_tenant(pool, nekton::config::DEFAULT_TENANT)
        .await
        .context("reading the default tenant")?
        .context("the default tenant is missing from the server's database")?;
    let insert_start = Instant::now();
    let mut left = total * passes + backlog;
    while left > 0 {
        let n = left.min(1000);
        let jobs: Vec<NewJob> = (0..n)
            .map(|_| NewJob {
                id: Uuid::now_v7(),
                queue: queue_name.clone(),
                priority: 0,
                max_attempts: 1,
                labels: json!({"load-test": "queue-only"}),
                program: "sha256:queue-only".into(),
                spec: json!({}),
                spec_hash: vec![0; 32],
                required_module: None,
                idempotency_key: None,
                // As the API stores them: the claim returns it with the spec.
                traceparent: Some(nekton::telemetry::TraceParent::random().to_string()),
            })
            .collect();
        let batch = NewBatch {
            id: Uuid::now_v7(),
            labels: json!({"load-test": "queue-only"}),
            spec_hash: vec![0; 32],
            idempotency_key: None,
            jobs,
            wakes: Vec::new(),
        };
        submit_batch(pool, &tenant, &batch)
            .await
            .context("inserting queue-only jobs")?;
        left -= n;
    }
    let insert_s = insert_start.elapsed().as_secs_f64();

    let first = pass(ctx, pool, args, &queue_name, with_log, total, None).await?;
    let second = match paced {
        Some(rate) => Some(pass(ctx, pool, args, &queue_name, with_log, total, Some(rate)).await?),
        None => None,
    };
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = $1 AND state = 'succeeded'")
            .bind(&queue_name)
            .fetch_one(pool)
            .await
            .context("counting the queue-only jobs")?;
    if succeeded != (total * passes) as i64 {
        bail!(
            "queue-only: {succeeded} jobs succeeded, {} were claimed and completed",
            total * passes
        );
    }
    if backlog > 0 {
        // The backlog is not the benchmark's to keep: gone in slices (no huge transaction).
        loop {
            let gone = sqlx::query(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = $1 LIMIT 50000)",
            )
            .bind(&queue_name)
            .execute(pool)
            .await
            .context("removing the backlog")?
            .rows_affected();
            if gone == 0 {
                break;
            }
        }
    }
    let name = match (with_log, backlog > 0) {
        (true, _) => "claim + log chunk + complete".to_owned(),
        (false, false) => "claim + complete".to_owned(),
        (false, true) => format!("claim + complete behind a backlog of {backlog}"),
    };
    let (mut lines, mut json) = report(&name, args, with_log, &first, insert_s);
    json["backlog"] = json!(backlog);
    let rate = total as f64 / first.wall.as_secs_f64();
    if let (Some(offered), Some(p)) = (paced, second) {
        let name = format!(
            "paced: the same, offered {} jobs/s on a fixed schedule (open loop; a claim's \
             time counts from its scheduled start)",
            num(offered)
        );
        let (more, mut pj) = report(&name, args, with_log, &p, insert_s);
        pj["offered_jobs_per_s"] = json!(offered);
        lines.extend(more);
        json["paced"] = pj;
    }
    Ok(Variant { lines, json, rate })
}

pub async fn run(ctx: &Ctx, args: &QueueArgs) -> Result<Section> {
    let Some(pool) = &ctx.db else {
        bail!(
            "the queue-only benchmark needs the server's database: let load-tests start the server, \
             or pass --database-url with --server"
        );
    };
    if args.queue_jobs == 0 {
        bail!("--queue-jobs must be at least 1");
    }
    let plain = variant(ctx, pool, args, false, 0, None).await?;
    let logged = variant(ctx, pool, args, true, 0, None).await?;
    let mut lines = plain.lines;
    lines.extend(logged.lines);
    let mut verdicts = Vec::new();
    let mut deep_json = serde_json::Value::Null;
    if args.queue_backlog > 0 {
        let load = args.queue_paced_load;
        if !(0.0..=1.0).contains(&load) {
            bail!("--queue-paced-load must be between 0 and 1 (a fraction of the saturated rate)");
        }
        let offered = (load > 0.0).then_some(load * plain.rate);
        let deep = variant(ctx, pool, args, false, args.queue_backlog, offered).await?;
        let ratio = deep.rate / plain.rate;
        let p99 = deep.json["claim_ms"]["p99"].as_f64().unwrap_or(f64::NAN);
        lines.extend(deep.lines);
        lines.push(format!(
            "  behind the backlog: {} × the plain rate; claim p99 {} ms saturated",
            num(ratio),
            num(p99)
        ));
        verdicts.push(Verdict::new(
            "deep backlog: throughput ≥ 0.80 × the plain figure",
            format!("{} ×", num(ratio)),
            Some(ratio >= 0.8),
        ));
        verdicts.push(Verdict::new(
            "deep backlog, saturated (every loop claiming as fast as it can): claim p99 ≤ 10 ms",
            format!("{} ms", num(p99)),
            Some(p99 <= 10.0),
        ));
        if let Some(offered) = offered {
            let p99 = deep.json["paced"]["claim_ms"]["p99"]
                .as_f64()
                .unwrap_or(f64::NAN);
            verdicts.push(Verdict::new(
                format!(
                    "deep backlog, at {} × the saturated rate ({} jobs/s offered): claim p99 ≤ 10 ms",
                    num(load),
                    num(offered)
                ),
                format!("{} ms", num(p99)),
                Some(p99 <= 10.0),
            ));
        }
        deep_json = deep.json;
    }
    Ok(Section {
        title: "queue only — the service's claim/complete statements, no HTTP, no sandbox".into(),
        lines,
        verdicts,
        json: json!({
            "claim_complete": plain.json,
            "claim_log_complete": logged.json,
            "claim_complete_backlog": deep_json,
            "jobs_per_s": {"claim_complete": plain.rate, "claim_log_complete": logged.rate},
        }),
    })
}
