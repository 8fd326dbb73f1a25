//! `grading`: what test-suite jobs save, through the API of a real server.
//!
//! - **Containers** (root; the compiler and the C library on the host, busybox-static): an image
//!   of busybox plus a C compiler assembled from this host's files — `--compiler tcc` (the
//!   default: the same list as the container grading test,
//!   `image-store/tests/image_support/tcc.rs`) or `--compiler gcc` (gcc, binutils and their
//!   libraries, `image_support/gcc.rs`) —, imported into the server's store before anything is
//!   timed. Then, in turn, for each round (`CC` the compiler):
//!   (a) **one suite job** — build `CC -o prog main.c`, then N cases each running `/work/prog`
//!   with its stdin and expected stdout, `parallelism` at once;
//!   (b) **N plain jobs** in one `POST /v1/batches`, each running
//!   `sh -c 'CC -o prog main.c && ./prog'` with the same stdins.
//!   Wall time from the submission until the client sees the last result (the job, or the batch,
//!   finished; polled every `--poll-ms`); every case must be accepted, every plain job must
//!   succeed with the expected stdout (checked after the clock stops). Target (the grading
//!   issue): (b) ≥ 3 × (a).
//! - **Wasm**: a suite of `--wasm-cases` cases (no build) on the hello-world module, each
//!   expecting its output; the per-case cost in the worker is the suite runner's start → end
//!   (`usage.wall_ms`, the suite's elapsed time) ÷ cases; also the job's `started_at → finished_at` ÷ cases (claim to recorded completion). For reference, the same module run the same number of
//!   times through a `WasmBackend` in this process, each run's output captured as the suite
//!   runner captures a case's (p50/p99 per run): what is left of the suite's figure above that
//!   floor is the runner's own per-case work (events, verdicts, the job's event log). Target:
//!   ≤ 200 µs per case.
//!
//! Run the server with `--slots` equal to `--grading-parallelism` (the README's command) so both
//! sides get the same concurrency.

#[path = "../../image-store/tests/image_support/gcc.rs"]
mod gcc;
#[path = "../../image-store/tests/image_support/tcc.rs"]
mod tcc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nekton::api::types::{Job, JobState};
use nekton::cli::StdStream;
use runtime_core::{
    Backend, CancellationToken, ExecRequest, JobIo, Limits, ModuleStore, ModuleStoreError,
    OutputSink, Program, Stream,
};
use serde_json::{Value, json};
use wasm_backend::{WasmBackend, WasmConfig};

use crate::bench::{Ctx, Section, delta_ms, ms};
use crate::containers::{layer_tar, tar_dir, write_image_layout};
use crate::guests;
use crate::stats::{Dist, Verdict, dist_header, dist_json, dist_row, num};

/// The C compiler of the container comparison's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compiler {
    /// tcc (`image_support/tcc.rs`): compiles the program in a few ms.
    Tcc,
    /// gcc with binutils (`image_support/gcc.rs`): tens of ms per compile, like real graders.
    Gcc,
}

impl Compiler {
    /// The command that builds and is timed.
    fn name(self) -> &'static str {
        match self {
            Compiler::Tcc => "tcc",
            Compiler::Gcc => "gcc",
        }
    }

    /// The compiler image (imported into the server's store; never pulled).
    fn image(self) -> &'static str {
        match self {
            Compiler::Tcc => "bench.nekton.invalid/tcc:1",
            Compiler::Gcc => "bench.nekton.invalid/gcc:1",
        }
    }

    /// The image layer's entries, from this host.
    fn entries(self) -> Result<Vec<tcc::Entry>> {
        match self {
            Compiler::Tcc => tcc::tcc_entries(),
            Compiler::Gcc => gcc::gcc_entries(),
        }
        .map_err(anyhow::Error::msg)
    }

    /// `CC -o prog main.c`.
    fn build(self) -> String {
        format!("{} -o prog main.c", self.name())
    }
}

/// The program under test: reads two numbers, prints their sum. No headers (the image carries a
/// compiler and libc, not libc's headers), like the grading test's programs.
const MAIN_C: &str = "int scanf(const char *, ...);\n\
int printf(const char *, ...);\n\
int main(void) {\n\
    long a = 0, b = 0;\n\
    if (scanf(\"%ld %ld\", &a, &b) != 2) return 1;\n\
    printf(\"%ld\\n\", a + b);\n\
    return 0;\n\
}\n";

#[derive(Debug, Clone, clap::Args)]
pub struct GradingArgs {
    /// Cases of the container suite, and plain jobs it is compared with.
    #[arg(long, default_value_t = 100)]
    pub grading_cases: usize,
    /// Measured rounds of each side (after one unmeasured round).
    #[arg(long, default_value_t = 3)]
    pub grading_rounds: usize,
    /// The suite's `parallelism` (1 to 16): give the server the same `--slots`.
    #[arg(long, default_value_t = 16)]
    pub grading_parallelism: u32,
    /// Cases of the Wasm suite (1 to 1000).
    #[arg(long, default_value_t = 1000)]
    pub wasm_cases: usize,
    /// Measured Wasm suites (after one unmeasured one).
    #[arg(long, default_value_t = 3)]
    pub wasm_rounds: usize,
    /// The Wasm suite's `parallelism`.
    #[arg(long, default_value_t = 1)]
    pub wasm_parallelism: u32,
    /// How often the client polls for the result.
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
    /// The C compiler of the container comparison's image (from this host's files).
    #[arg(long, value_enum, default_value_t = Compiler::Tcc)]
    pub compiler: Compiler,
    /// Leave out the container comparison (it needs root and the compiler).
    #[arg(long)]
    pub skip_containers: bool,
    /// Leave out the Wasm suite.
    #[arg(long)]
    pub skip_wasm: bool,
    /// Where to find busybox (a static one: the image must not need a loader).
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: std::path::PathBuf,
}

pub async fn run(ctx: &Ctx, args: &GradingArgs) -> Result<Section> {
    if args.skip_containers && args.skip_wasm {
        bail!("--skip-containers and --skip-wasm leave nothing to measure");
    }
    let mut lines = Vec::new();
    let mut verdicts = Vec::new();
    let mut json = serde_json::Map::new();
    if !args.skip_containers {
        let (l, v, j) = containers(ctx, args)
            .await
            .context("the container comparison")?;
        lines.extend(l);
        verdicts.push(v);
        json.insert("containers".into(), j);
    }
    if !args.skip_wasm {
        let (l, v, j) = wasm(ctx, args).await.context("the Wasm suite")?;
        lines.extend(l);
        verdicts.push(v);
        json.insert("wasm".into(), j);
    }
    Ok(Section {
        title: "grading: test-suite jobs vs separate jobs".into(),
        lines,
        verdicts,
        json: Value::Object(json),
    })
}

// ---------------------------------------------------------------------------------------------
// Containers

fn compiler_layer(compiler: Compiler) -> Result<Vec<u8>> {
    let entries = compiler.entries()?;
    let mut b = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match entry {
            tcc::Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())?;
            }
            tcc::Entry::File { path, data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            tcc::Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// Imports busybox + the compiler into the server's store as [`Compiler::image`].
async fn import_compiler_image(
    ctx: &Ctx,
    compiler: Compiler,
    busybox: &std::path::Path,
) -> Result<()> {
    let busybox = std::fs::read(busybox)
        .with_context(|| format!("reading {} (install busybox-static)", busybox.display()))?;
    let work = tempfile::Builder::new()
        .prefix("nekton-grading-")
        .tempdir()
        .context("creating the benchmark's work directory")?;
    let layout = work.path().join("layout");
    let base = layer_tar(&busybox)?;
    let cc = compiler_layer(compiler)?;
    let image = compiler.image();
    write_image_layout(&layout, image, &[&base, &cc], &["PATH=/usr/bin:/bin"])?;
    let tar = tar_dir(&layout)?;
    ctx.client
        .import_image(tar.into(), Some(image))
        .await
        .with_context(|| {
            format!(
                "importing the {} image into the server (POST /v1/images/import; root)",
                compiler.name()
            )
        })?;
    Ok(())
}

fn input(i: usize) -> (String, String) {
    let (a, b) = (i as i64, 7 * i as i64 + 1);
    (format!("{a} {b}\n"), format!("{}\n", a + b))
}

fn limits() -> Value {
    json!({"wall_time_ms": 30_000, "cpu_time_ms": 10_000, "memory_bytes": 256 << 20,
           "output_bytes": 65536})
}

fn suite_job(compiler: Compiler, n: usize, parallelism: u32) -> Value {
    let cases: Vec<Value> = (0..n)
        .map(|i| {
            let (stdin, stdout) = input(i);
            json!({"name": format!("case-{i}"), "stdin": stdin, "expect": {"stdout": stdout}})
        })
        .collect();
    json!({
        "image": compiler.image(),
        "workdir": "/work",
        "entrypoint": ["/work/prog"],
        "files": [{"path": "main.c", "content": MAIN_C}],
        "limits": limits(),
        "labels": {"load-test": "grading"},
        "tests": {
            "build": {"command": ["sh", "-c", compiler.build()]},
            "cases": cases,
            "compare": {"mode": "exact"},
            "parallelism": parallelism,
        },
    })
}

fn plain_batch(compiler: Compiler, n: usize) -> Value {
    let jobs: Vec<Value> = (0..n).map(|i| json!({"stdin": input(i).0})).collect();
    json!({
        "defaults": {
            "image": compiler.image(),
            "workdir": "/work",
            "entrypoint": ["/bin/sh", "-c"],
            "args": [format!("{} && ./prog", compiler.build())],
            "files": [{"path": "main.c", "content": MAIN_C}],
            "limits": limits(),
            "labels": {"load-test": "grading"},
        },
        "jobs": jobs,
    })
}

async fn post(ctx: &Ctx, path: &str, body: &Value) -> Result<Value> {
    let r = ctx
        .client
        .http()
        .post(ctx.client.url(path)?)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST /{path}"))?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST /{path}: {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("POST /{path}: not JSON: {text}"))
}

/// Polls the job until it is final; returns it.
async fn wait_job(ctx: &Ctx, id: uuid::Uuid, poll: Duration) -> Result<Job> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job = ctx.client.get_job(id).await?;
        if job.state.is_terminal() {
            return Ok(job);
        }
        if Instant::now() > deadline {
            bail!(
                "job {id} did not finish within 600 s (state {:?})",
                job.state
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// Submits one suite job and waits for it: (client wall, the job).
async fn run_suite(ctx: &Ctx, body: &Value, poll: Duration) -> Result<(Duration, Job)> {
    let start = Instant::now();
    let created = post(ctx, "v1/jobs", body).await?;
    let id: uuid::Uuid = serde_json::from_value(created["id"].clone())
        .context("the submitted job's answer has no id")?;
    let job = wait_job(ctx, id, poll).await?;
    let d = start.elapsed();
    let tests = job.outcome.as_ref().and_then(|o| o.tests.as_ref());
    let cases = body["tests"]["cases"].as_array().map_or(0, Vec::len);
    match tests {
        Some(t) if job.state == JobState::Succeeded && t.passed as usize == cases => Ok((d, job)),
        _ => bail!(
            "suite job {id} ended {:?} with {:?} (every case should be accepted)",
            job.state,
            job.outcome
        ),
    }
}

/// Submits the plain jobs as one batch and waits until all are final: (client wall, job ids).
async fn run_plain(
    ctx: &Ctx,
    compiler: Compiler,
    n: usize,
    poll: Duration,
) -> Result<(Duration, Vec<uuid::Uuid>)> {
    let body = plain_batch(compiler, n);
    let start = Instant::now();
    let created = post(ctx, "v1/batches", &body).await?;
    let batch: uuid::Uuid =
        serde_json::from_value(created["id"].clone()).context("the batch's answer has no id")?;
    let ids: Vec<uuid::Uuid> = serde_json::from_value(created["job_ids"].clone())
        .context("the batch's answer has no job_ids")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let b = loop {
        let b = ctx.client.get_batch(batch).await?;
        if b.finished {
            break b;
        }
        if Instant::now() > deadline {
            bail!("batch {batch} did not finish within 600 s: {:?}", b.counts);
        }
        tokio::time::sleep(poll).await;
    };
    let d = start.elapsed();
    let ok = b.counts.get("succeeded").copied().unwrap_or(0);
    if ok != n as i64 {
        bail!("batch {batch}: {ok} of {n} jobs succeeded: {:?}", b.counts);
    }
    Ok((d, ids))
}

/// Every plain job printed what its case expects.
async fn check_plain(ctx: &Ctx, ids: &[uuid::Uuid]) -> Result<()> {
    for (i, id) in ids.iter().enumerate() {
        let out = ctx
            .client
            .plain_log_bytes(*id, Some(StdStream::Stdout))
            .await?;
        let want = input(i).1;
        if out != want.as_bytes() {
            bail!(
                "plain job {id} printed {:?}, expected {want:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    Ok(())
}

async fn containers(ctx: &Ctx, args: &GradingArgs) -> Result<(Vec<String>, Verdict, Value)> {
    let n = args.grading_cases;
    if n == 0 || n > 1000 {
        bail!("--grading-cases must be 1 to 1000");
    }
    if !(1..=16).contains(&args.grading_parallelism) {
        bail!("--grading-parallelism must be 1 to 16");
    }
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let cc = args.compiler;
    import_compiler_image(ctx, cc, &args.busybox).await?;
    let suite = suite_job(cc, n, args.grading_parallelism);

    let mut suite_wall = Vec::new();
    let mut plain_wall = Vec::new();
    let mut build_ms = Vec::new();
    let mut suite_usage_ms = Vec::new();
    let mut case_wall_ms = Vec::new();
    let mark = ctx.mark().await;
    for round in 0..=args.grading_rounds {
        let measured = round > 0;
        let (d, job) = run_suite(ctx, &suite, poll).await?;
        let tests = job.outcome.as_ref().and_then(|o| o.tests.as_ref());
        // The build's start → exit: its setup (image, rootfs) and its run.
        let build = tests
            .and_then(|t| t.build.as_ref())
            .and_then(|b| Some(b.usage.wall_ms? + b.usage.setup_ms.unwrap_or(0)));
        let (dp, ids) = run_plain(ctx, cc, n, poll).await?;
        check_plain(ctx, &ids).await?;
        eprintln!(
            "grading: round {round}{}: suite {} ms, {n} plain jobs {} ms",
            if measured { "" } else { " (warm-up)" },
            num(ms(d)),
            num(ms(dp))
        );
        if measured {
            suite_wall.push(ms(d));
            plain_wall.push(ms(dp));
            if let Some(b) = build {
                build_ms.push(b as f64);
            }
            if let (Some(a), Some(b)) = (job.started_at, job.finished_at) {
                suite_usage_ms.push(delta_ms(a, b));
            }
            case_wall_ms.extend(case_walls(ctx, job.id).await?);
        }
    }
    let res = ctx
        .measure(&mark, Some(((args.grading_rounds + 1) * (n + 1)) as u64))
        .await;
    let d_suite = Dist::of(&suite_wall);
    let d_plain = Dist::of(&plain_wall);
    let d_build = Dist::of(&build_ms);
    let d_usage = Dist::of(&suite_usage_ms);
    let d_case = Dist::of(&case_wall_ms);
    let mut lines = vec![
        format!(
            "  containers: busybox + {} image, a trivial C program (scanf two numbers, print the \
             sum); {} measured rounds after 1 warm-up, the two sides in turn",
            cc.name(),
            args.grading_rounds
        ),
        dist_header("(ms)"),
        dist_row(
            &format!(
                "(a) 1 suite: build + {n} cases, parallelism {}: submit → done",
                args.grading_parallelism
            ),
            d_suite.as_ref(),
        ),
        dist_row(
            &format!(
                "(b) {n} jobs `{} && ./prog`, one batch: submit → last done",
                cc.name()
            ),
            d_plain.as_ref(),
        ),
        dist_row(
            "  (a) the suite job's started_at → finished_at (server)",
            d_usage.as_ref(),
        ),
        dist_row(
            "  (a) its build: usage.setup_ms + wall_ms",
            d_build.as_ref(),
        ),
        dist_row("  (a) a case: usage.setup_ms + wall_ms", d_case.as_ref()),
    ];
    let ratio = match (&d_suite, &d_plain) {
        (Some(s), Some(p)) => Some(p.p50 / s.p50),
        _ => None,
    };
    let ratios: Vec<f64> = suite_wall
        .iter()
        .zip(&plain_wall)
        .map(|(s, p)| p / s)
        .collect();
    if let Some(r) = ratio {
        lines.push(format!(
            "  (b) / (a), p50: {}× (per round: {})",
            num(r),
            ratios
                .iter()
                .map(|r| format!("{}×", num(*r)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    lines.extend(res.lines());
    let verdict = match ratio {
        Some(r) => Verdict::new(
            format!(
                "1 {} build + {n} container cases ≥ 3× faster than {n} jobs that build",
                cc.name()
            ),
            format!("{}× (p50 over {} rounds)", num(r), args.grading_rounds),
            Some(r >= 3.0),
        ),
        None => Verdict::new("container suite vs plain jobs", "no samples", None),
    };
    let json = json!({
        "compiler": cc.name(),
        "cases": n,
        "parallelism": args.grading_parallelism,
        "rounds": args.grading_rounds,
        "suite_ms": dist_json(d_suite.as_ref()),
        "plain_ms": dist_json(d_plain.as_ref()),
        "suite_samples_ms": suite_wall,
        "plain_samples_ms": plain_wall,
        "suite_started_to_finished_ms": dist_json(d_usage.as_ref()),
        "build_setup_plus_wall_ms": dist_json(d_build.as_ref()),
        "case_setup_plus_wall_ms": dist_json(d_case.as_ref()),
        "ratio_p50": ratio,
        "ratios": ratios,
        "resources": res.json(),
    });
    Ok((lines, verdict, json))
}

/// The cases' `usage.setup_ms + usage.wall_ms` from `GET /v1/jobs/{id}/cases`.
async fn case_walls(ctx: &Ctx, id: uuid::Uuid) -> Result<Vec<f64>> {
    let r = ctx
        .client
        .http()
        .get(ctx.client.url(&format!("v1/jobs/{id}/cases"))?)
        .send()
        .await
        .context("GET /v1/jobs/{id}/cases")?;
    let list: Value = r.json().await.context("the case list is not JSON")?;
    Ok(list["cases"]
        .as_array()
        .map(|cases| {
            cases
                .iter()
                .filter_map(|c| {
                    let u = &c["result"]["usage"];
                    Some(u["wall_ms"].as_f64()? + u["setup_ms"].as_f64().unwrap_or(0.0))
                })
                .collect()
        })
        .unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Wasm

async fn wasm(ctx: &Ctx, args: &GradingArgs) -> Result<(Vec<String>, Verdict, Value)> {
    let n = args.wasm_cases;
    if n == 0 || n > 1000 {
        bail!("--wasm-cases must be 1 to 1000");
    }
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let hello = guests::hello()?;
    let module = ctx.client.push_module(hello.clone()).await?;
    let expected = String::from_utf8_lossy(guests::HELLO_OUTPUT).into_owned();
    let cases: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("case-{i}"), "expect": {"stdout": expected}}))
        .collect();
    let body = json!({
        "module": module.digest,
        "limits": {"wall_time_ms": 10_000, "output_bytes": 65536},
        "labels": {"load-test": "grading"},
        "tests": {"cases": cases, "compare": {"mode": "exact"},
                  "parallelism": args.wasm_parallelism},
    });

    let mut per_case_us = Vec::new();
    let mut client_ms = Vec::new();
    let mut usage_ms = Vec::new();
    let mut server_ms = Vec::new();
    let mut per_case_server_us = Vec::new();
    let mark = ctx.mark().await;
    for round in 0..=args.wasm_rounds {
        let (d, job) = run_suite(ctx, &body, poll).await?;
        // The runner's start → end: a suite's `usage.wall_ms` is its elapsed time. (It used to
        // be that less the runs' summed setup; the figures recorded at a2a996a and ee21411 added
        // `setup_ms` back, the same quantity for in-order cases.)
        let usage = job
            .usage
            .as_ref()
            .context("the Wasm suite's record has no usage")?;
        let runner = usage.wall_ms.unwrap_or(0) as f64;
        let server = match (job.started_at, job.finished_at) {
            (Some(a), Some(b)) => delta_ms(a, b),
            _ => f64::NAN,
        };
        eprintln!(
            "grading: Wasm suite {round}{}: {} ms submit → done, runner {runner} ms, \
             started → finished {} ms",
            if round == 0 { " (warm-up)" } else { "" },
            num(ms(d)),
            num(server)
        );
        if round > 0 {
            client_ms.push(ms(d));
            usage_ms.push(runner);
            server_ms.push(server);
            // With cases at once the summed setup exceeds the elapsed time: only the server's
            // figure stands then.
            let basis = if args.wasm_parallelism == 1 {
                runner
            } else {
                server
            };
            per_case_us.push(basis * 1000.0 / n as f64);
            per_case_server_us.push(server * 1000.0 / n as f64);
        }
    }
    let res = ctx
        .measure(&mark, Some((args.wasm_rounds + 1) as u64))
        .await;

    // The floor: the same runs through a WasmBackend in this process.
    let floor = backend_floor(&hello, n, &expected).await?;

    let d_client = Dist::of(&client_ms);
    let d_usage = Dist::of(&usage_ms);
    let d_case = Dist::of(&per_case_us);
    let d_server = Dist::of(&server_ms);
    let d_case_server = Dist::of(&per_case_server_us);
    let d_floor = Dist::of(&floor);
    let mut lines = vec![
        String::new(),
        format!(
            "  Wasm: a suite of {n} cases (hello-world module, no build, exact compare), \
             parallelism {}; {} measured suites after 1 warm-up",
            args.wasm_parallelism, args.wasm_rounds
        ),
        dist_header("(ms)"),
        dist_row("suite: submit → done (client)", d_client.as_ref()),
        dist_row(
            "suite: claim → completion (started_at → finished_at)",
            d_server.as_ref(),
        ),
        dist_row(
            "suite: runner start → end (usage.wall_ms)",
            d_usage.as_ref(),
        ),
        dist_header("(µs)"),
        dist_row(
            if args.wasm_parallelism == 1 {
                "per case: runner start → end ÷ cases"
            } else {
                "per case (parallelism > 1: started → finished ÷ cases)"
            },
            d_case.as_ref(),
        ),
        dist_row(
            "per case: started_at → finished_at ÷ cases",
            d_case_server.as_ref(),
        ),
        dist_row(
            "floor: WasmBackend::run + captured output, in process",
            d_floor.as_ref(),
        ),
    ];
    lines.extend(res.lines());
    let mean = d_case.map(|d| d.p50);
    let verdict = match mean {
        Some(us) => Verdict::new(
            "a Wasm case ≤ 200 µs in the worker",
            format!(
                "{} µs (runner ÷ {n}, p50 of {} suites)",
                num(us),
                args.wasm_rounds
            ),
            Some(us <= 200.0),
        ),
        None => Verdict::new("Wasm case cost", "no samples", None),
    };
    let json = json!({
        "cases": n,
        "parallelism": args.wasm_parallelism,
        "rounds": args.wasm_rounds,
        "client_ms": dist_json(d_client.as_ref()),
        "runner_ms": dist_json(d_usage.as_ref()),
        "runner_samples_ms": usage_ms,
        "started_to_finished_ms": dist_json(d_server.as_ref()),
        "per_case_started_to_finished_us": dist_json(d_case_server.as_ref()),
        "per_case_us": dist_json(d_case.as_ref()),
        "backend_floor_us": dist_json(d_floor.as_ref()),
        "resources": res.json(),
    });
    Ok((lines, verdict, json))
}

/// One module, in memory.
struct OneModule {
    digest: String,
    bytes: Vec<u8>,
}

#[async_trait::async_trait]
impl ModuleStore for OneModule {
    async fn load(&self, digest: &str) -> Result<Vec<u8>, ModuleStoreError> {
        if digest == self.digest {
            Ok(self.bytes.clone())
        } else {
            Err(ModuleStoreError::Missing(format!("no module {digest}")))
        }
    }
}

/// `n` runs of the module through a `WasmBackend` (after 20 unmeasured), each with its output
/// captured through an `OutputSink` channel as the suite runner does: µs per run.
async fn backend_floor(module: &[u8], n: usize, expected: &str) -> Result<Vec<f64>> {
    let work = tempfile::Builder::new()
        .prefix("nekton-grading-wasm-")
        .tempdir()
        .context("creating the benchmark's work directory")?;
    let digest = wasm_backend::module_digest(module);
    let store = OneModule {
        digest: digest.clone(),
        bytes: module.to_vec(),
    };
    let backend = WasmBackend::new(
        WasmConfig {
            cache_dir: work.path().join("cache"),
            scratch_dir: Some(work.path().to_path_buf()),
            ..WasmConfig::default()
        },
        Arc::new(store),
    )
    .context("starting a Wasm backend in this process")?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let request = ExecRequest {
            job_id: format!("floor-{i}"),
            program: Program::WasmModule {
                digest: digest.clone(),
            },
            args: vec![],
            env: vec![],
            stdin: vec![],
            files: vec![],
            limits: Limits {
                wall_time: Duration::from_secs(10),
                cpu_time: None,
                memory_bytes: 64 << 20,
                fuel: None,
                output_bytes: 65536,
                pids: None,
                disk_bytes: None,
            },
            container: Default::default(),
            chain: Default::default(),
            artifacts: Default::default(),
            wasm: Default::default(),
        };
        let start = Instant::now();
        let (sink, mut rx) = OutputSink::channel(65536, 256);
        let collector = tokio::spawn(async move {
            let mut stdout = Vec::new();
            while let Some(chunk) = rx.recv().await {
                if chunk.stream == Stream::Stdout {
                    stdout.extend_from_slice(&chunk.data);
                }
            }
            stdout
        });
        let report = backend
            .run(
                request,
                JobIo {
                    output: sink,
                    cancel: CancellationToken::new(),
                },
            )
            .await;
        let stdout = collector.await.unwrap_or_default();
        let d = start.elapsed();
        if !report.outcome.is_success() || stdout != expected.as_bytes() {
            bail!(
                "in-process Wasm run {i}: {:?}, stdout {:?}",
                report.outcome,
                String::from_utf8_lossy(&stdout)
            );
        }
        if i >= 20 {
            out.push(d.as_secs_f64() * 1e6);
        }
    }
    Ok(out)
}
