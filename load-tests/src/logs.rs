//! `logs`: a guest writes records to stdout as fast as it can (default 256 MiB in 4 KiB writes);
//! an SSE client follows the job's log and measures the rate from its first to its last byte and
//! each record's write-to-receive latency (the guest stamps each write with the realtime clock;
//! client and server share the machine, hence the clock). A second run writes a trickle (1 KiB
//! every 10 ms for 5 s): the latency a user watching a log sees.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use nekton::api::types::{ExitEvent, JobState, LimitsSpec};
use nekton::cli::{LogStreamEvent, StdStream};
use serde_json::{Value, json};

use crate::bench::{Ctx, Resources, Section, delta_ms, module_spec, ms, realtime_ns};
use crate::guests::{self, RecordChecker};
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// Target: stdout → SSE client rate, in MB/s (10^6 bytes).
pub const TARGET_MB_PER_SEC: f64 = 50.0;
/// Target: p50 write-to-receive latency.
pub const TARGET_P50_LATENCY_MS: f64 = 250.0;

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Output of the bulk run, in MiB.
    #[arg(long, default_value_t = 256)]
    pub log_mib: u64,
    /// Bytes per write (and record) of the bulk run.
    #[arg(long, default_value_t = 4096)]
    pub write_size: usize,
    /// Writes of the trickle run.
    #[arg(long, default_value_t = 500)]
    pub trickle_writes: u32,
    /// Bytes per write of the trickle run.
    #[arg(long, default_value_t = 1024)]
    pub trickle_size: usize,
    /// Pause after each write of the trickle run, in ms.
    #[arg(long, default_value_t = 10)]
    pub trickle_interval_ms: u64,
    /// Longest either run may take.
    #[arg(long, default_value_t = 600)]
    pub log_timeout_secs: u64,
}

struct StreamRun {
    checker: RecordChecker,
    expected_records: u32,
    size: usize,
    first_recv: Option<Instant>,
    last_recv: Option<Instant>,
    /// Bytes of the first log event (received at `first_recv`, so not part of the rate).
    first_event_bytes: u64,
    log_events: u64,
    stderr_bytes: u64,
    submit_to_exit: Duration,
    exit: Box<ExitEvent>,
    resources: Resources,
    /// Realtime clock at the first and the last byte received.
    first_recv_at: Option<DateTime<Utc>>,
    last_recv_at: Option<DateTime<Utc>>,
    /// The job record's timestamps: the attempt started; the completion, written after the last
    /// chunk was stored, committed.
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl StreamRun {
    /// Bytes per second from the first to the last byte received.
    fn rate(&self) -> Option<f64> {
        let (a, b) = (self.first_recv?, self.last_recv?);
        let secs = b.duration_since(a).as_secs_f64();
        (secs > 0.0).then(|| (self.checker.bytes - self.first_event_bytes) as f64 / secs)
    }

    fn expected_bytes(&self) -> u64 {
        u64::from(self.expected_records) * self.size as u64
    }

    /// Problems with what arrived, empty if everything did.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.exit.state != JobState::Succeeded {
            p.push(format!(
                "the job ended {:?} ({:?})",
                self.exit.state, self.exit.outcome
            ));
        }
        if self.checker.bytes != self.expected_bytes() {
            p.push(format!(
                "received {} bytes, expected {}",
                self.checker.bytes,
                self.expected_bytes()
            ));
        }
        if self.checker.records() != u64::from(self.expected_records) {
            p.push(format!(
                "received {} records, expected {}",
                self.checker.records(),
                self.expected_records
            ));
        }
        if !self.checker.at_boundary() {
            p.push("the stream ended inside a record".into());
        }
        if self.checker.malformed > 0 {
            p.push(format!(
                "{} malformed records (first: {})",
                self.checker.malformed,
                self.checker.first_problem.as_deref().unwrap_or("?")
            ));
        }
        if self.stderr_bytes > 0 {
            p.push(format!("{} unexpected stderr bytes", self.stderr_bytes));
        }
        match &self.exit.usage {
            Some(u) if u.stdout_bytes == self.expected_bytes() && !u.stdout_truncated => {}
            Some(u) => p.push(format!(
                "the job's bill says {} stdout bytes (truncated: {}), expected {}",
                u.stdout_bytes,
                u.stdout_truncated,
                self.expected_bytes()
            )),
            None => p.push("the job has no usage bill".into()),
        }
        p
    }

    fn latency(&self) -> Option<Dist> {
        let v: Vec<f64> = self
            .checker
            .latencies_ns
            .iter()
            .map(|ns| *ns as f64 / 1e6)
            .collect();
        Dist::of(&v)
    }

    /// The guest's own write rate (from its first to its last timestamp), bytes/s.
    fn write_rate(&self) -> Option<f64> {
        let (a, b) = (self.checker.first_write_ns?, self.checker.last_write_ns?);
        let secs = b.saturating_sub(a) as f64 / 1e9;
        (secs > 0.0).then(|| (self.checker.bytes.saturating_sub(self.size as u64)) as f64 / secs)
    }

    /// From the job's start to its completion record (written once every chunk was stored), s.
    fn store_span_s(&self) -> Option<f64> {
        Some(delta_ms(self.started_at?, self.finished_at?) / 1000.0)
    }

    /// From the completion record to the client's last byte, ms (negative: the client had
    /// everything before the completion was recorded).
    fn finished_to_last_byte_ms(&self) -> Option<f64> {
        Some(delta_ms(self.finished_at?, self.last_recv_at?))
    }

    /// From the job's start to the client's first byte, ms.
    fn started_to_first_byte_ms(&self) -> Option<f64> {
        Some(delta_ms(self.started_at?, self.first_recv_at?))
    }

    fn json(&self) -> Value {
        json!({
            "started_to_finished_s": self.store_span_s(),
            "finished_to_last_byte_ms": self.finished_to_last_byte_ms(),
            "started_to_first_byte_ms": self.started_to_first_byte_ms(),
            "records": self.expected_records,
            "record_bytes": self.size,
            "bytes_received": self.checker.bytes,
            "log_events": self.log_events,
            "receive_rate_mb_s": self.rate().map(|r| r / 1e6),
            "guest_write_rate_mb_s": self.write_rate().map(|r| r / 1e6),
            "first_to_last_byte_s": match (self.first_recv, self.last_recv) {
                (Some(a), Some(b)) => Some(b.duration_since(a).as_secs_f64()),
                _ => None,
            },
            "submit_to_exit_s": self.submit_to_exit.as_secs_f64(),
            "job_wall_ms": self.exit.usage.as_ref().and_then(|u| u.wall_ms),
            "write_to_receive_ms": dist_json(self.latency().as_ref()),
            "problems": self.problems(),
            "resources": self.resources.json(),
        })
    }
}

async fn stream_run(
    ctx: &Ctx,
    records: u32,
    size: usize,
    pause_ms: u64,
    timeout: Duration,
    bench: &str,
) -> Result<StreamRun> {
    let module = ctx
        .client
        .push_module(guests::log_writer(records, size, pause_ms)?)
        .await
        .context("uploading the log-writer module")?;
    let expected = u64::from(records) * size as u64;
    let mut spec = module_spec(
        &module.digest,
        bench,
        u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    );
    spec.limits = Some(LimitsSpec {
        output_bytes: Some((expected * 2).clamp(16 << 20, 1 << 30)),
        ..spec.limits.unwrap_or_default()
    });
    let mark = ctx.mark().await;
    let start = Instant::now();
    let job = ctx
        .client
        .submit(&spec, None)
        .await
        .context("submitting the log job")?;
    let mut events = Box::pin(ctx.client.follow_logs(job.id, None));
    let mut checker = RecordChecker::new(size, records as usize);
    let (mut first_recv, mut last_recv) = (None, None);
    let (mut first_recv_at, mut last_recv_at) = (None, None);
    let mut first_event_bytes = 0;
    let mut log_events = 0u64;
    let mut stderr_bytes = 0u64;
    let exit = tokio::time::timeout(timeout, async {
        while let Some(ev) = events.next().await {
            match ev? {
                LogStreamEvent::Log { stream, bytes, .. } => {
                    let now = Instant::now();
                    let recv_ns = realtime_ns();
                    if stream == StdStream::Stderr {
                        stderr_bytes += bytes.len() as u64;
                        continue;
                    }
                    log_events += 1;
                    if first_recv.is_none() {
                        first_recv = Some(now);
                        first_recv_at = Some(Utc::now());
                        first_event_bytes = bytes.len() as u64;
                    }
                    last_recv = Some(now);
                    last_recv_at = Some(Utc::now());
                    checker.feed(&bytes, recv_ns);
                }
                LogStreamEvent::Exit { event, .. } => return Ok(Some(event)),
                LogStreamEvent::State { .. } | LogStreamEvent::Suite { .. } => {}
            }
        }
        Ok::<_, anyhow::Error>(None)
    })
    .await
    .with_context(|| {
        format!(
            "job {} did not finish within {timeout:?} ({} bytes received)",
            job.id, checker.bytes
        )
    })??;
    let submit_to_exit = start.elapsed();
    let resources = ctx.measure(&mark, None).await;
    let Some(exit) = exit else {
        bail!(
            "the log stream of job {} ended without an exit event",
            job.id
        );
    };
    let record = ctx
        .client
        .get_job(job.id)
        .await
        .context("reading the log job's record")?;
    Ok(StreamRun {
        first_recv_at,
        last_recv_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        checker,
        expected_records: records,
        size,
        first_recv,
        last_recv,
        first_event_bytes,
        log_events,
        stderr_bytes,
        submit_to_exit,
        exit,
        resources,
    })
}

pub async fn run(ctx: &Ctx, args: &LogsArgs) -> Result<Section> {
    if args.write_size == 0 || args.log_mib == 0 {
        bail!("--write-size and --log-mib must be at least 1");
    }
    let records = u32::try_from((args.log_mib << 20) / args.write_size as u64)
        .context("--log-mib / --write-size: too many records")?;
    let timeout = Duration::from_secs(args.log_timeout_secs.max(1));
    let bulk = stream_run(ctx, records, args.write_size, 0, timeout, "logs-bulk")
        .await
        .context("bulk log run")?;
    let trickle = stream_run(
        ctx,
        args.trickle_writes,
        args.trickle_size,
        args.trickle_interval_ms,
        timeout,
        "logs-trickle",
    )
    .await
    .context("trickle log run")?;

    let bulk_lat = bulk.latency();
    let trickle_lat = trickle.latency();
    let bulk_problems = bulk.problems();
    let trickle_problems = trickle.problems();
    let rate = bulk.rate();
    let mut lines = vec![
        format!(
            "  bulk: {} records of {} B = {} MiB; {} log events; received at {} MB/s ({} MiB/s) from first to last byte",
            records,
            args.write_size,
            args.log_mib,
            bulk.log_events,
            rate.map_or("?".into(), |r| num(r / 1e6)),
            rate.map_or("?".into(), |r| num(r / 1048576.0)),
        ),
        format!(
            "  bulk: guest wrote at {} MB/s (its first to last timestamp, under back-pressure); job wall {} ms; submit → exit {} s",
            bulk.write_rate().map_or("?".into(), |r| num(r / 1e6)),
            bulk.exit
                .usage
                .as_ref()
                .and_then(|u| u.wall_ms)
                .map_or("?".into(), |w| w.to_string()),
            num(bulk.submit_to_exit.as_secs_f64()),
        ),
        format!(
            "  bulk: job started → completion recorded (all output stored) {} s; started → client's first byte {} ms; completion recorded → client's last byte {} ms",
            bulk.store_span_s().map_or("?".into(), num),
            bulk.started_to_first_byte_ms().map_or("?".into(), num),
            bulk.finished_to_last_byte_ms().map_or("?".into(), num),
        ),
        format!(
            "  bulk: verified {}",
            if bulk_problems.is_empty() {
                "every byte, record order and record boundaries; bill matches".to_string()
            } else {
                format!("FAILED: {}", bulk_problems.join("; "))
            }
        ),
        format!(
            "  trickle: {} writes of {} B every {} ms; verified {}",
            args.trickle_writes,
            args.trickle_size,
            args.trickle_interval_ms,
            if trickle_problems.is_empty() {
                "every byte".to_string()
            } else {
                format!("FAILED: {}", trickle_problems.join("; "))
            }
        ),
        dist_header("write → SSE receive (ms)"),
        dist_row("bulk (as fast as the guest can)", bulk_lat.as_ref()),
        dist_row("trickle (1 write / interval)", trickle_lat.as_ref()),
        "  resources, bulk run:".to_string(),
    ];
    lines.extend(bulk.resources.lines());
    lines.push(format!(
        "  resources, trickle run ({} s):",
        num(ms(trickle.submit_to_exit) / 1000.0)
    ));
    lines.extend(trickle.resources.lines());
    let rate_mb = rate.map(|r| r / 1e6);
    let verdicts = vec![
        Verdict::new(
            format!("log streaming ≥ {TARGET_MB_PER_SEC} MB/s stdout → SSE client"),
            format!(
                "{} MB/s{}",
                rate_mb.map_or("?".into(), num),
                if bulk_problems.is_empty() {
                    ""
                } else {
                    " (INCOMPLETE)"
                }
            ),
            rate_mb.map(|r| r >= TARGET_MB_PER_SEC && bulk_problems.is_empty()),
        ),
        Verdict::new(
            format!("log p50 write→receive ≤ {TARGET_P50_LATENCY_MS} ms, at full rate"),
            bulk_lat.map_or("no samples".into(), |d| format!("{} ms", num(d.p50))),
            bulk_lat.map(|d| d.p50 <= TARGET_P50_LATENCY_MS && bulk_problems.is_empty()),
        ),
        Verdict::new(
            format!("log p50 write→receive ≤ {TARGET_P50_LATENCY_MS} ms, trickle"),
            trickle_lat.map_or("no samples".into(), |d| format!("{} ms", num(d.p50))),
            trickle_lat.map(|d| d.p50 <= TARGET_P50_LATENCY_MS && trickle_problems.is_empty()),
        ),
    ];
    let json = json!({
        "bulk": bulk.json(),
        "trickle": trickle.json(),
        "verdicts": verdicts.iter().map(Verdict::json).collect::<Vec<_>>(),
    });
    Ok(Section {
        title: "logs — stdout → SSE client".into(),
        lines,
        verdicts,
        json,
    })
}
