//! `latency`: hello-world Wasm jobs one at a time, each learned of in the two ways a client can:
//! *follow* — submitted with `POST /v1/jobs`, then the job's SSE log stream opened at once, the
//! clock stopped at its `exit` event; *wait* — submitted with `POST /v1/jobs?wait=…`, the clock
//! stopped when that one answer arrives with the final record and the output. The two alternate
//! (which goes first swaps every pair), so both see the same machine. The job records give the
//! server's own figures: `finished_at - created_at` and the queue wait.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use nekton::api::types::{JobSpec, JobState, OutcomeView};
use nekton::cli::{Client, LogStreamEvent, StdStream};
use serde_json::json;
use uuid::Uuid;

use crate::bench::{Ctx, Section, delta_ms, module_spec, ms};
use crate::guests;
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// Target: p50 submit-to-finished of a lone hello job.
pub const TARGET_P50_MS: f64 = 10.0;

#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Measured hello jobs, run one after another.
    #[arg(long, default_value_t = 300)]
    pub latency_jobs: usize,
    /// Unmeasured jobs first (module compilation, connection pools).
    #[arg(long, default_value_t = 20)]
    pub latency_warmup: usize,
    /// Longest a single job may take before the benchmark gives up.
    #[arg(long, default_value_t = 30)]
    pub latency_job_timeout_secs: u64,
    /// Send every submission with a fresh `Idempotency-Key`, as a client that retries safely
    /// does (the keyed path: `ON CONFLICT` in the submission's statement).
    #[arg(long)]
    pub latency_keyed: bool,
}

/// A fresh idempotency key when `keyed`.
fn key(keyed: bool) -> Option<String> {
    keyed.then(|| Uuid::now_v7().to_string())
}

/// One hello job, submitted alone and followed to its end.
pub struct One {
    pub id: Uuid,
    /// `POST /v1/jobs` answered.
    pub submit: Duration,
    /// Submitted → `exit` event on the job's SSE stream.
    pub done: Duration,
    /// Realtime clock when the client started the submission and when it got the `exit` event
    /// (comparable with the job record's timestamps: same machine, same clock).
    pub sent_at: DateTime<Utc>,
    pub exit_at: DateTime<Utc>,
}

/// Submits one hello job as `client` (with a fresh idempotency key when `keyed`) and follows its
/// log stream to the `exit` event; checks it succeeded with the hello output.
pub async fn run_one(
    client: &Client,
    spec: &JobSpec,
    timeout: Duration,
    keyed: bool,
) -> Result<One> {
    let sent_at = Utc::now();
    let start = Instant::now();
    let job = client.submit(spec, key(keyed).as_deref()).await?;
    let submit = start.elapsed();
    let mut events = Box::pin(client.follow_logs(job.id, None));
    let mut out = Vec::new();
    let exit = tokio::time::timeout(timeout, async {
        while let Some(ev) = events.next().await {
            match ev? {
                LogStreamEvent::Log {
                    stream: StdStream::Stdout,
                    bytes,
                    ..
                } => out.extend_from_slice(&bytes),
                LogStreamEvent::Exit { event, .. } => return Ok(Some(event)),
                _ => {}
            }
        }
        Ok::<_, anyhow::Error>(None)
    })
    .await
    .with_context(|| format!("job {} did not finish within {timeout:?}", job.id))??;
    let done = start.elapsed();
    let exit_at = Utc::now();
    let Some(exit) = exit else {
        bail!(
            "the log stream of job {} ended without an exit event",
            job.id
        );
    };
    check(job.id, exit.state, exit.outcome.as_ref(), &out)?;
    Ok(One {
        id: job.id,
        submit,
        done,
        sent_at,
        exit_at,
    })
}

/// Submits one hello job as `client` with `?wait=` and takes its result from that one answer;
/// checks it succeeded with the hello output.
pub async fn run_waiting(
    client: &Client,
    spec: &JobSpec,
    timeout: Duration,
    keyed: bool,
) -> Result<One> {
    let secs = u32::try_from(timeout.as_secs())
        .unwrap_or(u32::MAX)
        .clamp(1, 60);
    let sent_at = Utc::now();
    let start = Instant::now();
    let job = client
        .submit_wait(spec, key(keyed).as_deref(), secs)
        .await?;
    let done = start.elapsed();
    let exit_at = Utc::now();
    let Some(output) = &job.output else {
        bail!(
            "job {} was answered {:?} without output: it did not finish within the {secs} s wait",
            job.id,
            job.state
        );
    };
    let out = output
        .stdout
        .bytes()
        .map_err(|e| anyhow::anyhow!("job {}: stdout {e}", job.id))?;
    check(job.id, job.state, job.outcome.as_ref(), &out)?;
    Ok(One {
        id: job.id,
        submit: done,
        done,
        sent_at,
        exit_at,
    })
}

/// A hello job must have succeeded and printed the hello output.
fn check(id: Uuid, state: JobState, outcome: Option<&OutcomeView>, out: &[u8]) -> Result<()> {
    if state != JobState::Succeeded {
        bail!("hello job {id} ended {state:?} ({outcome:?}), not succeeded");
    }
    if out != guests::HELLO_OUTPUT {
        bail!(
            "hello job {id} streamed {:?}, expected {:?}",
            String::from_utf8_lossy(out),
            String::from_utf8_lossy(guests::HELLO_OUTPUT)
        );
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, args: &LatencyArgs) -> Result<Section> {
    if args.latency_jobs == 0 {
        bail!("--latency-jobs must be at least 1");
    }
    let timeout = Duration::from_secs(args.latency_job_timeout_secs.max(1));
    let module = ctx
        .client
        .push_module(guests::hello()?)
        .await
        .context("uploading the hello module")?;
    let spec = module_spec(&module.digest, "latency", 10_000);
    for i in 0..args.latency_warmup {
        run_one(&ctx.client, &spec, timeout, args.latency_keyed)
            .await
            .with_context(|| format!("warm-up job {i}"))?;
    }
    for i in 0..args.latency_warmup {
        run_waiting(&ctx.client, &spec, timeout, args.latency_keyed)
            .await
            .with_context(|| format!("warm-up job {i} (waiting)"))?;
    }
    let mark = ctx.mark().await;
    let wall = Instant::now();
    let mut runs = Vec::with_capacity(args.latency_jobs);
    let mut waits = Vec::with_capacity(args.latency_jobs);
    for i in 0..args.latency_jobs {
        let follow = || async {
            run_one(&ctx.client, &spec, timeout, args.latency_keyed)
                .await
                .with_context(|| format!("measured job {i} (follow)"))
        };
        let wait = || async {
            run_waiting(&ctx.client, &spec, timeout, args.latency_keyed)
                .await
                .with_context(|| format!("measured job {i} (wait)"))
        };
        if i % 2 == 0 {
            runs.push(follow().await?);
            waits.push(wait().await?);
        } else {
            waits.push(wait().await?);
            runs.push(follow().await?);
        }
    }
    let wall = wall.elapsed();
    let res = ctx.measure(&mark, Some(2 * args.latency_jobs as u64)).await;

    let mut server_total = Vec::new();
    let mut server_start = Vec::new();
    let mut server_run = Vec::new();
    let mut queue_wait = Vec::new();
    let mut setup = Vec::new();
    let mut job_wall = Vec::new();
    let mut to_created = Vec::new();
    let mut to_client = Vec::new();
    for r in &runs {
        let job = ctx.client.get_job(r.id).await?;
        to_created.push(delta_ms(r.sent_at, job.created_at));
        if let Some(f) = job.finished_at {
            to_client.push(delta_ms(f, r.exit_at));
        }
        if let (Some(f), Some(s)) = (job.finished_at, job.started_at) {
            server_total.push(delta_ms(job.created_at, f));
            server_start.push(delta_ms(job.created_at, s));
            server_run.push(delta_ms(s, f));
        }
        if let Some(u) = &job.usage {
            let f = |v: Option<u64>| v.map_or(f64::NAN, |x| x as f64);
            queue_wait.push(f(u.queue_wait_ms));
            setup.push(f(u.setup_ms));
            job_wall.push(f(u.wall_ms));
        }
    }
    let mut wait_server_total = Vec::new();
    let mut wait_to_client = Vec::new();
    for r in &waits {
        let job = ctx.client.get_job(r.id).await?;
        if let Some(f) = job.finished_at {
            wait_to_client.push(delta_ms(f, r.exit_at));
            wait_server_total.push(delta_ms(job.created_at, f));
        }
    }
    let wait_done: Vec<f64> = waits.iter().map(|r| ms(r.done)).collect();
    let d_wait_done = Dist::of(&wait_done);
    let d_wait_total = Dist::of(&wait_server_total);
    let d_wait_to_client = Dist::of(&wait_to_client);
    let client_done: Vec<f64> = runs.iter().map(|r| ms(r.done)).collect();
    let client_submit: Vec<f64> = runs.iter().map(|r| ms(r.submit)).collect();
    let d_done = Dist::of(&client_done);
    let d_submit = Dist::of(&client_submit);
    let d_total = Dist::of(&server_total);
    let d_start = Dist::of(&server_start);
    let d_run = Dist::of(&server_run);
    let d_wait = Dist::of(&queue_wait);
    let d_setup = Dist::of(&setup);
    let d_wall = Dist::of(&job_wall);
    let d_to_created = Dist::of(&to_created);
    let d_to_client = Dist::of(&to_client);

    let mut lines = vec![
        format!(
            "  {} sequential hello jobs followed and {} waited for, alternating, after {} warm-up \
             each; {} s in all ({} jobs/s one at a time)",
            args.latency_jobs,
            args.latency_jobs,
            args.latency_warmup,
            num(wall.as_secs_f64()),
            num(2.0 * args.latency_jobs as f64 / wall.as_secs_f64())
        ),
        dist_header("(ms)"),
        dist_row(
            "client, wait: POST ?wait= → final record + output",
            d_wait_done.as_ref(),
        ),
        dist_row("  server: finished_at − created_at", d_wait_total.as_ref()),
        dist_row(
            "  server finished_at → client has the answer",
            d_wait_to_client.as_ref(),
        ),
        dist_row("client, follow: submit → exit event (SSE)", d_done.as_ref()),
        dist_row("client: POST /v1/jobs answered", d_submit.as_ref()),
        dist_row("server: finished_at − created_at", d_total.as_ref()),
        dist_row("server: started_at − created_at", d_start.as_ref()),
        dist_row("server: finished_at − started_at", d_run.as_ref()),
        dist_row("server: usage.queue_wait_ms", d_wait.as_ref()),
        dist_row("server: usage.setup_ms", d_setup.as_ref()),
        dist_row("server: usage.wall_ms", d_wall.as_ref()),
        dist_row("client sends → server created_at", d_to_created.as_ref()),
        dist_row(
            "server finished_at → client has exit event",
            d_to_client.as_ref(),
        ),
    ];
    lines.extend(res.lines());
    // The verdict is the quicker of the two ways a client learns a job's result.
    let p50 = match (d_wait_done, d_done) {
        (Some(w), Some(f)) => Some(w.p50.min(f.p50)),
        (w, f) => w.or(f).map(|d| d.p50),
    };
    let verdict = Verdict::new(
        format!("hello job alone: p50 submit→finished ≤ {TARGET_P50_MS} ms"),
        match (d_wait_done, d_done, d_total) {
            (Some(w), Some(f), Some(s)) => format!(
                "wait {} ms, follow {} ms (server-side {} ms)",
                num(w.p50),
                num(f.p50),
                num(s.p50)
            ),
            _ => "no samples".into(),
        },
        p50.map(|p| p <= TARGET_P50_MS),
    );
    let json = json!({
        "jobs": args.latency_jobs,
        "warmup": args.latency_warmup,
        "wall_s": wall.as_secs_f64(),
        "client_submit_to_finished_p50_ms": p50,
        "client_wait_ms": dist_json(d_wait_done.as_ref()),
        "wait_server_finished_minus_created_ms": dist_json(d_wait_total.as_ref()),
        "wait_finished_to_client_ms": dist_json(d_wait_to_client.as_ref()),
        "client_submit_to_exit_ms": dist_json(d_done.as_ref()),
        "client_post_ms": dist_json(d_submit.as_ref()),
        "server_finished_minus_created_ms": dist_json(d_total.as_ref()),
        "server_started_minus_created_ms": dist_json(d_start.as_ref()),
        "server_finished_minus_started_ms": dist_json(d_run.as_ref()),
        "queue_wait_ms": dist_json(d_wait.as_ref()),
        "setup_ms": dist_json(d_setup.as_ref()),
        "job_wall_ms": dist_json(d_wall.as_ref()),
        "client_sent_to_created_ms": dist_json(d_to_created.as_ref()),
        "finished_to_client_exit_ms": dist_json(d_to_client.as_ref()),
        "resources": res.json(),
        "verdict": verdict.json(),
    });
    Ok(Section {
        title: if args.latency_keyed {
            "latency — one hello-world Wasm job at a time, each with an Idempotency-Key".into()
        } else {
            "latency — one hello-world Wasm job at a time".into()
        },
        lines,
        verdicts: vec![verdict],
        json,
    })
}
