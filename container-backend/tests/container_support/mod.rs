//! Shared helpers of the container tests: images built in the test (a busybox-static rootfs plus
//! extra layers) imported from an OCI layout directory, a backend on a fresh state dir, and a
//! runner collecting output.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use container_backend::{ContainerBackend, ContainerConfig, UsernsConfig, UsernsMode};
use image_store::{ImageService, ImageStore, RegistryOptions, StoreLimits, media_types};
use runtime_core::{CancellationToken, ContainerOptions, ExecRequest, InputFile, Limits, Program};
use serde_json::{Value, json};

use super::image_support::{Layer, TarBuilder, busybox_rootfs_tar, require_root, sha};

/// A busybox rootfs layer with a symlink for every applet, so `ls`, `ps`, `id`... exist as files.
pub fn busybox_full_tar() -> Vec<u8> {
    let base = busybox_rootfs_tar();
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut t = TarBuilder::new();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || ["busybox", "sh", "echo", "cat", "[", "[["].contains(&applet) {
            continue;
        }
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    // Two tars concatenated are not one tar: rebuild as one stream by appending the base entries.
    let extra = t.finish();
    let mut merged = tar::Builder::new(Vec::new());
    for data in [&base, &extra] {
        let mut a = tar::Archive::new(&data[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
            let path = e.path_bytes().into_owned();
            h.set_cksum();
            merged
                .append_data(&mut h, String::from_utf8_lossy(&path).as_ref(), &buf[..])
                .unwrap();
        }
    }
    merged.into_inner().unwrap()
}

/// An image config: `Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`.
pub fn config(entrypoint: &[&str], cmd: &[&str], env: &[&str], workdir: &str, user: &str) -> Value {
    json!({
        "Entrypoint": if entrypoint.is_empty() { Value::Null } else { json!(entrypoint) },
        "Cmd": if cmd.is_empty() { Value::Null } else { json!(cmd) },
        "Env": env,
        "WorkingDir": workdir,
        "User": user,
    })
}

pub fn default_config() -> Value {
    config(&[], &["sh"], &["PATH=/bin:/usr/bin"], "/", "")
}

pub struct TestEnv {
    pub tmp: tempfile::TempDir,
    pub images: ImageService,
    pub backend: Arc<ContainerBackend>,
    pub state_dir: PathBuf,
    seq: std::sync::atomic::AtomicU32,
}

/// The user namespace mode of this test binary's backends. Every container test file runs with
/// user namespaces on — required: a host without them fails the tests, naming why — except
/// the `*_no_userns` binaries (the same tests through `#[path]`, see Cargo.toml), which turn
/// them off; `NEKTON_TEST_USERNS=off|on` overrides both for a manual run.
pub fn userns_mode() -> UsernsMode {
    if let Ok(v) = std::env::var("NEKTON_TEST_USERNS") {
        return v
            .parse()
            .unwrap_or_else(|e| panic!("NEKTON_TEST_USERNS: {e}"));
    }
    if env!("CARGO_CRATE_NAME").ends_with("_no_userns") {
        UsernsMode::Off
    } else {
        UsernsMode::On
    }
}

/// Whether this binary's backends run jobs in user namespaces.
pub fn rootless() -> bool {
    userns_mode() != UsernsMode::Off
}

impl TestEnv {
    pub fn new() -> Self {
        Self::build(None, |_| {})
    }

    /// A fresh image store, and a backend on `state_dir` (kept when the env is dropped).
    pub fn with_state_dir(state_dir: PathBuf) -> Self {
        Self::build(Some(state_dir), |_| {})
    }

    /// A fresh image store, and a backend whose config `tweak` changes.
    pub fn with_config(tweak: impl FnOnce(&mut ContainerConfig)) -> Self {
        Self::build(None, tweak)
    }

    fn build(state_dir: Option<PathBuf>, tweak: impl FnOnce(&mut ContainerConfig)) -> Self {
        require_root();
        // Beside the given state dir (a killed helper process cannot remove its temp dir; the
        // parent test's does), else in /tmp (short paths: overlayfs options are ≤ 255 bytes).
        let parent = state_dir
            .as_ref()
            .and_then(|s| s.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let tmp = tempfile::Builder::new()
            .prefix("nkc")
            .tempdir_in(parent)
            .unwrap();
        let store = ImageStore::open(tmp.path().join("s"), StoreLimits::default()).unwrap();
        let images = ImageService::new(Arc::new(store), RegistryOptions::default()).unwrap();
        let state_dir = state_dir.unwrap_or_else(|| tmp.path().join("c"));
        let mut config = ContainerConfig {
            state_dir: state_dir.clone(),
            scratch_bytes: 64 << 20,
            shm_bytes: 8 << 20,
            userns: UsernsConfig {
                mode: userns_mode(),
                ..UsernsConfig::default()
            },
            ..Default::default()
        };
        tweak(&mut config);
        let backend = ContainerBackend::new(config, images.clone())
            .unwrap_or_else(|e| panic!("container backend: {e}"));
        Self {
            tmp,
            images,
            backend: Arc::new(backend),
            state_dir,
            seq: Default::default(),
        }
    }

    /// Imports an image made of `layers` (uncompressed tars, bottom first) with `config` as
    /// `example.com/test/<name>:1` and returns the reference.
    pub async fn image(&self, name: &str, layers: &[Vec<u8>], config: Value) -> String {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let layout = self.tmp.path().join(format!("layout-{n}"));
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let d = sha(bytes);
            fs::write(blobs.join(d.strip_prefix("sha256:").unwrap()), bytes).unwrap();
            d
        };
        let layers: Vec<Layer> = layers.iter().map(|t| Layer::gzip(t)).collect();
        let cfg = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        }))
        .unwrap();
        let descs: Vec<Value> = layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": put(&l.blob), "size": l.blob.len()}))
            .collect();
        let cfg_digest = put(&cfg);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": {"mediaType": media_types::OCI_CONFIG, "digest": cfg_digest, "size": cfg.len()},
            "layers": descs,
        }))
        .unwrap();
        let m = put(&manifest);
        let reference = format!("example.com/test/{name}:1");
        fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
                "mediaType": media_types::OCI_MANIFEST, "digest": m, "size": manifest.len(),
                "annotations": {"io.containerd.image.name": reference},
            }]}))
            .unwrap(),
        )
        .unwrap();
        self.images.import(&layout, None, None).await.unwrap();
        reference
    }

    /// The busybox image with every applet, plus `extra` layers on top.
    pub async fn busybox(&self, name: &str, extra: &[Vec<u8>], config: Value) -> String {
        let mut layers = vec![busybox_full_tar()];
        layers.extend_from_slice(extra);
        self.image(name, &layers, config).await
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.state_dir.join("jobs")
    }
}

pub fn request(image: &str, cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        job_id: "0190a3c4-test-job".into(),
        program: Program::Image {
            reference: image.to_string(),
        },
        args: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        stdin: vec![],
        files: vec![],
        limits: Limits {
            wall_time: Duration::from_secs(30),
            cpu_time: None,
            memory_bytes: 256 << 20,
            fuel: None,
            output_bytes: 1 << 20,
            pids: None,
            disk_bytes: None,
        },
        container: ContainerOptions::default(),
        chain: Default::default(),
        artifacts: Default::default(),
        wasm: Default::default(),
    }
}

pub fn sh(image: &str, script: &str) -> ExecRequest {
    let mut r = request(image, &["-c", script]);
    r.container.entrypoint = Some(vec!["sh".into()]);
    r
}

pub fn file(path: &str, content: &[u8], mode: Option<u32>) -> InputFile {
    InputFile {
        path: path.into(),
        content: content.to_vec(),
        mode,
    }
}

/// The runner every backend's tests share (`runtime_core::conformance`): runs a request with a
/// fresh sink and collects what the job wrote.
pub use runtime_core::conformance::{Finished, run as run_with};

pub async fn run(env: &TestEnv, req: ExecRequest) -> Finished {
    run_with(env.backend.as_ref(), req, CancellationToken::new()).await
}

/// Mount points of this (the host's) mount namespace under `dir`.
pub fn host_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// Processes whose root or cwd is under `dir` (a leaked container process would show here).
pub fn processes_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for link in ["root", "cwd"] {
            if let Ok(t) = fs::read_link(e.path().join(link))
                && t.starts_with(dir)
            {
                out.push(format!("{name} {link} -> {}", t.display()));
            }
        }
    }
    out
}

/// A job started in the background: its live stdout, and cancel + report.
pub struct Running {
    cancel: CancellationToken,
    job: tokio::task::JoinHandle<runtime_core::ExecReport>,
    out: Vec<u8>,
    rx: tokio::sync::mpsc::Receiver<runtime_core::OutputChunk>,
}

impl Running {
    pub fn start(env: &TestEnv, req: ExecRequest) -> Self {
        let (sink, rx) = runtime_core::OutputSink::channel(req.limits.output_bytes, 64);
        let cancel = CancellationToken::new();
        let backend = env.backend.clone();
        let job_cancel = cancel.clone();
        let job = tokio::spawn(async move {
            runtime_core::Backend::run(
                backend.as_ref(),
                req,
                runtime_core::JobIo {
                    output: sink,
                    cancel: job_cancel,
                },
            )
            .await
        });
        Self {
            cancel,
            job,
            out: Vec::new(),
            rx,
        }
    }

    /// Reads stdout until it ends with `marker`; returns everything read so far.
    pub async fn until(&mut self, marker: &str) -> String {
        while !self.out.ends_with(marker.as_bytes()) {
            let c = tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
                .await
                .expect("the job did not print in time")
                .unwrap_or_else(|| {
                    panic!(
                        "the job ended before printing {marker:?}: {}",
                        String::from_utf8_lossy(&self.out)
                    )
                });
            if c.stream == runtime_core::Stream::Stdout {
                self.out.extend_from_slice(&c.data);
            }
        }
        String::from_utf8_lossy(&self.out).into_owned()
    }

    pub async fn stop(self) -> runtime_core::ExecReport {
        self.cancel.cancel();
        self.job.await.unwrap()
    }
}

/// The parent pid of host process `pid` (from `/proc/PID/stat`).
pub fn ppid_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // `pid (comm) state ppid …`; comm may contain spaces, so split after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A layer with `/etc/passwd` (root; `app`, uid 1234, gid 1300, home `/home/app`) and
/// `/etc/group` (`app` 1300; `extra` 1400 with `app` as a member).
pub fn users_layer() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1300:App:/home/app:/bin/sh\n",
            0o644,
        )
        .file(
            "etc/group",
            b"root:x:0:\napp:x:1300:\nextra:x:1400:app\n",
            0o644,
        )
        .dir("home/", 0o755)
        .dir("home/app/", 0o755)
        .finish()
}
