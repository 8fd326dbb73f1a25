//! `throughput`: many hello-world Wasm jobs through `POST /v1/batches`, several submitters at
//! once. The clock runs from the first submission until every batch's `GET /v1/batches/{id}`
//! says it is finished; then every batch's counts are checked (all `succeeded`), every job's
//! record is read (listing by batch) and the stored output of every job (or, past a time budget,
//! of a random sample) is compared with what the guest wrote.
//!
//! With `--queued-first` the jobs are all queued before any may run, and only the drain is
//! measured — the shape of graphile-worker's perf test (`versus`), whose jobs are queued before
//! its clock starts. They belong to a fresh tenant whose `max_running` is 0 while they are
//! submitted (a tenant at its cap is skipped by the claim); the cap is then lifted, and the rate
//! is the jobs over the server's span from the first `started_at` to the last `finished_at`
//! (the worker notices the lifted cap at its next poll, which is not the drain's cost).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use nekton::api::types::{Batch, BatchSpec, JobState};
use nekton::cli::{Client, JobFilter};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::bench::{Ctx, Section, delta_ms, ms, tenant_client};
use crate::guests;
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// Target: jobs per second, every one succeeded with its output stored.
pub const TARGET_JOBS_PER_SEC: f64 = 1000.0;

#[derive(Debug, Clone, clap::Args)]
pub struct ThroughputArgs {
    /// Jobs in all.
    #[arg(long, default_value_t = 20_000)]
    pub throughput_jobs: usize,
    /// Jobs per `POST /v1/batches`.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 4)]
    pub submitters: usize,
    /// Interval between polls of an unfinished batch.
    #[arg(long, default_value_t = 25)]
    pub poll_ms: u64,
    /// Longest the whole run may take before the benchmark gives up.
    #[arg(long, default_value_t = 900)]
    pub throughput_timeout_secs: u64,
    /// Time allowed to read back every job's stored output; past it, what was read (a random
    /// sample of at least --verify-sample jobs) is reported as a sample.
    #[arg(long, default_value_t = 180)]
    pub verify_budget_secs: u64,
    /// Smallest sample of outputs to read when not all can be read within the budget (0 with a
    /// budget of 0: none, and the output is reported not verified).
    #[arg(long, default_value_t = 1000)]
    pub verify_sample: usize,
    /// Run a guest that writes this many bytes of stdout (in 4 KiB writes) instead of the hello
    /// job's 13; every byte is stored and read back like the hello output.
    #[arg(long)]
    pub output_bytes: Option<u64>,
    /// Queue every job before any may run, then measure the drain alone (see the module's
    /// documentation); needs the admin token, to create the tenant that holds them.
    #[arg(long)]
    pub queued_first: bool,
}

/// Most output one throughput run may store (jobs × --output-bytes): keeps a run of big jobs
/// from filling the disk.
pub const MAX_TOTAL_OUTPUT: u64 = 4 << 30;

struct Submitted {
    id: Uuid,
    jobs: usize,
    started: Instant,
    answered: Instant,
}

async fn submit_all(
    client: Client,
    defaults: serde_json::Map<String, serde_json::Value>,
    total: usize,
    batch_size: usize,
    next: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Uuid>,
) -> Result<Vec<Submitted>> {
    let batches = total.div_ceil(batch_size);
    let mut mine = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= batches {
            return Ok(mine);
        }
        let n = batch_size.min(total - i * batch_size);
        let spec = BatchSpec {
            defaults: defaults.clone(),
            jobs: vec![json!({}); n],
            labels: [("load-test".to_string(), "throughput".to_string())].into(),
        };
        let started = Instant::now();
        let created = client
            .submit_batch(&spec)
            .await
            .with_context(|| format!("submitting batch {i} ({n} jobs)"))?;
        let answered = Instant::now();
        if created.job_ids.len() != n {
            bail!(
                "batch {i}: the server created {} jobs, {n} were sent",
                created.job_ids.len()
            );
        }
        // The poller may be gone only if it failed; its error is reported instead.
        let _ = tx.send(created.id);
        mine.push(Submitted {
            id: created.id,
            jobs: n,
            started,
            answered,
        });
    }
}

/// Polls batches in the order they were created until each is finished: the oldest unfinished
/// one every `interval` (batches finish roughly in order, so this keeps the load of polling low
/// and the end time accurate to about one interval).
async fn poll_batches(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Uuid>,
    interval: Duration,
    deadline: Instant,
) -> Result<Vec<(Batch, Instant)>> {
    let mut pending: VecDeque<Uuid> = VecDeque::new();
    let mut done = Vec::new();
    let mut open = true;
    loop {
        while open {
            match rx.try_recv() {
                Ok(id) => pending.push_back(id),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let Some(&id) = pending.front() else {
            if !open {
                return Ok(done);
            }
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some(id)) => pending.push_back(id),
                Ok(None) => open = false,
                Err(_) => bail!("timed out waiting for batches to be submitted"),
            }
            continue;
        };
        let batch = client
            .get_batch(id)
            .await
            .with_context(|| format!("polling batch {id}"))?;
        if batch.finished {
            done.push((batch, Instant::now()));
            pending.pop_front();
            continue;
        }
        if Instant::now() > deadline {
            bail!(
                "timed out: batch {id} still has unfinished jobs ({:?}); {} batches pending",
                batch.counts,
                pending.len()
            );
        }
        tokio::time::sleep(interval).await;
    }
}

/// A random permutation (xorshift seeded from a v4 UUID; statistical quality is not needed).
fn shuffle<T>(v: &mut [T]) {
    let mut x = (uuid::Uuid::new_v4().as_u128() as u64) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

struct OutputCheck {
    checked: usize,
    bad: usize,
    first_bad: Option<String>,
    elapsed: Duration,
}

/// Reads stored outputs in random order until all are read or the budget is spent (having read
/// at least `min_sample`).
async fn check_outputs(
    client: &Client,
    expected: &[u8],
    mut ids: Vec<Uuid>,
    budget: Duration,
    min_sample: usize,
) -> OutputCheck {
    shuffle(&mut ids);
    let start = Instant::now();
    let mut results = futures::stream::iter(ids)
        .map(|id| {
            let client = client.clone();
            async move { (id, client.plain_log_bytes(id, None).await) }
        })
        .buffer_unordered(16);
    let mut c = OutputCheck {
        checked: 0,
        bad: 0,
        first_bad: None,
        elapsed: Duration::ZERO,
    };
    // Checked before each read: a zero budget and sample read nothing (a run whose outputs are
    // known not to be stored, e.g. a knock-out of the chunks, `knockout.sh` with VERIFY_SAMPLE=0).
    while c.checked < min_sample || start.elapsed() < budget {
        let Some((id, r)) = results.next().await else {
            break;
        };
        c.checked += 1;
        let problem = match r {
            Ok(bytes) if bytes == expected => None,
            Ok(bytes) if bytes.len() > 64 => Some(format!(
                "job {id}: stored output of {} bytes differs from the {} expected",
                bytes.len(),
                expected.len()
            )),
            Ok(bytes) => Some(format!(
                "job {id}: stored output {:?}",
                String::from_utf8_lossy(&bytes)
            )),
            Err(e) => Some(format!("job {id}: {e:#}")),
        };
        if let Some(p) = problem {
            c.bad += 1;
            c.first_bad.get_or_insert(p);
        }
    }
    c.elapsed = start.elapsed();
    c
}

/// `PATCH /v1/tenants/{tenant}` with `max_running` (0 holds its jobs queued; null lifts the cap).
async fn set_max_running(ctx: &Ctx, tenant: &str, cap: serde_json::Value) -> Result<()> {
    ctx.client
        .call_json(
            reqwest::Method::PATCH,
            &format!("v1/tenants/{tenant}"),
            Some(&json!({ "max_running": cap })),
        )
        .await
        .with_context(|| format!("setting tenant {tenant}'s max_running to {cap}"))?;
    Ok(())
}

/// Every job of the batches still queued: the cap held them, so the drain is all that the
/// measurement will see.
async fn held_queued(client: &Client, submitted: &[Submitted]) -> Result<()> {
    for s in submitted {
        let b = client
            .get_batch(s.id)
            .await
            .with_context(|| format!("reading batch {}", s.id))?;
        let queued = b.counts.get("queued").copied().unwrap_or(0);
        if queued != s.jobs as i64 {
            bail!(
                "batch {}: {queued} of its {} jobs are queued (counts {:?}) before the cap was \
                 lifted: the tenant's max_running 0 did not hold them",
                s.id,
                s.jobs,
                b.counts
            );
        }
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, args: &ThroughputArgs) -> Result<Section> {
    if args.throughput_jobs == 0 || args.batch_size == 0 || args.submitters == 0 {
        bail!("--throughput-jobs, --batch-size and --submitters must be at least 1");
    }
    let total = args.throughput_jobs;
    let (guest, expected, what) = match args.output_bytes {
        None => (
            guests::hello()?,
            guests::HELLO_OUTPUT.to_vec(),
            "hello".to_string(),
        ),
        Some(n) => {
            let stored = n.saturating_mul(total as u64);
            if stored > MAX_TOTAL_OUTPUT {
                bail!(
                    "{total} jobs × {n} bytes of output would store {:.1} GiB (the limit is {} \
                     GiB): lower --throughput-jobs",
                    stored as f64 / (1u64 << 30) as f64,
                    MAX_TOTAL_OUTPUT >> 30
                );
            }
            let len = usize::try_from(n).context("--output-bytes is too large")?;
            (
                guests::sized(n)?,
                guests::sized_output(len),
                format!("{n}-byte-output"),
            )
        }
    };
    // With --queued-first the jobs belong to a tenant of their own, whose cap holds them.
    let drain_tenant = args
        .queued_first
        .then(|| format!("lt-drain-{}", &Uuid::new_v4().simple().to_string()[..8]));
    let client = match &drain_tenant {
        Some(t) => tenant_client(ctx, t, json!({})).await?,
        None => ctx.client.clone(),
    };
    let module = client
        .push_module(guest)
        .await
        .context("uploading the benchmark's module")?;
    let defaults = json!({"module": module.digest, "limits": {"wall_time_ms": 30_000}});
    let defaults = defaults.as_object().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(args.throughput_timeout_secs.max(1));

    // Warm-up: one small batch through the whole path.
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let n = total.min(100);
        submit_all(
            client.clone(),
            defaults.clone(),
            n,
            n,
            Arc::new(AtomicUsize::new(0)),
            tx,
        )
        .await
        .context("warm-up batch")?;
        poll_batches(
            client.clone(),
            rx,
            Duration::from_millis(args.poll_ms),
            deadline,
        )
        .await
        .context("warm-up batch")?;
    }
    if let Some(t) = &drain_tenant {
        set_max_running(ctx, t, json!(0)).await?;
    }

    let mut mark = ctx.mark().await;
    let mut start = Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    // Queued first, it polls a batch held by the cap until the cap is lifted (not measured).
    let poller = tokio::spawn(poll_batches(
        client.clone(),
        rx,
        Duration::from_millis(args.poll_ms.max(1)),
        deadline,
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let mut submitters = Vec::new();
    for _ in 0..args.submitters {
        submitters.push(tokio::spawn(submit_all(
            client.clone(),
            defaults.clone(),
            total,
            args.batch_size,
            next.clone(),
            tx.clone(),
        )));
    }
    drop(tx);
    let mut submitted = Vec::new();
    let mut submit_error = None;
    for s in submitters {
        match s.await.context("a submitter task failed")? {
            Ok(v) => submitted.extend(v),
            Err(e) => {
                submit_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = submit_error {
        poller.abort();
        // Jobs already queued run rather than wait forever behind a cap of 0.
        if let Some(t) = &drain_tenant
            && let Err(lift) = set_max_running(ctx, t, serde_json::Value::Null).await
        {
            return Err(e.context(format!("{lift:#}")));
        }
        return Err(e);
    }
    let submit_end = submitted.iter().map(|s| s.answered).max().unwrap_or(start);
    let submit_wall = submit_end.duration_since(start);
    if let Some(t) = &drain_tenant {
        let held = held_queued(&client, &submitted).await;
        mark = ctx.mark().await;
        start = Instant::now();
        let lifted = set_max_running(ctx, t, serde_json::Value::Null).await;
        if let Err(e) = lifted.and(held) {
            poller.abort();
            return Err(e);
        }
    }
    let finished = poller.await.context("the poller task failed")??;
    let end = finished.iter().map(|(_, t)| *t).max().unwrap_or(start);
    let wall = end.duration_since(start);
    let res = ctx.measure(&mark, Some(total as u64)).await;
    let submit_rate = total as f64 / submit_wall.as_secs_f64();
    let batch_post: Vec<f64> = submitted
        .iter()
        .map(|s| ms(s.answered.duration_since(s.started)))
        .collect();

    // Verification 1: every batch's counts.
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    let mut batch_total = 0i64;
    for (b, _) in &finished {
        batch_total += b.total;
        for (state, n) in &b.counts {
            *counts.entry(state.clone()).or_default() += n;
        }
    }
    let succeeded = counts.get("succeeded").copied().unwrap_or(0);
    let all_succeeded = succeeded == total as i64
        && batch_total == total as i64
        && finished.len() == submitted.len();

    // Verification 2: every job's record, listed by batch.
    let mut ids = Vec::with_capacity(total);
    let mut record_ok = 0usize;
    let mut queue_wait = Vec::with_capacity(total);
    let mut created_to_finished = Vec::with_capacity(total);
    let mut first_created = None;
    let mut first_started = None;
    let mut last_finished = None;
    for s in &submitted {
        let jobs = client
            .list_all_jobs(&JobFilter {
                batch: Some(s.id),
                limit: Some(500),
                ..Default::default()
            })
            .await
            .with_context(|| format!("listing the jobs of batch {}", s.id))?;
        if jobs.len() != s.jobs {
            bail!(
                "batch {} lists {} jobs, {} were submitted",
                s.id,
                jobs.len(),
                s.jobs
            );
        }
        for j in jobs {
            ids.push(j.id);
            let out_ok = j
                .usage
                .as_ref()
                .is_some_and(|u| u.stdout_bytes == expected.len() as u64 && !u.stdout_truncated);
            if j.state == JobState::Succeeded && out_ok {
                record_ok += 1;
            }
            if let Some(w) = j.usage.as_ref().and_then(|u| u.queue_wait_ms) {
                queue_wait.push(w as f64);
            }
            if let Some(f) = j.finished_at {
                created_to_finished.push(delta_ms(j.created_at, f));
                last_finished = last_finished.max(Some(f));
            }
            if let Some(t) = j.started_at {
                first_started = Some(first_started.map_or(t, |s: chrono::DateTime<_>| s.min(t)));
            }
            first_created = Some(
                first_created.map_or(j.created_at, |c: chrono::DateTime<_>| c.min(j.created_at)),
            );
        }
    }
    let span = |from: Option<chrono::DateTime<chrono::Utc>>| match (from, last_finished) {
        (Some(a), Some(b)) => Some(delta_ms(a, b) / 1000.0),
        _ => None,
    };
    let server_span = span(first_created);
    let run_span = span(first_started);
    let rate = match (&drain_tenant, run_span) {
        (None, _) => total as f64 / wall.as_secs_f64(),
        (Some(_), Some(s)) if s > 0.0 => total as f64 / s,
        (Some(_), _) => bail!("the drain's jobs carry no start and finish times to time it by"),
    };

    // Verification 3: the stored output itself.
    let outputs = check_outputs(
        &client,
        &expected,
        ids,
        Duration::from_secs(args.verify_budget_secs),
        args.verify_sample,
    )
    .await;
    let all_read = outputs.checked == total;
    // Nothing read verifies nothing (a zero sample and budget).
    let outputs_ok = outputs.bad == 0
        && (all_read || (outputs.checked > 0 && outputs.checked >= args.verify_sample));

    let d_post = Dist::of(&batch_post);
    let d_wait = Dist::of(&queue_wait);
    let d_c2f = Dist::of(&created_to_finished);
    let head = match &drain_tenant {
        None => [
            format!(
                "  {total} {what} jobs in {} batches of ≤{} by {} submitters; wall {} s (first submit → last batch finished)",
                submitted.len(),
                args.batch_size,
                args.submitters,
                num(wall.as_secs_f64())
            ),
            format!(
                "  throughput {} jobs/s   (submission alone: {} jobs/s, all submitted after {} s)",
                num(rate),
                num(submit_rate),
                num(submit_wall.as_secs_f64())
            ),
            format!(
                "  server-side span first created_at → last finished_at: {} s → {} jobs/s",
                server_span.map_or("?".into(), num),
                server_span.map_or("?".into(), |s| num(total as f64 / s))
            ),
        ],
        Some(t) => [
            format!(
                "  {total} {what} jobs queued first in {} batches of ≤{} by {} submitters ({} jobs/s, \
                 {} s), held by tenant {t}'s max_running 0; then the cap lifted",
                submitted.len(),
                args.batch_size,
                args.submitters,
                num(submit_rate),
                num(submit_wall.as_secs_f64())
            ),
            format!(
                "  drain {} jobs/s   (server-side: first started_at → last finished_at {} s; the \
                 resources below are the drain's)",
                num(rate),
                run_span.map_or("?".into(), num)
            ),
            format!(
                "  client: cap lifted → last batch seen finished {} s (includes the worker's wait \
                 for its next poll)",
                num(wall.as_secs_f64())
            ),
        ],
    };
    let mut lines = head.to_vec();
    lines.extend([
        dist_header("(ms)"),
        dist_row("client: POST /v1/batches answered", d_post.as_ref()),
        dist_row("server: usage.queue_wait_ms", d_wait.as_ref()),
        dist_row("server: finished_at − created_at", d_c2f.as_ref()),
        format!(
            "  verified: batch counts {} (states: {}); job records succeeded with {} stdout bytes: {record_ok}/{total}",
            if all_succeeded {
                "all succeeded"
            } else {
                "NOT all succeeded"
            },
            counts
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| format!("{s}={n}"))
                .collect::<Vec<_>>()
                .join(" "),
            expected.len()
        ),
        format!(
            "  verified: stored output read back for {} ({} of {total} jobs, {} s), {} wrong{}",
            if all_read {
                "ALL jobs"
            } else if outputs.checked == 0 {
                "NONE (--verify-sample 0 --verify-budget-secs 0)"
            } else {
                "a random SAMPLE"
            },
            outputs.checked,
            num(outputs.elapsed.as_secs_f64()),
            outputs.bad,
            outputs
                .first_bad
                .as_ref()
                .map_or(String::new(), |b| format!(" (first: {b})"))
        ),
    ]);
    lines.extend(res.lines());
    let verified = all_succeeded && record_ok == total && outputs_ok;
    let verdict = Verdict::new(
        format!("throughput ≥ {TARGET_JOBS_PER_SEC} {what} jobs/s, all succeeded, output stored"),
        format!(
            "{} jobs/s; {succeeded}/{total} succeeded; output {}",
            num(rate),
            if verified { "verified" } else { "NOT verified" }
        ),
        Some(rate >= TARGET_JOBS_PER_SEC && verified),
    );
    let json = json!({
        "jobs": total,
        "output_bytes_per_job": expected.len(),
        "batches": submitted.len(),
        "batch_size": args.batch_size,
        "submitters": args.submitters,
        "wall_s": wall.as_secs_f64(),
        "jobs_per_s": rate,
        "submit_wall_s": submit_wall.as_secs_f64(),
        "submit_jobs_per_s": submit_rate,
        "server_span_s": server_span,
        "queued_first": args.queued_first,
        "run_span_s": run_span,
        "batch_post_ms": dist_json(d_post.as_ref()),
        "queue_wait_ms": dist_json(d_wait.as_ref()),
        "created_to_finished_ms": dist_json(d_c2f.as_ref()),
        "counts": counts,
        "all_succeeded": all_succeeded,
        "records_ok": record_ok,
        "outputs_checked": outputs.checked,
        "outputs_all": all_read,
        "outputs_bad": outputs.bad,
        "resources": res.json(),
        "verdict": verdict.json(),
    });
    Ok(Section {
        title: match (args.output_bytes, args.queued_first) {
            (None, true) => {
                "throughput, queued first — the drain of hello-world Wasm jobs queued beforehand"
                    .into()
            }
            (Some(n), true) => {
                format!("throughput, queued first — the drain of Wasm jobs writing {n} bytes")
            }
            (None, false) => "throughput — hello-world Wasm jobs through POST /v1/batches".into(),
            (Some(n), false) => {
                format!("throughput — Wasm jobs writing {n} bytes through POST /v1/batches")
            }
        },
        lines,
        verdicts: vec![verdict],
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..1000).collect();
        shuffle(&mut v);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
