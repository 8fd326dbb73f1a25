//! Container jobs end to end: an image in a real registry, submitted through the API, run by the
//! Linux container backend, its outcome and output read back through the API — and the `nekton`
//! binary as a new user runs it (`serve --insecure-registry`, then `run IMAGE -- CMD`).
//! Root only (namespaces, overlayfs, cgroups); a missing prerequisite fails with its name.

mod common;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Harness;
use image_store::media_types;
use image_support::{
    Layer, Pusher, Registry, TarBuilder, busybox_rootfs_tar, config_json, host_arch, require_root,
};
use nekton::api::types::{Encoding, InputFileSpec, Job, JobSpec, JobState};
use nekton::cli::StdStream;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_nekton");

struct Env {
    registry: Registry,
    pusher: Pusher,
    h: Harness,
    _tmp: tempfile::TempDir,
}

impl Env {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut nekton::server::ProcessOptions)) -> Self {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::start(tmp.path());
        let host = registry.host();
        let pusher = Pusher::new(&host);
        let h = Harness::start_with(|o| {
            o.images.insecure_registries = vec![host.clone()];
            tweak(o);
        })
        .await;
        Env {
            registry,
            pusher,
            h,
            _tmp: tmp,
        }
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.host())
    }

    /// busybox plus `extra` layers, pushed as `repo:1`; returns the reference.
    async fn push(&self, repo: &str, extra: &[Vec<u8>]) -> String {
        let mut layers = vec![Layer::gzip(&busybox_rootfs_tar())];
        layers.extend(extra.iter().map(|t| Layer::gzip(t)));
        let config = config_json(&host_arch(), &layers, &["sh"]);
        self.pusher
            .image(repo, "1", &layers, &config, media_types::OCI_CONFIG)
            .await;
        self.reference(&format!("{repo}:1"))
    }

    async fn run(&self, spec: JobSpec) -> Job {
        let job = self.h.submit(&spec).await;
        self.h.wait_finished(job.id, WAIT).await
    }

    async fn output(&self, job: &Job, stream: StdStream) -> String {
        let bytes = self
            .h
            .client
            .plain_log_bytes(job.id, Some(stream))
            .await
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn sh(image: &str, script: &str) -> JobSpec {
    JobSpec {
        image: Some(image.to_string()),
        args: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_signals_and_logs_through_the_api() {
    let env = Env::start().await;
    let image = env.push("busybox", &[]).await;

    let job = env.run(sh(&image, "echo hi; exit 7")).await;
    assert_eq!(job.state, JobState::Failed, "{:?}", job.outcome);
    let o = job.outcome.as_ref().unwrap();
    assert_eq!((o.reason.as_str(), o.exit_code), ("exited", Some(7)));
    assert_eq!(env.output(&job, StdStream::Stdout).await, "hi\n");
    let usage = job.usage.as_ref().unwrap();
    assert!(usage.setup_ms.is_some() && usage.wall_ms.is_some());
    assert_eq!(usage.stdout_bytes, 3);

    let job = env.run(sh(&image, "echo err >&2; kill -9 $$")).await;
    assert_eq!(job.state, JobState::Failed);
    let o = job.outcome.as_ref().unwrap();
    assert_eq!((o.reason.as_str(), o.signal), ("signaled", Some(9)));
    assert_eq!(env.output(&job, StdStream::Stderr).await, "err\n");

    let job = env.run(sh(&image, "echo ok")).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);

    // The image's own cmd (`sh`) with stdin, and an entrypoint override.
    let job = env
        .run(JobSpec {
            image: Some(image.clone()),
            stdin: Some("echo from-stdin\n".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(env.output(&job, StdStream::Stdout).await, "from-stdin\n");
    let job = env
        .run(JobSpec {
            image: Some(image.clone()),
            entrypoint: Some(vec!["/bin/echo".into()]),
            args: vec!["entry".into(), "point".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(env.output(&job, StdStream::Stdout).await, "entry point\n");
}

/// A worker runs at most `--container-slots` container jobs at once, and its other slots keep
/// running Wasm jobs meanwhile: with one container slot (of 8), a second container job waits
/// for the first to end, and a Wasm job submitted after both runs before it.
#[tokio::test(flavor = "multi_thread")]
async fn container_jobs_keep_to_the_container_slots_while_wasm_jobs_run_beside_them() {
    let env = Env::start_with(|o| o.container_slots = Some(1)).await;
    let image = env.push("slots", &[]).await;
    let hello = env.h.push(common::guests::hello()).await;
    let first = env.h.submit(&sh(&image, "sleep 2")).await;
    let second = env.h.submit(&sh(&image, "true")).await;
    env.h.wait_running(first.id, WAIT).await;
    let wasm = env.h.submit(&Harness::spec(&hello)).await;
    let wasm = env.h.wait_finished(wasm.id, WAIT).await;
    assert_eq!(wasm.state, JobState::Succeeded, "{wasm:?}");
    let waiting = env.h.client.get_job(second.id).await.unwrap();
    assert_eq!(
        waiting.state,
        JobState::Queued,
        "one container slot, taken by the first job: the second waits ({waiting:?})"
    );
    let first = env.h.wait_finished(first.id, WAIT).await;
    let second = env.h.wait_finished(second.id, WAIT).await;
    for job in [&first, &second] {
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    }
    let (ended, started) = (first.finished_at.unwrap(), second.started_at.unwrap());
    assert!(
        started >= ended,
        "the second container job started ({started}) before the first ended ({ended})"
    );
    assert!(
        wasm.finished_at.unwrap() < ended,
        "the Wasm job ran while the container slot was taken"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn env_workdir_user_stdin_and_files_reach_the_process() {
    let env = Env::start().await;
    let image = env.push("busybox", &[]).await;
    let job = env
        .run(JobSpec {
            workdir: Some("/work/dir".into()),
            user: Some("1234:4321".into()),
            env: [("GREETING".to_string(), "hello there".to_string())].into(),
            stdin: Some(base64::engine::general_purpose::STANDARD.encode(b"in\x00put")),
            stdin_encoding: Some(Encoding::Base64),
            files: vec![InputFileSpec {
                path: "data/a.txt".into(),
                content: "file content".into(),
                encoding: None,
                mode: Some(0o600),
            }],
            ..sh(
                &image,
                "echo \"$GREETING\"; pwd; busybox id -u; busybox id -g; cat data/a.txt; echo; \
                 cat | busybox od -c | busybox head -1",
            )
        })
        .await;
    let out = env.output(&job, StdStream::Stdout).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{:?}\n{out}\n{}",
        job.outcome,
        env.output(&job, StdStream::Stderr).await
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..5],
        ["hello there", "/work/dir", "1234", "4321", "file content"],
        "{out}"
    );
    assert!(lines[5].contains("i   n  \\0   p   u   t"), "{out}");

    // A user name from the image's /etc/passwd.
    let job = env
        .run(JobSpec {
            user: Some("nobody".into()),
            ..sh(&image, "busybox id -u")
        })
        .await;
    assert_eq!(env.output(&job, StdStream::Stdout).await, "65534\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_hide_lower_files() {
    let env = Env::start().await;
    let upper = TarBuilder::new()
        .file("etc/.wh.group", b"", 0o644)
        .file("etc/added", b"new\n", 0o644)
        .finish();
    let image = env.push("whiteout", &[upper]).await;
    let job = env
        .run(sh(
            &image,
            "[ -e /etc/group ] && echo present || echo gone; cat /etc/added",
        ))
        .await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);
    assert_eq!(env.output(&job, StdStream::Stdout).await, "gone\nnew\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_arch_index_runs_this_hosts_image() {
    let env = Env::start().await;
    let mut entries = Vec::new();
    for arch in ["arm64", "amd64", "riscv64"] {
        let tar = TarBuilder::new()
            .file("arch", arch.as_bytes(), 0o644)
            .finish();
        let layers = [Layer::gzip(&busybox_rootfs_tar()), Layer::gzip(&tar)];
        let config = config_json(arch, &layers, &["sh"]);
        let pushed = env
            .pusher
            .image("multi", "@", &layers, &config, media_types::OCI_CONFIG)
            .await;
        entries.push((json!({"architecture": arch, "os": "linux"}), pushed));
    }
    env.pusher.index("multi", "1", &entries).await;
    let job = env.run(sh(&env.reference("multi:1"), "cat /arch")).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);
    assert_eq!(env.output(&job, StdStream::Stdout).await, host_arch());
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so the embedded PostgreSQL is stopped; SIGKILL if it hangs.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nekton_run_of_a_registry_image_prints_and_exits_with_the_jobs_code() {
    require_root();
    let tmp = common::serve_state_dir("nekton-containers-");
    let registry = Registry::start(tmp.path());
    let host = registry.host();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pusher = Pusher::new(&host);
        let layers = [Layer::gzip(&busybox_rootfs_tar())];
        let config = config_json(&host_arch(), &layers, &["sh"]);
        pusher
            .image("busybox", "1", &layers, &config, media_types::OCI_CONFIG)
            .await;
    });
    let port = common::free_port();
    let server = format!("http://127.0.0.1:{port}");
    let state = tmp.path().join("state");
    let _serve = Proc(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--insecure-registry",
                &host,
                // Tests never touch the host's networking unless they are about it.
                "--no-bridge-network",
            ])
            .arg("--state-dir")
            .arg(&state)
            .env_remove("NEKTON_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && Command::new(BIN)
                .env("NEKTON_STATE_DIR", &state)
                .args(["jobs", "ls", "--server", &server])
                .output()
                .is_ok_and(|o| o.status.success());
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "nekton serve did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }

    let image = format!("{host}/busybox:1");
    let out = Command::new(BIN)
        .env("NEKTON_STATE_DIR", &state)
        .args([
            "run",
            "--server",
            &server,
            &image,
            "--",
            "sh",
            "-c",
            "echo hi; exit 7",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(7), "stderr: {stderr}");

    let out = Command::new(BIN)
        .env("NEKTON_STATE_DIR", &state)
        .args([
            "run",
            "--server",
            &server,
            &image,
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + 15));

    // image ls / pull / rm through the CLI.
    let out = Command::new(BIN)
        .env("NEKTON_STATE_DIR", &state)
        .args(["image", "ls", "--server", &server])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&image));
    let out = Command::new(BIN)
        .env("NEKTON_STATE_DIR", &state)
        .args(["image", "pull", "--server", &server, &image])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("already stored"), "{stdout}");
    let out = Command::new(BIN)
        .env("NEKTON_STATE_DIR", &state)
        .args(["image", "rm", "--server", &server, &image])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .env("NEKTON_STATE_DIR", &state)
        .args(["image", "rm", "--server", &server, &image])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not stored"));

    // An OCI layout directory imported with the CLI (tarred on the fly) runs without a registry.
    let layout = tmp.path().join("layout");
    write_wasm_layout(&layout, &common::guests::hello());
    let out = Command::new(BIN)
        .env("NEKTON_STATE_DIR", &state)
        .args([
            "image",
            "import",
            "--server",
            &server,
            "--reference",
            "offline/hello:1",
        ])
        .arg(&layout)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker.io/offline/hello:1"));
    let out = Command::new(BIN)
        .env("NEKTON_STATE_DIR", &state)
        .args(["run", "--server", &server, "offline/hello:1"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(out.status.code(), Some(0));

    // An unreachable registry: a failed command with the reason.
    let out = Command::new(BIN)
        .args([
            "image",
            "pull",
            "-q",
            "--server",
            &server,
            "127.0.0.1:1/x:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Writes an OCI image layout directory holding one Wasm artifact image.
fn write_wasm_layout(dir: &std::path::Path, module: &[u8]) {
    let sha = image_support::sha;
    let config = br#"{"architecture":"wasm","os":"wasip1"}"#.to_vec();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::WASM_CONFIG_V0, "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": media_types::WASM_LAYER, "digest": sha(module), "size": module.len()}],
    }))
    .unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for blob in [&config[..], module, &manifest[..]] {
        let digest = sha(blob);
        std::fs::write(blobs.join(digest.strip_prefix("sha256:").unwrap()), blob).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [{"mediaType": media_types::OCI_MANIFEST, "digest": sha(&manifest), "size": manifest.len()}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn container_limits_take_effect_and_the_bill_is_complete() {
    use nekton::api::types::LimitsSpec;
    let env = Env::start().await;
    let image = env.push("limits", &[]).await;
    let limits = |disk_bytes: u64, memory_bytes: u64| {
        Some(LimitsSpec {
            pids: Some(16),
            disk_bytes: Some(disk_bytes),
            memory_bytes: Some(memory_bytes),
            cpu_time_ms: Some(10_000),
            ..Default::default()
        })
    };
    // disk_bytes sizes the writable layer: 20 MB do not fit in 8 MiB.
    let mut spec = sh(
        &image,
        "busybox head -c 20000000 /dev/zero > /big; echo status $?",
    );
    spec.limits = limits(8 << 20, 128 << 20);
    let job = env.run(spec).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);
    assert_eq!(env.output(&job, StdStream::Stdout).await, "status 1\n");
    let u = job.usage.as_ref().unwrap();
    // The container bill: cgroup CPU, peak memory (the 8 MiB tmpfs is charged to the job), pids.
    assert!(
        u.cpu_user_ms.is_some() && u.cpu_system_ms.is_some(),
        "{u:?}"
    );
    let peak = u
        .memory_peak_bytes
        .expect("memory_peak_bytes for a container job");
    assert!((8 << 20..128 << 20).contains(&peak), "{u:?}");
    let pids = u.pids_peak.expect("pids_peak for a container job");
    assert!((2..=16).contains(&pids), "{u:?}");

    // The writable layer is memory: filling it past memory_bytes ends as memory_limit.
    let mut spec = sh(&image, "busybox head -c 100000000 /dev/zero > /big");
    spec.limits = limits(200 << 20, 32 << 20);
    let job = env.run(spec).await;
    assert_eq!(job.state, JobState::Failed);
    let o = job.outcome.as_ref().unwrap();
    assert_eq!(o.reason.as_str(), "memory_limit", "{o:?}");
}
