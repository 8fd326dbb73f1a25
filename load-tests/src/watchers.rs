//! `watchers`: many SSE clients following live jobs on one API process — the grading UI with a
//! class watching, or a CI dashboard. `--watchers` clients (default 2,000) are spread over
//! `--watch-jobs` jobs (default 20); each job writes a stamped record every `--watch-interval-ms`
//! (the `logs` benchmark's guest: the WASI realtime clock as 16 hex digits leads every record).
//!
//! Reports: every client received every record of its job in order and the `exit` event;
//! write → receive latency of the records written after the client was connected (replayed
//! history is excluded: it measures the database, not the fan-out); the server's RSS before, at
//! its peak and after the clients left (per client = (peak − before) / clients); its open
//! descriptors before, at the peak and after (a leak shows as after > before); and the database
//! connections waiting in LISTEN (the design: one per API process, one per worker).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use nekton::api::types::LimitsSpec;
use nekton::cli::{LogStreamEvent, StdStream};
use serde_json::json;

use crate::bench::{Ctx, Section, module_spec, realtime_ns};
use crate::guests;
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// Target: p50 write → receive with the clients attached.
pub const TARGET_P50_MS: f64 = 250.0;

#[derive(Debug, Clone, clap::Args)]
pub struct WatchersArgs {
    /// SSE clients in all.
    #[arg(long, default_value_t = 2000)]
    pub watchers: usize,
    /// Jobs the clients are spread over.
    #[arg(long, default_value_t = 20)]
    pub watch_jobs: usize,
    /// Records each job writes.
    #[arg(long, default_value_t = 100)]
    pub watch_records: u32,
    /// Pause between records, in ms.
    #[arg(long, default_value_t = 100)]
    pub watch_interval_ms: u64,
    /// Longest the whole run may take.
    #[arg(long, default_value_t = 300)]
    pub watch_timeout_secs: u64,
}

const RECORD: usize = 64;

/// What one client saw.
#[derive(Default)]
struct Seen {
    records: u64,
    out_of_order: u64,
    exit: bool,
    /// Latencies (ms) of records written after this client connected.
    live_ms: Vec<f64>,
    error: Option<String>,
}

fn rss_kib(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn open_fds(pid: i32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Established TCP connections whose local port is `port` (the API's), from the server's view.
fn api_connections(pid: i32, port: u16) -> Option<u64> {
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"01") {
                n += 1;
            }
        }
    }
    Some(n)
}

async fn listening_connections(ctx: &Ctx) -> Option<i64> {
    let pool = ctx.db.as_ref()?;
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .ok()
}

/// Follows one job's log to its `exit` event.
async fn watch(client: &nekton::cli::Client, job: uuid::Uuid, records: u32) -> Seen {
    let mut seen = Seen::default();
    let mut events = Box::pin(client.follow_logs(job, None));
    let mut connected_ns: Option<i64> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(RECORD * 2);
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                seen.error = Some(format!("{e:#}"));
                return seen;
            }
        };
        let now_ns = realtime_ns();
        connected_ns.get_or_insert(now_ns);
        match ev {
            LogStreamEvent::Log {
                stream: StdStream::Stdout,
                bytes,
                ..
            } => {
                buf.extend_from_slice(&bytes);
                while buf.len() >= RECORD {
                    let rec: Vec<u8> = buf.drain(..RECORD).collect();
                    let stamp = std::str::from_utf8(&rec[..16])
                        .ok()
                        .and_then(|h| i64::from_str_radix(h, 16).ok());
                    let seq = std::str::from_utf8(&rec[17..25])
                        .ok()
                        .and_then(|h| u64::from_str_radix(h, 16).ok());
                    if seq != Some(seen.records) {
                        seen.out_of_order += 1;
                    }
                    seen.records += 1;
                    if let (Some(stamp), Some(connected)) = (stamp, connected_ns)
                        && stamp >= connected
                    {
                        seen.live_ms.push((now_ns - stamp) as f64 / 1e6);
                    }
                }
            }
            LogStreamEvent::Exit { .. } => {
                seen.exit = true;
                break;
            }
            _ => {}
        }
    }
    if seen.records != u64::from(records) && seen.error.is_none() {
        seen.error = Some(format!("received {} of {records} records", seen.records));
    }
    seen
}

pub async fn run(ctx: &Ctx, args: &WatchersArgs) -> Result<Section> {
    let Some(pid) = ctx.server_pid else {
        bail!(
            "watchers needs the server's pid for RSS and descriptors (start it, or --server-pid)"
        );
    };
    if args.watch_jobs == 0 || args.watchers < args.watch_jobs {
        bail!("--watchers must be at least --watch-jobs (and that at least 1)");
    }
    let timeout = Duration::from_secs(args.watch_timeout_secs);
    let module = ctx
        .client
        .push_module(guests::log_writer(
            args.watch_records,
            RECORD,
            args.watch_interval_ms,
        )?)
        .await
        .context("uploading the log-writer module")?;
    let run_ms = u64::from(args.watch_records) * args.watch_interval_ms;
    let mut spec = module_spec(&module.digest, "watchers", run_ms * 3 + 60_000);
    spec.limits = Some(LimitsSpec {
        output_bytes: Some(16 << 20),
        ..spec.limits.unwrap_or_default()
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);
    let fds_before = open_fds(pid);
    let listen_before = listening_connections(ctx).await;

    let mut jobs = Vec::with_capacity(args.watch_jobs);
    for _ in 0..args.watch_jobs {
        jobs.push(
            ctx.client
                .submit(&spec, None)
                .await
                .context("submitting a watched job")?
                .id,
        );
    }
    // Peak sampler.
    let peak_rss = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let peak_fds = Arc::new(AtomicU64::new(fds_before.unwrap_or(0)));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak_rss, peak_fds, stop) = (peak_rss.clone(), peak_fds.clone(), sampling.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid) {
                    peak_rss.fetch_max(r, Ordering::Relaxed);
                }
                if let Some(f) = open_fds(pid) {
                    peak_fds.fetch_max(f, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let port = ctx.client.base_url().port_or_known_default().unwrap_or(80);
    let conns_before = api_connections(pid, port);
    // The clients' own HTTP client, dropped when they are done, so its idle keep-alive
    // connections close and the server's descriptor count can come back down.
    let watch_client =
        nekton::cli::Client::with_token(ctx.client.base_url().as_str(), ctx.token.as_deref())?;
    let start = Instant::now();
    // Halfway through the jobs, with every client attached.
    let probe = async {
        tokio::time::sleep(Duration::from_millis(run_ms / 2)).await;
        listening_connections(ctx).await
    };
    let watchers = futures::stream::iter((0..args.watchers).map(|i| {
        let job = jobs[i % jobs.len()];
        let client = &watch_client;
        async move { watch(client, job, args.watch_records).await }
    }))
    .buffer_unordered(args.watchers)
    .collect::<Vec<Seen>>();
    let (seen, listen_during) =
        tokio::time::timeout(timeout, futures::future::join(watchers, probe))
            .await
            .with_context(|| format!("the watchers did not all finish within {timeout:?}"))?;
    let elapsed = start.elapsed();
    drop(watch_client);
    tokio::time::sleep(Duration::from_secs(2)).await;
    sampling.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let rss_after = rss_kib(pid);
    let fds_after = open_fds(pid);
    let conns_after = api_connections(pid, port);
    let conn_leak = match (conns_before, conns_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };

    let complete = seen
        .iter()
        .filter(|s| s.exit && s.error.is_none() && s.out_of_order == 0)
        .count();
    let first_error = seen.iter().find_map(|s| s.error.clone());
    let mut live: Vec<f64> = seen
        .iter()
        .flat_map(|s| s.live_ms.iter().copied())
        .collect();
    live.sort_by(|a, b| a.total_cmp(b));
    let dist = Dist::of(&live);
    let peak = peak_rss.load(Ordering::Relaxed);
    let per_client_kib = rss_before.map(|b| (peak.saturating_sub(b)) as f64 / args.watchers as f64);
    let fd_growth = match (fds_before, fds_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };

    let mut lines = vec![
        format!(
            "  {} clients on {} jobs ({} records each, one every {} ms); {complete} of them received every record in order and the exit event; {:.1} s",
            args.watchers,
            args.watch_jobs,
            args.watch_records,
            args.watch_interval_ms,
            elapsed.as_secs_f64()
        ),
        dist_header("write → receive, records written while connected"),
        dist_row("latency", dist.as_ref()),
        format!(
            "  server RSS: {} KiB before, {peak} KiB at the peak, {} KiB after; {} KiB per client",
            rss_before.map_or("?".into(), |v| v.to_string()),
            rss_after.map_or("?".into(), |v| v.to_string()),
            per_client_kib.map_or("?".into(), num),
        ),
        format!(
            "  server descriptors: {} before, {} at the peak, {} after ({:+}: database pool connections opened under load stay until idle); connections on the API port: {} before the clients, {} after",
            fds_before.map_or("?".into(), |v| v.to_string()),
            peak_fds.load(Ordering::Relaxed),
            fds_after.map_or("?".into(), |v| v.to_string()),
            fd_growth.unwrap_or(0),
            conns_before.map_or("?".into(), |v| v.to_string()),
            conns_after.map_or("?".into(), |v| v.to_string()),
        ),
        format!(
            "  database connections in LISTEN: {} before, {} with the clients attached",
            listen_before.map_or("?".into(), |v| v.to_string()),
            listen_during.map_or("?".into(), |v| v.to_string()),
        ),
    ];
    if let Some(e) = &first_error {
        lines.push(format!("  first client problem: {e}"));
    }
    let p50 = dist.as_ref().map(|d| d.p50);
    let verdicts = vec![
        Verdict::new(
            format!(
                "{} SSE clients: every record reaches every client",
                args.watchers
            ),
            format!("{complete} of {} complete", args.watchers),
            Some(complete == args.watchers),
        ),
        Verdict::new(
            format!("watchers: p50 write → receive ≤ {TARGET_P50_MS} ms"),
            p50.map_or("no live records".into(), |v| format!("{} ms", num(v))),
            p50.map(|v| v <= TARGET_P50_MS),
        ),
        Verdict::new(
            "watchers: no connection left on the server after the clients left",
            conn_leak.map_or("?".into(), |v| format!("{v:+} connections")),
            conn_leak.map(|v| v <= 0),
        ),
        Verdict::new(
            "watchers: LISTEN connections do not grow with clients",
            format!(
                "{} → {}",
                listen_before.map_or("?".into(), |v| v.to_string()),
                listen_during.map_or("?".into(), |v| v.to_string())
            ),
            match (listen_before, listen_during) {
                (Some(b), Some(d)) => Some(d <= b.max(2)),
                _ => None,
            },
        ),
    ];
    Ok(Section {
        title: format!(
            "watchers — {} SSE clients on one API process",
            args.watchers
        ),
        lines,
        verdicts,
        json: json!({
            "watchers": args.watchers,
            "jobs": args.watch_jobs,
            "records": args.watch_records,
            "interval_ms": args.watch_interval_ms,
            "complete": complete,
            "elapsed_s": elapsed.as_secs_f64(),
            "latency_ms": dist_json(dist.as_ref()),
            "rss_kib": {"before": rss_before, "peak": peak, "after": rss_after, "per_client": per_client_kib},
            "fds": {"before": fds_before, "peak": peak_fds.load(Ordering::Relaxed), "after": fds_after},
            "api_connections_after": conns_after,
            "listen_connections": {"before": listen_before, "during": listen_during},
            "first_error": first_error,
        }),
    })
}
