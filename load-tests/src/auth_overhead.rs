//! `auth-overhead`: what tokens cost. The benchmark starts its own servers, alternately with
//! auth on (every request carries the admin token: hashed, looked up — cached for 1 s —, its
//! tenant's settings read through the 1 s tenant cache) and with `--auth off` (loopback only: no
//! token, every request is the default tenant), in ABBA order over the rounds so that drift on
//! the machine falls on both. On each fresh server it runs, in this order: `GET /v1/me` one at a
//! time (the auth layer and HTTP alone, no database), the `latency` benchmark (hello jobs one at
//! a time: `POST /v1/jobs` answered, submit → `exit` event) and the `throughput` benchmark (hello
//! jobs through batches). The jobs run as the default tenant either way, so the quota admission
//! (nothing to check for a tenant without quotas) is the same on both sides: the difference is
//! the token check.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nekton::cli::Client;
use serde_json::{Value, json};

use crate::bench::{Ctx, Section, ms};
use crate::latency::{self, LatencyArgs};
use crate::server::OwnServer;
use crate::stats::{Dist, Verdict, num};
use crate::throughput::{self, ThroughputArgs};

/// Target: throughput lost to auth, as a fraction of the throughput with auth off.
pub const TARGET_THROUGHPUT_LOSS: f64 = 0.05;
/// Target: p50 latency added by auth.
pub const TARGET_P50_ADDED_MS: f64 = 0.2;

#[derive(Debug, Clone, clap::Args)]
pub struct AuthOverheadArgs {
    /// Rounds; each starts one server with auth on and one with --auth off (ABBA order).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// `GET /v1/me` requests one at a time on each server.
    #[arg(long, default_value_t = 2000)]
    pub me_requests: usize,
    #[command(flatten)]
    pub latency: LatencyArgs,
    #[command(flatten)]
    pub throughput: ThroughputArgs,
}

/// How to start the servers (from the global options).
pub struct Launcher {
    pub nekton: PathBuf,
    pub serve_args: Vec<String>,
    pub keep: bool,
    pub ready_timeout: Duration,
}

/// One server's figures.
struct Run {
    auth: bool,
    me_p50: f64,
    post_p50: f64,
    done_p50: f64,
    jobs_per_s: f64,
    submit_jobs_per_s: f64,
    latency: Value,
    throughput: Value,
}

fn p50(v: &Value, key: &str) -> Result<f64> {
    v[key]["p50"]
        .as_f64()
        .with_context(|| format!("the report has no {key}.p50"))
}

async fn me_p50(client: &Client, n: usize) -> Result<f64> {
    let url = client.url("v1/me")?;
    for _ in 0..50.min(n) {
        client
            .http()
            .get(url.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let r = client.http().get(url.clone()).send().await?;
        let status = r.status();
        r.bytes().await?;
        samples.push(ms(start.elapsed()));
        if !status.is_success() {
            bail!("GET /v1/me answered {status}");
        }
    }
    Dist::of(&samples)
        .map(|d| d.p50)
        .context("no GET /v1/me samples")
}

async fn one_server(launcher: &Launcher, auth: bool, args: &AuthOverheadArgs) -> Result<Run> {
    let mut serve_args = launcher.serve_args.clone();
    if !auth {
        serve_args.push("--auth=off".into());
    }
    let server = OwnServer::start(
        &launcher.nekton,
        None,
        &serve_args,
        launcher.keep,
        launcher.ready_timeout,
    )
    .await?;
    let outcome = async {
        let token =
            if auth {
                Some(server.admin_token().context(
                    "the server with auth on wrote no admin token to its state directory",
                )?)
            } else {
                None
            };
        let ctx = Ctx {
            client: Client::with_token(&server.url, token.as_deref())?,
            token,
            url: server.url.clone(),
            server_pid: Some(server.pid),
            extra_pids: Vec::new(),
            server_label: "nekton",
            db: None,
            settle: Duration::ZERO,
        };
        let me = me_p50(&ctx.client, args.me_requests.max(1)).await?;
        let lat = latency::run(&ctx, &args.latency).await?;
        let thr = throughput::run(&ctx, &args.throughput).await?;
        Ok::<_, anyhow::Error>(Run {
            auth,
            me_p50: me,
            post_p50: p50(&lat.json, "client_post_ms")?,
            done_p50: p50(&lat.json, "client_submit_to_exit_ms")?,
            jobs_per_s: thr.json["jobs_per_s"].as_f64().context("no jobs_per_s")?,
            submit_jobs_per_s: thr.json["submit_jobs_per_s"]
                .as_f64()
                .context("no submit_jobs_per_s")?,
            latency: lat.json,
            throughput: thr.json,
        })
    }
    .await;
    let stopped = server.stop().await;
    let run = outcome.with_context(|| format!("the server with auth {}", on_off(auth)))?;
    stopped?;
    Ok(run)
}

fn on_off(auth: bool) -> &'static str {
    if auth { "on" } else { "off" }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub async fn run(launcher: &Launcher, args: &AuthOverheadArgs) -> Result<Section> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        // ABBA: on, off, off, on, on, off, ...
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for auth in order {
            eprintln!(
                "load-tests: auth-overhead round {} of {}: server with auth {} …",
                round + 1,
                args.rounds,
                on_off(auth)
            );
            runs.push(one_server(launcher, auth, args).await?);
        }
    }
    let side = |auth: bool| runs.iter().filter(move |r| r.auth == auth);
    let on_thr = mean(side(true).map(|r| r.jobs_per_s));
    let off_thr = mean(side(false).map(|r| r.jobs_per_s));
    let on_post = mean(side(true).map(|r| r.post_p50));
    let off_post = mean(side(false).map(|r| r.post_p50));
    let on_me = mean(side(true).map(|r| r.me_p50));
    let off_me = mean(side(false).map(|r| r.me_p50));
    let on_done = mean(side(true).map(|r| r.done_p50));
    let off_done = mean(side(false).map(|r| r.done_p50));
    let on_sub = mean(side(true).map(|r| r.submit_jobs_per_s));
    let off_sub = mean(side(false).map(|r| r.submit_jobs_per_s));
    let loss = (off_thr - on_thr) / off_thr;
    let added_post = on_post - off_post;

    let mut lines = vec![
        format!(
            "  {} servers, each fresh (own embedded PostgreSQL): GET /v1/me ×{}, latency ({} jobs after {} warm-up), throughput ({} jobs in batches of {} by {} submitters)",
            runs.len(),
            args.me_requests,
            args.latency.latency_jobs,
            args.latency.latency_warmup,
            args.throughput.throughput_jobs,
            args.throughput.batch_size,
            args.throughput.submitters
        ),
        format!(
            "  {:<8} {:>12} {:>14} {:>16} {:>14} {:>18}",
            "auth", "/v1/me p50", "POST p50 (ms)", "submit→exit p50", "jobs/s", "submission jobs/s"
        ),
    ];
    for r in &runs {
        lines.push(format!(
            "  {:<8} {:>12} {:>14} {:>16} {:>14} {:>18}",
            on_off(r.auth),
            num(r.me_p50),
            num(r.post_p50),
            num(r.done_p50),
            num(r.jobs_per_s),
            num(r.submit_jobs_per_s)
        ));
    }
    for auth in [true, false] {
        let s = |f: fn(&Run) -> f64| mean(side(auth).map(f));
        lines.push(format!(
            "  {:<8} {:>12} {:>14} {:>16} {:>14} {:>18}",
            format!("mean {}", on_off(auth)),
            num(s(|r| r.me_p50)),
            num(s(|r| r.post_p50)),
            num(s(|r| r.done_p50)),
            num(s(|r| r.jobs_per_s)),
            num(s(|r| r.submit_jobs_per_s))
        ));
    }
    lines.push(format!(
        "  auth on − off: /v1/me p50 {:+.3} ms, POST /v1/jobs p50 {:+.3} ms, submit → exit p50 {:+.3} ms, throughput {:+.1} % ({} vs {} jobs/s), submission {:+.1} %",
        on_me - off_me,
        added_post,
        on_done - off_done,
        -loss * 100.0,
        num(on_thr),
        num(off_thr),
        (on_sub - off_sub) / off_sub * 100.0
    ));
    let v_thr = Verdict::new(
        format!(
            "auth costs ≤ {}% of hello throughput",
            TARGET_THROUGHPUT_LOSS * 100.0
        ),
        format!(
            "{} vs {} jobs/s off: {:.1} %",
            num(on_thr),
            num(off_thr),
            loss * 100.0
        ),
        Some(loss <= TARGET_THROUGHPUT_LOSS),
    );
    let v_lat = Verdict::new(
        format!("auth adds ≤ {TARGET_P50_ADDED_MS} ms to POST /v1/jobs p50"),
        format!(
            "{} vs {} ms off: {:+.3} ms",
            num(on_post),
            num(off_post),
            added_post
        ),
        Some(added_post <= TARGET_P50_ADDED_MS),
    );
    let json = json!({
        "rounds": args.rounds,
        "runs": runs.iter().map(|r| json!({
            "auth": on_off(r.auth),
            "me_p50_ms": r.me_p50,
            "post_p50_ms": r.post_p50,
            "submit_to_exit_p50_ms": r.done_p50,
            "jobs_per_s": r.jobs_per_s,
            "submit_jobs_per_s": r.submit_jobs_per_s,
            "latency": r.latency,
            "throughput": r.throughput,
        })).collect::<Vec<_>>(),
        "mean": {
            "on": {"me_p50_ms": on_me, "post_p50_ms": on_post, "submit_to_exit_p50_ms": on_done, "jobs_per_s": on_thr},
            "off": {"me_p50_ms": off_me, "post_p50_ms": off_post, "submit_to_exit_p50_ms": off_done, "jobs_per_s": off_thr},
        },
        "throughput_loss": loss,
        "post_p50_added_ms": added_post,
        "verdicts": [v_thr.json(), v_lat.json()],
    });
    Ok(Section {
        title: "auth-overhead — the same benchmarks with auth on and with --auth off".into(),
        lines,
        verdicts: vec![v_thr, v_lat],
        json,
    })
}
