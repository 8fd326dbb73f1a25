//! `chain`: what a test suite's case costs on the container backend — a run on a kept build's
//! base (`chain.base`) against a plain container job, both `/bin/true` from the same busybox
//! image, interleaved, start → exit of `ContainerBackend::run` (no server: the backend is called
//! directly). A case skips the image lookup and lease (the base holds them), and adds a clone of
//! the base's mount, its attachment and one more overlay lower layer. Also: a case running the
//! build's own program (`/work/prog`, a shell script the build wrote), and a build itself
//! (`chain.keep`: the clone handed to the job, the kept layer made read-only).
//!
//! Root only; needs busybox-static. Target (the grading issue): a case's start → exit p50 ≤
//! 1.2 × a plain job's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use container_backend::{ContainerBackend, ContainerConfig};
use image_store::{ImageService, ImageStore, RegistryOptions, StoreLimits};
use runtime_core::{
    Backend, Base, CancellationToken, Chain, ContainerOptions, ExecReport, ExecRequest, JobIo,
    Limits, OutputSink, Program,
};
use serde_json::json;

use crate::bench::{Section, ms};
use crate::containers::{REFERENCE, layer_tar, write_layout};
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// The build: a program the cases run.
const BUILD: &str = "/bin/busybox mkdir -p /work && \
    printf '#!/bin/sh\\nexit 0\\n' > /work/prog && /bin/busybox chmod +x /work/prog";

#[derive(Debug, Clone, clap::Args)]
pub struct ChainArgs {
    /// Measured runs of each kind.
    #[arg(long, default_value_t = 100)]
    pub chain_jobs: usize,
    /// Unmeasured runs of each kind first.
    #[arg(long, default_value_t = 5)]
    pub chain_warmup: usize,
    /// Where to find busybox (a static one: the image must not need a loader).
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: std::path::PathBuf,
}

pub async fn run(args: &ChainArgs) -> Result<Section> {
    if args.chain_jobs == 0 {
        bail!("--chain-jobs must be at least 1");
    }
    let busybox = std::fs::read(&args.busybox).with_context(|| {
        format!(
            "reading {} (install busybox-static)",
            args.busybox.display()
        )
    })?;
    let work = tempfile::Builder::new()
        .prefix("nekton-chain-")
        .tempdir()
        .context("creating the benchmark's work directory")?;
    let base_dir = work.path();
    let layout = base_dir.join("layout");
    write_layout(&layout, &layer_tar(&busybox)?)?;
    let store = Arc::new(
        ImageStore::open(base_dir.join("images"), StoreLimits::default())
            .context("opening the benchmark's image store")?,
    );
    let images = ImageService::new(store, RegistryOptions::default())?;
    images
        .import(&layout, Some(REFERENCE), None)
        .await
        .context("importing the busybox image into the benchmark's store")?;
    let backend = ContainerBackend::new(
        ContainerConfig {
            state_dir: base_dir.join("containers"),
            ..ContainerConfig::default()
        },
        images,
    )
    .context("starting the container backend (root)")?;

    let (_, built) = timed(
        &backend,
        request("build", &["/bin/sh", "-c", BUILD], true, None),
    )
    .await?;
    let base = built.kept.context("the build's report kept no base")?;

    let labels = [
        "plain job: /bin/true",
        "case on a base: /bin/true",
        "case on a base: /work/prog (the build's)",
        "build (chain.keep): the program above",
    ];
    let mut samples: [Vec<f64>; 4] = Default::default();
    let mut setup: [Vec<f64>; 2] = Default::default();
    let total = args.chain_warmup + args.chain_jobs;
    let started = Instant::now();
    for i in 0..total {
        let measured = i >= args.chain_warmup;
        let runs = [
            request(&format!("plain-{i}"), &["/bin/true"], false, None),
            request(&format!("case-{i}"), &["/bin/true"], false, Some(&base)),
            request(&format!("prog-{i}"), &["/work/prog"], false, Some(&base)),
            request(&format!("build-{i}"), &["/bin/sh", "-c", BUILD], true, None),
        ];
        for (k, r) in runs.into_iter().enumerate() {
            let (d, report) = timed(&backend, r).await?;
            if measured {
                samples[k].push(ms(d));
                if k < 2 {
                    setup[k].push(ms(report.usage.setup));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let dists: Vec<Option<Dist>> = samples.iter().map(|s| Dist::of(s)).collect();
    let setups: Vec<Option<Dist>> = setup.iter().map(|s| Dist::of(s)).collect();
    let mut lines = vec![
        format!(
            "  busybox image, {} measured runs of each kind after {} warm-up, interleaved \
             ({} s in all)",
            args.chain_jobs,
            args.chain_warmup,
            num(elapsed.as_secs_f64())
        ),
        dist_header("(ms, ContainerBackend::run start → exit)"),
    ];
    for (label, d) in labels.iter().zip(&dists) {
        lines.push(dist_row(label, d.as_ref()));
    }
    lines.push(dist_row("  plain job usage.setup", setups[0].as_ref()));
    lines.push(dist_row("  case usage.setup", setups[1].as_ref()));
    if let (Some(p), Some(c)) = (&dists[0], &dists[1]) {
        lines.push(format!(
            "  a case on a base vs a plain job (p50): {} ms vs {} ms ({:+} ms)",
            num(c.p50),
            num(p.p50),
            num(c.p50 - p.p50)
        ));
    }
    let json = json!({
        "jobs_per_kind": args.chain_jobs,
        "warmup": args.chain_warmup,
        "kinds": labels.iter().zip(&dists).map(|(l, d)| json!({
            "kind": l, "ms": dist_json(d.as_ref()),
        })).collect::<Vec<_>>(),
        "plain_setup_ms": dist_json(setups[0].as_ref()),
        "case_setup_ms": dist_json(setups[1].as_ref()),
    });
    let verdicts = vec![match (&dists[0], &dists[1]) {
        (Some(p), Some(c)) => Verdict::new(
            "a container case on a base ≤ 1.2 × a plain job (start→exit p50)",
            format!("{} ms vs 1.2 × {} ms", num(c.p50), num(p.p50)),
            Some(c.p50 <= 1.2 * p.p50),
        ),
        _ => Verdict::new("container case vs plain job", "no samples", None),
    }];
    Ok(Section {
        title: "chain: a test-suite case on a kept build vs a plain container job".into(),
        lines,
        verdicts,
        json,
    })
}

fn request(id: &str, argv: &[&str], keep: bool, base: Option<&Base>) -> ExecRequest {
    ExecRequest {
        job_id: id.into(),
        program: Program::Image {
            reference: REFERENCE.into(),
        },
        args: argv[1..].iter().map(|s| s.to_string()).collect(),
        env: vec![],
        stdin: vec![],
        files: vec![],
        limits: Limits {
            wall_time: Duration::from_secs(30),
            cpu_time: Some(Duration::from_secs(10)),
            memory_bytes: 256 << 20,
            fuel: None,
            output_bytes: 1 << 20,
            pids: Some(64),
            disk_bytes: None,
        },
        container: ContainerOptions {
            entrypoint: Some(vec![argv[0].to_string()]),
            ..ContainerOptions::default()
        },
        chain: Chain {
            base: base.cloned(),
            keep,
        },
        artifacts: Default::default(),
        wasm: Default::default(),
    }
}

/// One run to its end; fails unless it exited 0.
async fn timed(backend: &ContainerBackend, request: ExecRequest) -> Result<(Duration, ExecReport)> {
    let id = request.job_id.clone();
    let (sink, mut rx) = OutputSink::channel(1 << 20, 16);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let start = Instant::now();
    let report = backend
        .run(
            request,
            JobIo {
                output: sink,
                cancel: CancellationToken::new(),
            },
        )
        .await;
    let d = start.elapsed();
    let _ = drain.await;
    if !report.outcome.is_success() {
        bail!("container run {id} did not succeed: {:?}", report.outcome);
    }
    Ok((d, report))
}
