//! `containers`: the per-job cost of a `/bin/true` container, side by side in one run:
//!
//! - `unshare+chroot` — `unshare -mpfuin --fork chroot ROOTFS /bin/true`: namespaces and a chroot,
//!   no mounts at all (the floor of any container runtime on this machine);
//! - `crun run` and `runc run` of an OCI bundle whose rootfs is the same busybox tree;
//! - `nekton (runtime-core)` — `ContainerBackend::run` called directly: image lookup in the
//!   store, overlayfs + per-job tmpfs upper, every namespace, fresh /proc, /sys, /dev, masked
//!   paths, pivot_root, tiny init, the job, teardown;
//! - `nekton (runtime-core) without limits` — the same with `ContainerConfig::cgroups = false`
//!   (no per-job cgroup: no memory/pids/CPU-quota enforcement, no cgroup bill), to price the
//!   limits and accounting side by side (target: with ≤ 1.3 × without);
//! - `nekton (runtime-core) network bridge` — the job with limits and `network: bridge` (a netns
//!   prepared by the worker with a veth on a benchmark bridge, address, route; counters read and
//!   the rest released in the background at the end), to price bridge setup + teardown against
//!   `network: none` (target: ≤ +10 ms);
//! - `nekton (runtime-core) userns off` — the job with limits and `ContainerConfig::userns` off
//!   (the job's root is the host's root, image layers mounted as they are), to price rootless
//!   jobs — a user namespace entered by the init and the job, each image layer an idmapped
//!   mount — side by side (target: rootless adds ≤ 1 ms at p50);
//! - `nekton (runtime-core) a new cgroup per job` — v1 hosts only: the job with limits on a
//!   backend with `ContainerConfig::recycled_cgroups = 0` (a `mkdir` per hierarchy before each
//!   job and an `rmdir` after it, instead of a kept cgroup reset between jobs), to price cgroup
//!   recycling side by side;
//! - `nekton (API)` — a full round trip through the server: `POST /v1/jobs` with the image (already
//!   in the server's store) → `exit` event on the job's SSE log stream.
//!
//! Each iteration runs one job of every runtime, in turn, so they share the machine's state.
//! crun refuses hybrid cgroup layouts (v1 controllers plus an empty cgroup2 at
//! `/sys/fs/cgroup/unified`), so this benchmark runs in a private mount namespace with that
//! mount detached ([`prepare_namespace`], called before the async runtime starts); runc and
//! nekton run in the same namespace.
//!
//! Targets: nekton's start-to-exit p50 ≤ crun's and the API round trip p50 ≤ 2 × crun's (the
//! container issue); nekton ≤ 0.5 × crun, limits ≤ 1.15 × without, bridge ≤ +2 ms (issue 15).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use container_backend::{
    BridgeConfig, ContainerBackend, ContainerConfig, UsernsConfig, UsernsMode, cleanup_network,
};
use futures::StreamExt as _;
use image_store::{ImageService, ImageStore, RegistryOptions, StoreLimits};
use nekton::api::types::{JobSpec, JobState, LimitsSpec};
use nekton::cli::LogStreamEvent;
use runtime_core::{
    Backend, CancellationToken, ContainerOptions, ExecRequest, JobIo, Limits, NetworkMode,
    OutputSink, Program,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::bench::{Ctx, Section, ms};
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// The image every runtime runs (imported into the stores; never pulled from a registry).
pub(crate) const REFERENCE: &str = "bench.nekton.invalid/busybox:true";

#[derive(Debug, Clone, clap::Args)]
pub struct ContainersArgs {
    /// Measured jobs per runtime.
    #[arg(long, default_value_t = 100)]
    pub container_jobs: usize,
    /// Unmeasured jobs per runtime first.
    #[arg(long, default_value_t = 5)]
    pub container_warmup: usize,
    /// Where to find busybox (a static one: the image must not need a loader).
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: PathBuf,
    /// Leave out the `network: bridge` runtime (its background netns/veth release competes with
    /// the other runtimes for the CPU, which is what its p90 shows).
    #[arg(long)]
    pub skip_bridge: bool,
}

/// Enters a private mount namespace and detaches the empty cgroup2 mount of a hybrid layout so
/// that crun accepts the host. Must run before any thread exists (unshare(CLONE_NEWNS) fails in
/// a multi-threaded process).
pub fn prepare_namespace() -> Result<()> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("unshare(CLONE_NEWNS) for the container benchmark (run it as root)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private in the benchmark's mount namespace")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let unified = mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/unified"));
    let v1_memory = Path::new("/sys/fs/cgroup/memory").is_dir();
    if unified && v1_memory {
        umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH)
            .context("detaching /sys/fs/cgroup/unified (crun refuses hybrid cgroups)")?;
    }
    Ok(())
}

/// One runtime's samples, in milliseconds.
struct Runtime {
    label: &'static str,
    samples: Vec<f64>,
}

pub async fn run(ctx: &Ctx, args: &ContainersArgs) -> Result<Section> {
    if args.container_jobs == 0 {
        bail!("--container-jobs must be at least 1");
    }
    for tool in ["crun", "runc", "unshare"] {
        which(tool).with_context(|| {
            format!("`{tool}` is not installed (scripts/setup.sh installs crun and runc)")
        })?;
    }
    let busybox = std::fs::read(&args.busybox).with_context(|| {
        format!(
            "reading {} (install busybox-static)",
            args.busybox.display()
        )
    })?;

    let work = tempfile::Builder::new()
        .prefix("nekton-containers-")
        .tempdir()
        .context("creating the benchmark's work directory")?;
    let base = work.path();

    // The same tree three ways: a directory (crun, runc, chroot), a layer in an OCI layout
    // (nekton, imported), a tar of that layout (the server, through the API).
    let rootfs = base.join("bundle/rootfs");
    write_rootfs(&rootfs, &busybox)?;
    write_bundle_config(&base.join("bundle"))?;
    let layer = layer_tar(&busybox)?;
    let layout = base.join("layout");
    write_layout(&layout, &layer)?;
    let layout_tar = tar_dir(&layout)?;

    // nekton, direct.
    let store = Arc::new(
        ImageStore::open(base.join("images"), StoreLimits::default())
            .context("opening the benchmark's image store")?,
    );
    let images = ImageService::new(store, RegistryOptions::default())?;
    images
        .import(&layout, Some(REFERENCE), None)
        .await
        .context("importing the busybox image into the benchmark's store")?;
    let mut backend = ContainerBackend::new(
        ContainerConfig {
            state_dir: base.join("containers"),
            ..ContainerConfig::default()
        },
        images.clone(),
    )
    .context("starting the container backend")?;
    // Bridge networking on a bridge, subnet, table and lease dir of the benchmark's own (a
    // running nekton's `nekton0` is not touched); /bin/true sends nothing, the DNS server is a
    // documentation address.
    let bridge = BridgeConfig {
        bridge: format!("nkbench{}", std::process::id() % 100_000),
        subnet: "10.215.0.0/24".parse().map_err(anyhow::Error::msg)?,
        dns: vec![std::net::Ipv4Addr::new(192, 0, 2, 53)],
        table: "nekton_bench".into(),
        lease_dir: Some(base.join("leases")),
        ..BridgeConfig::default()
    };
    let _cleanup = if args.skip_bridge {
        None
    } else {
        backend
            .enable_bridge(bridge.clone())
            .map_err(anyhow::Error::msg)
            .context("bridge networking (root, nftables, conntrack; scripts/setup.sh)")?;
        Some(scopeguard_net(bridge))
    };
    let unlimited = ContainerBackend::new(
        ContainerConfig {
            state_dir: base.join("containers-unlimited"),
            cgroups: false,
            ..ContainerConfig::default()
        },
        images.clone(),
    )
    .context("starting the container backend without cgroups")?;
    let rootful = ContainerBackend::new(
        ContainerConfig {
            state_dir: base.join("containers-rootful"),
            userns: UsernsConfig {
                mode: UsernsMode::Off,
                ..UsernsConfig::default()
            },
            ..ContainerConfig::default()
        },
        images.clone(),
    )
    .context("starting the container backend without user namespaces")?;
    // v1 hosts: the same as `backend` without recycled cgroups (a `mkdir` per hierarchy before
    // each job and an `rmdir` after it), to price recycling side by side.
    let fresh_cgroups = if backend.preflight().version == Some(container_backend::CgroupVersion::V1)
    {
        Some(
            ContainerBackend::new(
                ContainerConfig {
                    state_dir: base.join("containers-fresh-cgroups"),
                    recycled_cgroups: 0,
                    ..ContainerConfig::default()
                },
                images.clone(),
            )
            .context("starting the container backend without recycled cgroups")?,
        )
    } else {
        None
    };
    let userns_state = backend.preflight().userns.clone();

    // nekton, through the API: the image goes into the server's store first.
    let url = ctx
        .client
        .url(&format!("/v1/images/import?reference={REFERENCE}"))?;
    let resp = ctx
        .client
        .http()
        .post(url)
        .header("content-type", "application/x-tar")
        .body(layout_tar)
        .send()
        .await
        .context("POST /v1/images/import")?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("importing the image into the server failed: {status}: {body}");
    }
    let spec = JobSpec {
        image: Some(REFERENCE.to_string()),
        args: vec!["/bin/true".into()],
        limits: Some(LimitsSpec {
            wall_time_ms: Some(30_000),
            ..Default::default()
        }),
        labels: [("load-test".to_string(), "containers".to_string())].into(),
        ..Default::default()
    };

    let bundle = base.join("bundle");
    let mut runtimes = [
        Runtime {
            label: "unshare+chroot (no mounts; floor)",
            samples: Vec::new(),
        },
        Runtime {
            label: "crun run",
            samples: Vec::new(),
        },
        Runtime {
            label: "runc run",
            samples: Vec::new(),
        },
        Runtime {
            label: "nekton runtime-core with limits (cgroup), userns on: start → exit",
            samples: Vec::new(),
        },
        Runtime {
            label: "nekton API: submit → exit event",
            samples: Vec::new(),
        },
        Runtime {
            label: "nekton runtime-core without limits (no cgroup)",
            samples: Vec::new(),
        },
        Runtime {
            label: "nekton runtime-core with limits, network bridge",
            samples: Vec::new(),
        },
        Runtime {
            label: "nekton runtime-core with limits, userns off",
            samples: Vec::new(),
        },
        Runtime {
            label: "nekton runtime-core with limits, a new cgroup per job",
            samples: Vec::new(),
        },
    ];
    let mut setup = Vec::new();
    let mut job_wall = Vec::new();
    // The same split for the userns-off variant: where rootless's extra time goes.
    let mut setup_off = Vec::new();
    let mut wall_off = Vec::new();
    let mut server_setup = Vec::new();
    let mut server_wall = Vec::new();
    let total = args.container_warmup + args.container_jobs;
    let mark = ctx.mark().await;
    let started = Instant::now();
    // Each iteration runs every runtime once, in an order shuffled per iteration (seeded by the
    // iteration: the same series every run): every runtime follows every other about equally
    // often. A runtime pays for the teardown of the one before it — runc's cgroups' removal and
    // the RCU grace periods it queues cost the next ≈ 3 ms. In a fixed order, and in the cyclic
    // rotation used before (which keeps each runtime's predecessor but at the wrap-around),
    // nekton's first variant always came right after runc.
    #[derive(Clone, Copy)]
    enum Step {
        Floor,
        Crun,
        Runc,
        Nekton,
        Unlimited,
        Rootful,
        FreshCgroups,
        Bridge,
        Api,
    }
    let mut steps = vec![
        Step::Floor,
        Step::Crun,
        Step::Runc,
        Step::Nekton,
        Step::Unlimited,
        Step::Rootful,
    ];
    if fresh_cgroups.is_some() {
        steps.push(Step::FreshCgroups);
    }
    if !args.skip_bridge {
        steps.push(Step::Bridge);
    }
    steps.push(Step::Api);
    for i in 0..total {
        let measured = i >= args.container_warmup;
        let mut record = |k: usize, d: Duration| {
            if measured {
                runtimes[k].samples.push(ms(d));
            }
        };
        let id = format!("nekton-bench-{}-{i}", std::process::id());
        let mut report = None;
        let mut job_id = None;
        let mut order = steps.clone();
        fastrand::Rng::with_seed(i as u64).shuffle(&mut order);
        for step in order {
            match step {
                Step::Floor => {
                    let d = command(
                        "unshare",
                        &[
                            "-m".as_ref(),
                            "-p".as_ref(),
                            "-f".as_ref(),
                            "-u".as_ref(),
                            "-i".as_ref(),
                            "-n".as_ref(),
                            "chroot".as_ref(),
                            rootfs.as_os_str(),
                            "/bin/true".as_ref(),
                        ],
                    )
                    .await?;
                    record(0, d);
                }
                Step::Crun => {
                    let d = command(
                        "crun",
                        &[
                            "run".as_ref(),
                            "-b".as_ref(),
                            bundle.as_os_str(),
                            id.as_ref(),
                        ],
                    )
                    .await?;
                    record(1, d);
                }
                Step::Runc => {
                    let d = command(
                        "runc",
                        &[
                            "run".as_ref(),
                            "-b".as_ref(),
                            bundle.as_os_str(),
                            id.as_ref(),
                        ],
                    )
                    .await?;
                    record(2, d);
                }
                Step::Nekton => {
                    let (d, r) = direct(&backend, i, true, NetworkMode::None).await?;
                    record(3, d);
                    report = Some(r);
                }
                Step::Unlimited => {
                    let (d, _) = direct(&unlimited, i, false, NetworkMode::None).await?;
                    record(5, d);
                }
                Step::Rootful => {
                    let (d, r) = direct(&rootful, i, true, NetworkMode::None).await?;
                    record(7, d);
                    if measured {
                        setup_off.push(ms(r.usage.setup));
                        wall_off.push(ms(r.usage.wall));
                    }
                }
                Step::FreshCgroups => {
                    let Some(fresh) = &fresh_cgroups else {
                        bail!(
                            "the new-cgroup-per-job step ran without its backend (a bug of the benchmark)"
                        );
                    };
                    let (d, _) = direct(fresh, i, true, NetworkMode::None).await?;
                    record(8, d);
                }
                Step::Bridge => {
                    let (d, _) = direct(&backend, i, true, NetworkMode::Bridge).await?;
                    record(6, d);
                }
                Step::Api => {
                    let (d, id) = round_trip(ctx, &spec).await?;
                    record(4, d);
                    job_id = Some(id);
                }
            }
        }
        let (Some(report), Some(job_id)) = (report, job_id) else {
            bail!("an iteration ran without the nekton and API steps (a bug of the benchmark)");
        };
        if measured {
            setup.push(ms(report.usage.setup));
            job_wall.push(ms(report.usage.wall));
            let job = ctx.client.get_job(job_id).await?;
            if let Some(u) = &job.usage {
                server_setup.push(u.setup_ms.map_or(f64::NAN, |x| x as f64));
                server_wall.push(u.wall_ms.map_or(f64::NAN, |x| x as f64));
            }
        }
    }
    let elapsed = started.elapsed();
    let res = ctx.measure(&mark, Some((total * 2) as u64)).await;

    let dists: Vec<Option<Dist>> = runtimes.iter().map(|r| Dist::of(&r.samples)).collect();
    let mut lines = vec![
        format!(
            "  /bin/true from a busybox rootfs, {} measured runs per runtime after {} warm-up, \
             interleaved ({} s in all)",
            args.container_jobs,
            args.container_warmup,
            num(elapsed.as_secs_f64())
        ),
        format!("  container user namespaces of the measured backend: {userns_state}"),
        dist_header("(ms, wall time of each run)"),
    ];
    for (r, d) in runtimes.iter().zip(&dists) {
        lines.push(dist_row(r.label, d.as_ref()));
    }
    let d_setup = Dist::of(&setup);
    let d_wall = Dist::of(&job_wall);
    let d_server_setup = Dist::of(&server_setup);
    let d_server_wall = Dist::of(&server_wall);
    let d_setup_off = Dist::of(&setup_off);
    let d_wall_off = Dist::of(&wall_off);
    lines.push(dist_row(
        "  runtime-core usage.setup (image → exec), userns on",
        d_setup.as_ref(),
    ));
    lines.push(dist_row(
        "  runtime-core usage.wall (exec → exit), userns on",
        d_wall.as_ref(),
    ));
    lines.push(dist_row(
        "  runtime-core usage.setup (image → exec), userns off",
        d_setup_off.as_ref(),
    ));
    lines.push(dist_row(
        "  runtime-core usage.wall (exec → exit), userns off",
        d_wall_off.as_ref(),
    ));
    lines.push(dist_row(
        "  API job usage.setup_ms",
        d_server_setup.as_ref(),
    ));
    lines.push(dist_row("  API job usage.wall_ms", d_server_wall.as_ref()));
    lines.extend(res.lines());

    let p50 = |k: usize| dists[k].map(|d| d.p50);
    let mut verdicts = Vec::new();
    verdicts.push(match (p50(3), p50(1)) {
        (Some(n), Some(c)) => Verdict::new(
            "container /bin/true: nekton start→exit p50 ≤ crun's",
            format!("{} ms vs crun {} ms", num(n), num(c)),
            Some(n <= c),
        ),
        _ => Verdict::new("container /bin/true vs crun", "no samples", None),
    });
    verdicts.push(match (p50(3), p50(1)) {
        (Some(n), Some(c)) => Verdict::new(
            "container /bin/true: nekton start→exit p50 ≤ 0.5 × crun's (issue 15)",
            format!("{} ms vs crun {} ms: {}×", num(n), num(c), num(n / c)),
            Some(n <= 0.5 * c),
        ),
        _ => Verdict::new("container /bin/true vs crun", "no samples", None),
    });
    verdicts.push(match (p50(3), p50(5)) {
        (Some(w), Some(wo)) => Verdict::new(
            "container /bin/true: with limits + accounting p50 ≤ 1.15 × without (issue 15)",
            format!("{} ms vs {} ms: {}×", num(w), num(wo), num(w / wo)),
            Some(w <= 1.15 * wo),
        ),
        _ => Verdict::new("container limits overhead", "no samples", None),
    });
    verdicts.push(match (p50(6), p50(3)) {
        (Some(b), Some(n)) => Verdict::new(
            "container /bin/true: network bridge adds ≤ 2 ms (p50) to network none (issue 15)",
            format!("{} ms vs {} ms: +{} ms", num(b), num(n), num(b - n)),
            Some(b - n <= 2.0),
        ),
        _ => Verdict::new("container bridge overhead", "no samples", None),
    });
    verdicts.push(match (p50(3), p50(7)) {
        (Some(on), Some(off)) if userns_state.starts_with("on") => Verdict::new(
            "container /bin/true: userns + idmapped layers add ≤ 1 ms (p50) to userns off",
            format!(
                "{} ms vs {} ms: {}{} ms",
                num(on),
                num(off),
                if on >= off { "+" } else { "" },
                num(on - off)
            ),
            Some(on - off <= 1.0),
        ),
        _ => Verdict::new(
            "container userns overhead",
            format!("user namespaces not measured: {userns_state}"),
            None,
        ),
    });
    verdicts.push(match (p50(4), p50(1)) {
        (Some(n), Some(c)) => Verdict::new(
            "container job API round trip p50 ≤ 2 × crun's",
            format!("{} ms vs 2 × {} ms", num(n), num(c)),
            Some(n <= 2.0 * c),
        ),
        _ => Verdict::new("container API round trip vs crun", "no samples", None),
    });
    let json = json!({
        "jobs_per_runtime": args.container_jobs,
        "warmup": args.container_warmup,
        "runtimes": runtimes.iter().zip(&dists).map(|(r, d)| json!({
            "runtime": r.label, "ms": dist_json(d.as_ref()),
        })).collect::<Vec<_>>(),
        "runtime_core_setup_ms": dist_json(d_setup.as_ref()),
        "runtime_core_wall_ms": dist_json(d_wall.as_ref()),
        "runtime_core_userns_off_setup_ms": dist_json(d_setup_off.as_ref()),
        "runtime_core_userns_off_wall_ms": dist_json(d_wall_off.as_ref()),
        "api_setup_ms": dist_json(d_server_setup.as_ref()),
        "api_wall_ms": dist_json(d_server_wall.as_ref()),
        "resources": res.json(),
    });
    Ok(Section {
        title: "containers: /bin/true per job, nekton vs crun vs runc".into(),
        lines,
        verdicts,
        json,
    })
}

/// Removes the benchmark's bridge network when the benchmark ends (also on an error).
fn scopeguard_net(config: BridgeConfig) -> impl Drop {
    struct Guard(BridgeConfig);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Err(e) = cleanup_network(&self.0) {
                eprintln!("containers: removing the benchmark's bridge network: {e}");
            }
        }
    }
    Guard(config)
}

fn which(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{tool} not found in PATH"))
}

/// Runs a command to its end with no output, failing unless it exits 0.
async fn command(program: &str, args: &[&std::ffi::OsStr]) -> Result<Duration> {
    let start = Instant::now();
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    let d = start.elapsed();
    if !out.status.success() {
        bail!(
            "{program} {:?} failed ({}): {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(d)
}

/// One `/bin/true` job; `limited` also sets a CPU limit (the cgroup CPU watcher runs).
async fn direct(
    backend: &ContainerBackend,
    i: usize,
    limited: bool,
    network: NetworkMode,
) -> Result<(Duration, runtime_core::ExecReport)> {
    let request = ExecRequest {
        job_id: format!("bench-{i}"),
        program: Program::Image {
            reference: REFERENCE.into(),
        },
        args: vec!["/bin/true".into()],
        env: vec![],
        stdin: vec![],
        files: vec![],
        limits: Limits {
            wall_time: Duration::from_secs(30),
            cpu_time: limited.then_some(Duration::from_secs(10)),
            memory_bytes: 256 << 20,
            fuel: None,
            output_bytes: 1 << 20,
            pids: limited.then_some(64),
            disk_bytes: None,
        },
        container: ContainerOptions {
            network,
            ..ContainerOptions::default()
        },
        chain: Default::default(),
        artifacts: Default::default(),
        wasm: Default::default(),
    };
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
        bail!(
            "nekton container job {i} did not succeed: {:?}",
            report.outcome
        );
    }
    Ok((d, report))
}

async fn round_trip(ctx: &Ctx, spec: &JobSpec) -> Result<(Duration, uuid::Uuid)> {
    let start = Instant::now();
    let job = ctx.client.submit(spec, None).await?;
    let mut events = Box::pin(ctx.client.follow_logs(job.id, None));
    let exit = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = events.next().await {
            if let LogStreamEvent::Exit { event, .. } = ev? {
                return Ok(Some(event));
            }
        }
        Ok::<_, anyhow::Error>(None)
    })
    .await
    .with_context(|| format!("container job {} did not finish within 60 s", job.id))??;
    let d = start.elapsed();
    match exit {
        Some(e) if e.state == JobState::Succeeded => Ok((d, job.id)),
        Some(e) => bail!(
            "container job {} ended {:?} ({:?})",
            job.id,
            e.state,
            e.outcome
        ),
        None => bail!(
            "the log stream of job {} ended without an exit event",
            job.id
        ),
    }
}

/// busybox and the applets the runs use, plus the mount points a runtime needs.
fn write_rootfs(rootfs: &Path, busybox: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    let bb = rootfs.join("bin/busybox");
    std::fs::write(&bb, busybox)?;
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755))?;
    for applet in ["true", "sh"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    Ok(())
}

/// `runc spec`'s default bundle config with `/bin/true` as the process and no terminal.
fn write_bundle_config(bundle: &Path) -> Result<()> {
    let out = std::process::Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .output()
        .context("running `runc spec`")?;
    if !out.status.success() {
        bail!(
            "`runc spec` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["args"] = json!(["/bin/true"]);
    config["process"]["terminal"] = json!(false);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

pub(crate) fn layer_tar(busybox: &[u8]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, std::io::empty())?;
        Ok(())
    };
    for d in ["bin/", "proc/", "sys/", "dev/", "etc/", "tmp/"] {
        dir(&mut b, d)?;
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, "bin/busybox", busybox)?;
    for applet in ["true", "sh"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    Ok(b.into_inner()?)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An OCI image layout holding one image: the layer, its config and manifest, named `REFERENCE`.
pub(crate) fn write_layout(dir: &Path, layer: &[u8]) -> Result<()> {
    write_image_layout(dir, REFERENCE, &[layer], &["PATH=/bin"])
}

/// An OCI image layout holding one image of uncompressed `layers` (bottom first) with `env`,
/// named `reference`.
pub(crate) fn write_image_layout(
    dir: &Path,
    reference: &str,
    layers: &[&[u8]],
    env: &[&str],
) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |data: &[u8]| -> Result<String> {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data)?;
        Ok(format!("sha256:{hex}"))
    };
    let mut digests = Vec::new();
    for layer in layers {
        digests.push(put(layer)?);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": env},
        "rootfs": {"type": "layers", "diff_ids": digests},
    }))?;
    let config_digest = put(&config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": layers.iter().zip(&digests).map(|(l, d)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len(),
        })).collect::<Vec<_>>(),
    }))?;
    let manifest_digest = put(&manifest)?;
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": reference},
            }],
        }))?,
    )?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

pub(crate) fn tar_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir)
        .with_context(|| format!("archiving {}", dir.display()))?;
    Ok(b.into_inner()?)
}
