//! `fairness`: one tenant's backlog must not delay another tenant's lone jobs. Two fresh tenants
//! (weight 1, no quotas) each upload the hello module. B runs hello jobs one at a time on the
//! idle server (submit → `exit` event on the SSE stream, as in `latency`); then A queues a large
//! backlog of hello jobs in batches, and B at once runs the same number of jobs one at a time
//! again, while the worker is busy with A's backlog. The target compares B's two p50s. Then A's
//! backlog is waited for (every job must succeed), which also gives A's drain rate.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nekton::api::types::{Batch, BatchSpec};
use nekton::cli::Client;
use serde_json::json;
use uuid::Uuid;

use crate::bench::{Ctx, Section, delta_ms, module_spec, ms, tenant_client};
use crate::guests;
use crate::latency::{One, run_one};
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// Target: B's p50 with A's backlog at most this many times B's p50 on the idle server.
pub const TARGET_RATIO: f64 = 3.0;

#[derive(Debug, Clone, clap::Args)]
pub struct FairnessArgs {
    /// Hello jobs tenant A queues before B's second run.
    #[arg(long, default_value_t = 50_000)]
    pub backlog_jobs: usize,
    /// Jobs per `POST /v1/batches` of A's backlog (1 to 10,000).
    #[arg(long, default_value_t = 5_000)]
    pub backlog_batch: usize,
    /// B's measured jobs in each phase, one at a time.
    #[arg(long, default_value_t = 20)]
    pub probe_jobs: usize,
    /// B's unmeasured jobs first (module compilation, connection pools).
    #[arg(long, default_value_t = 5)]
    pub probe_warmup: usize,
    /// Longest one of B's jobs may take.
    #[arg(long, default_value_t = 60)]
    pub probe_timeout_secs: u64,
    /// Longest A's backlog may take to drain after the measurement.
    #[arg(long, default_value_t = 900)]
    pub drain_timeout_secs: u64,
}

/// B's jobs of one phase, with the server's figures from each job record.
struct Phase {
    runs: Vec<One>,
    /// `finished_at − created_at` and `started_at − created_at` of each job (server clock).
    server_total: Vec<f64>,
    server_start: Vec<f64>,
}

async fn probe(client: &Client, digest: &str, n: usize, timeout: Duration) -> Result<Phase> {
    let spec = module_spec(digest, "fairness", 10_000);
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        runs.push(
            run_one(client, &spec, timeout, false)
                .await
                .with_context(|| format!("tenant B's job {i}"))?,
        );
    }
    let mut server_total = Vec::new();
    let mut server_start = Vec::new();
    for r in &runs {
        let job = client.get_job(r.id).await?;
        if let (Some(s), Some(f)) = (job.started_at, job.finished_at) {
            server_total.push(delta_ms(job.created_at, f));
            server_start.push(delta_ms(job.created_at, s));
        }
    }
    Ok(Phase {
        runs,
        server_total,
        server_start,
    })
}

impl Phase {
    fn done(&self) -> Option<Dist> {
        Dist::of(&self.runs.iter().map(|r| ms(r.done)).collect::<Vec<_>>())
    }
}

/// Jobs of A's batches still waiting (queued or scheduled) and finished, from the batch counts.
async fn backlog_counts(client: &Client, batches: &[Uuid]) -> Result<(i64, i64)> {
    let (mut waiting, mut finished) = (0, 0);
    for id in batches {
        let b = client.get_batch(*id).await?;
        for (state, n) in &b.counts {
            match state.as_str() {
                "queued" | "scheduled" => waiting += n,
                "succeeded" | "failed" | "cancelled" | "error" => finished += n,
                _ => {}
            }
        }
    }
    Ok((waiting, finished))
}

/// Waits until every batch is finished (the oldest unfinished one polled every 250 ms).
async fn drain(client: &Client, batches: &[Uuid], deadline: Instant) -> Result<Vec<Batch>> {
    let mut done = Vec::new();
    for id in batches {
        loop {
            let b = client.get_batch(*id).await?;
            if b.finished {
                done.push(b);
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for A's backlog: batch {id} still has {:?}",
                    b.counts
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(done)
}

pub async fn run(ctx: &Ctx, args: &FairnessArgs) -> Result<Section> {
    if args.probe_jobs == 0 || args.backlog_jobs == 0 || !(1..=10_000).contains(&args.backlog_batch)
    {
        bail!("--probe-jobs and --backlog-jobs must be at least 1, --backlog-batch 1 to 10,000");
    }
    let timeout = Duration::from_secs(args.probe_timeout_secs.max(1));
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let a = tenant_client(ctx, &format!("lt-fair-a-{tag}"), json!({})).await?;
    let b = tenant_client(ctx, &format!("lt-fair-b-{tag}"), json!({})).await?;
    let a_hello = a
        .push_module(guests::hello()?)
        .await
        .context("uploading A's hello module")?
        .digest;
    let b_hello = b
        .push_module(guests::hello()?)
        .await
        .context("uploading B's hello module")?
        .digest;

    probe(&b, &b_hello, args.probe_warmup, timeout)
        .await
        .context("warm-up")?;
    let idle = probe(&b, &b_hello, args.probe_jobs, timeout)
        .await
        .context("B on the idle server")?;

    // A's backlog, in batches, one after another.
    let mark = ctx.mark().await;
    let submit_start = Instant::now();
    let mut batches = Vec::new();
    let mut left = args.backlog_jobs;
    let mut defaults = serde_json::Map::new();
    defaults.insert("module".into(), json!(a_hello));
    defaults.insert("limits".into(), json!({"wall_time_ms": 30_000}));
    while left > 0 {
        let n = left.min(args.backlog_batch);
        let created = a
            .submit_batch(&BatchSpec {
                defaults: defaults.clone(),
                jobs: vec![json!({}); n],
                labels: [("load-test".to_string(), "fairness".to_string())].into(),
            })
            .await
            .with_context(|| format!("submitting a batch of {n} of A's jobs"))?;
        batches.push(created.id);
        left -= n;
    }
    let submit_wall = submit_start.elapsed();

    // B again, at once, while the worker is busy with A's backlog.
    let loaded_start = Instant::now();
    let loaded = probe(&b, &b_hello, args.probe_jobs, timeout)
        .await
        .context("B behind A's backlog")?;
    let loaded_wall = loaded_start.elapsed();
    let (waiting_after, finished_after) = backlog_counts(&a, &batches).await?;

    // A's backlog drains; every job must succeed.
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_secs.max(1));
    let done = drain(&a, &batches, deadline).await?;
    let drain_wall = submit_start.elapsed();
    let res = ctx
        .measure(&mark, Some((args.backlog_jobs + args.probe_jobs) as u64))
        .await;
    let succeeded: i64 = done
        .iter()
        .map(|b| b.counts.get("succeeded").copied().unwrap_or(0))
        .sum();

    let d_idle = idle.done();
    let d_loaded = loaded.done();
    let d_idle_server = Dist::of(&idle.server_total);
    let d_loaded_server = Dist::of(&loaded.server_total);
    let d_idle_start = Dist::of(&idle.server_start);
    let d_loaded_start = Dist::of(&loaded.server_start);
    let d_idle_post = Dist::of(&idle.runs.iter().map(|r| ms(r.submit)).collect::<Vec<_>>());
    let d_loaded_post = Dist::of(&loaded.runs.iter().map(|r| ms(r.submit)).collect::<Vec<_>>());
    let ratio = match (d_idle, d_loaded) {
        (Some(i), Some(l)) if i.p50 > 0.0 => Some(l.p50 / i.p50),
        _ => None,
    };
    let mut lines = vec![
        format!(
            "  B: {} hello jobs one at a time on the idle server; then A queued {} hello jobs in {} batches of ≤{} ({} s, {} jobs/s); then B's {} jobs again ({} s)",
            args.probe_jobs,
            args.backlog_jobs,
            batches.len(),
            args.backlog_batch,
            num(submit_wall.as_secs_f64()),
            num(args.backlog_jobs as f64 / submit_wall.as_secs_f64()),
            args.probe_jobs,
            num(loaded_wall.as_secs_f64()),
        ),
        format!(
            "  when B's last job had finished, A still had {waiting_after} jobs waiting ({finished_after} done); A's backlog drained {} s after its first batch ({} jobs/s), {succeeded}/{} succeeded",
            num(drain_wall.as_secs_f64()),
            num(args.backlog_jobs as f64 / drain_wall.as_secs_f64()),
            args.backlog_jobs
        ),
        dist_header("(ms)"),
        dist_row("B idle: submit → exit event (SSE)", d_idle.as_ref()),
        dist_row(
            "B behind A's backlog: submit → exit event",
            d_loaded.as_ref(),
        ),
        dist_row("B idle: POST /v1/jobs answered", d_idle_post.as_ref()),
        dist_row(
            "B behind backlog: POST /v1/jobs answered",
            d_loaded_post.as_ref(),
        ),
        dist_row(
            "B idle: server finished_at − created_at",
            d_idle_server.as_ref(),
        ),
        dist_row(
            "B behind backlog: finished_at − created_at",
            d_loaded_server.as_ref(),
        ),
        dist_row(
            "B idle: server started_at − created_at",
            d_idle_start.as_ref(),
        ),
        dist_row(
            "B behind backlog: started_at − created_at",
            d_loaded_start.as_ref(),
        ),
        format!(
            "  ratio of B's p50s (behind backlog / idle): {}",
            ratio.map_or("?".into(), num)
        ),
        "  (resources: from A's first batch until its backlog drained, B's second run included)"
            .into(),
    ];
    lines.extend(res.lines());
    let all_ok = succeeded == args.backlog_jobs as i64;
    let verdict = Verdict::new(
        format!("B's p50 behind A's backlog ≤ {TARGET_RATIO} × B's p50 idle"),
        match (d_idle, d_loaded, ratio) {
            (Some(i), Some(l), Some(r)) => format!(
                "{} ms vs {} ms idle: {}×{}",
                num(l.p50),
                num(i.p50),
                num(r),
                if all_ok {
                    ""
                } else {
                    " (A's jobs NOT all succeeded)"
                }
            ),
            _ => "no samples".into(),
        },
        ratio.map(|r| r <= TARGET_RATIO && all_ok),
    );
    let json = json!({
        "probe_jobs": args.probe_jobs,
        "backlog_jobs": args.backlog_jobs,
        "backlog_batches": batches.len(),
        "backlog_submit_s": submit_wall.as_secs_f64(),
        "loaded_phase_s": loaded_wall.as_secs_f64(),
        "a_waiting_after_b": waiting_after,
        "a_finished_after_b": finished_after,
        "a_drain_s": drain_wall.as_secs_f64(),
        "a_succeeded": succeeded,
        "b_idle_submit_to_exit_ms": dist_json(d_idle.as_ref()),
        "b_loaded_submit_to_exit_ms": dist_json(d_loaded.as_ref()),
        "b_idle_post_ms": dist_json(d_idle_post.as_ref()),
        "b_loaded_post_ms": dist_json(d_loaded_post.as_ref()),
        "b_idle_server_total_ms": dist_json(d_idle_server.as_ref()),
        "b_loaded_server_total_ms": dist_json(d_loaded_server.as_ref()),
        "b_idle_server_start_ms": dist_json(d_idle_start.as_ref()),
        "b_loaded_server_start_ms": dist_json(d_loaded_start.as_ref()),
        "ratio_p50": ratio,
        "resources": res.json(),
        "verdict": verdict.json(),
    });
    Ok(Section {
        title: "fairness — tenant B's lone jobs, idle and behind tenant A's backlog".into(),
        lines,
        verdicts: vec![verdict],
        json,
    })
}
