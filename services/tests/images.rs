//! Images through the service, against a real registry (Debian's `docker-registry` on 127.0.0.1)
//! and real PostgreSQL: the `/v1/images` endpoints, image jobs routed by the image's kind, pull
//! coalescing, registry configuration, and hostile images. Runs as root (layer extraction keeps
//! owners and makes whiteout devices); a missing prerequisite fails with its name.

mod common;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{Harness, guests};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use image_store::media_types;
use image_support::{
    Layer, Pushed, Pusher, Registry, TEST_PASSWORD, TEST_USER, TarBuilder, busybox_rootfs_tar,
    config_json, host_arch, require_root, sha, tree,
};
use nekton::api::types::{
    ImageKindView, ImageList, ImportResult, Job, JobSpec, JobState, LimitsSpec, PullResult,
    RuntimeKind,
};
use nekton::cli::StdStream;
use nekton::images::ImageOptions;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

struct Env {
    registry: Registry,
    pusher: Pusher,
    h: Harness,
    tmp: tempfile::TempDir,
}

impl Env {
    async fn start() -> Self {
        Self::start_with(|host, o| o.insecure_registries = vec![host.to_string()]).await
    }

    async fn start_with(tweak: impl FnOnce(&str, &mut ImageOptions)) -> Self {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::start(tmp.path());
        let host = registry.host();
        let pusher = Pusher::new(&host);
        let h = Harness::start_with(|o| tweak(&host, &mut o.images)).await;
        Env {
            registry,
            pusher,
            h,
            tmp,
        }
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.host())
    }

    async fn push_wasm(&self, repo: &str, tag: &str, module: &[u8]) -> Pushed {
        let layer = Layer {
            blob: module.to_vec(),
            media_type: media_types::WASM_LAYER.to_string(),
            diff_id: sha(module),
        };
        self.pusher
            .image(
                repo,
                tag,
                &[layer],
                br#"{"architecture":"wasm","os":"wasip1"}"#,
                media_types::WASM_CONFIG_V0,
            )
            .await
    }

    async fn push_busybox(&self, repo: &str, tag: &str) -> Pushed {
        let layers = [Layer::gzip(&busybox_rootfs_tar())];
        let config = config_json(&host_arch(), &layers, &["sh"]);
        self.pusher
            .image(repo, tag, &layers, &config, media_types::OCI_CONFIG)
            .await
    }

    async fn pull(&self, reference: &str, policy: &str) -> (u16, Value) {
        let resp = self
            .h
            .http
            .post(format!("{}/v1/images/pull", self.h.base))
            .json(&json!({"reference": reference, "policy": policy}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn run(&self, spec: JobSpec) -> Job {
        let job = self.h.submit(&spec).await;
        self.h.wait_finished(job.id, WAIT).await
    }

    async fn stdout(&self, job: &Job) -> String {
        let bytes = self
            .h
            .client
            .plain_log_bytes(job.id, Some(StdStream::Stdout))
            .await
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn image_spec(reference: &str) -> JobSpec {
    JobSpec {
        image: Some(reference.to_string()),
        ..Default::default()
    }
}

fn outcome(job: &Job) -> (JobState, String, Option<String>) {
    let o = job.outcome.as_ref().expect("a finished job has an outcome");
    (job.state, o.reason.to_string(), o.detail.clone())
}

fn encoded(reference: &str) -> String {
    nekton::cli::client::encode_reference(reference)
}

#[tokio::test(flavor = "multi_thread")]
async fn image_endpoints_pull_list_get_delete_and_refuse_bad_input() {
    let env = Env::start().await;
    let pushed = env.push_busybox("busybox", "1").await;
    let reference = env.reference("busybox:1");

    let (status, body) = env.pull(&reference, "if_not_present").await;
    assert_eq!(status, 200, "{body}");
    let first: PullResult = serde_json::from_value(body).unwrap();
    assert_eq!(first.image.reference, reference);
    assert_eq!(first.image.kind, ImageKindView::Container);
    assert_eq!(first.image.manifest_digest, pushed.manifest);
    assert_eq!(first.image.layers.len(), 1);
    assert!(first.image.unpacked_size_bytes > 0);
    assert!(!first.from_cache);
    assert_eq!(first.stats.blobs_downloaded, 2, "config and layer");

    // Stored: a second pull downloads nothing, with either policy.
    let again = env.h.client.pull_image(&reference, false).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(again.stats.blobs_downloaded, 0);
    let gets = env.registry.blob_gets("busybox");
    let always = env.h.client.pull_image(&reference, true).await.unwrap();
    assert!(!always.from_cache);
    assert_eq!(always.stats.blobs_downloaded, 0);
    assert_eq!(
        env.registry.blob_gets("busybox"),
        gets,
        "no blob fetched again"
    );

    // List and get (percent-encoded, and the short form of a reference works too).
    let list: ImageList = env.h.client.list_images().await.unwrap();
    assert_eq!(list.images.len(), 1);
    assert_eq!(list.images[0].reference, reference);
    assert_eq!(
        list.images[0].platform.as_deref(),
        Some(&*format!("linux/{}", host_arch()))
    );
    let got = env.h.client.get_image(&reference).await.unwrap();
    assert_eq!(got, list.images[0]);
    let resp = env
        .h
        .http
        .get(format!("{}/v1/images/{}", env.h.base, encoded(&reference)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Bad input: 4xx in the API's error shape, never 500.
    let (status, body) = env.pull("Not A Reference!", "if_not_present").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_reference");
    assert_eq!(body["error"]["field"], "reference");
    let (status, body) = env.pull(&env.reference("busybox:nope"), "always").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = env.pull("127.0.0.1:1/nothing:1", "always").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "registry_error");
    let resp = env
        .h
        .http
        .post(format!("{}/v1/images/pull", env.h.base))
        .json(&json!({"reference": reference, "policy": "sometimes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = env
        .h
        .http
        .get(format!(
            "{}/v1/images/{}",
            env.h.base,
            encoded(&env.reference("other:1"))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Delete: the record goes, a second delete is a 404; gc frees the blobs.
    let removed = env.h.client.delete_image(&reference).await.unwrap();
    assert_eq!(removed.reference, reference);
    let resp = env
        .h
        .http
        .delete(format!("{}/v1/images/{}", env.h.base, encoded(&reference)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(env.h.client.list_images().await.unwrap().images.is_empty());
    let gc = env.h.client.gc_images().await.unwrap();
    assert!(gc.removed_layers.contains(&pushed.layers[0]), "{gc:?}");
    assert!(gc.freed_bytes > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_progress_streams_as_sse() {
    let env = Env::start().await;
    let pushed = env.push_busybox("sse", "1").await;
    let reference = env.reference("sse:1");
    let resp = env
        .h
        .http
        .post(format!("{}/v1/images/pull", env.h.base))
        .header("accept", "text/event-stream")
        .json(&json!({"reference": reference}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = resp.bytes_stream().eventsource();
    let mut names = Vec::new();
    let mut done = None;
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        names.push(ev.event.clone());
        if ev.event == "done" {
            done = Some(serde_json::from_str::<PullResult>(&ev.data).unwrap());
            break;
        }
        if ev.event == "resolved" {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(v["manifest_digest"], pushed.manifest.as_str());
            assert_eq!(v["layers"][0]["digest"], pushed.layers[0].as_str());
        }
        assert_ne!(ev.event, "error", "{}", ev.data);
    }
    assert_eq!(
        names.first().map(String::as_str),
        Some("resolved"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "progress"), "{names:?}");
    assert!(names.iter().any(|n| n == "extracted"), "{names:?}");
    assert_eq!(done.unwrap().image.manifest_digest, pushed.manifest);

    // The CLI's client reads the same stream; a failing pull ends with an `error` event.
    let mut events = env
        .h
        .client
        .pull_image_events(&env.reference("sse:missing"), false)
        .await
        .unwrap();
    let mut err = None;
    while let Some(ev) = events.next().await {
        if let Err(e) = ev {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("an error event");
    let api = err.downcast_ref::<nekton::cli::ApiError>().unwrap();
    assert_eq!(api.code, "image_not_in_registry", "{api}");
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_registry_not_listed_is_refused_with_a_clear_error() {
    let env = Env::start_with(|_, _| {}).await;
    env.push_busybox("plain", "1").await;
    let reference = env.reference("plain:1");
    let (status, body) = env.pull(&reference, "if_not_present").await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("--insecure-registry {}", env.registry.host())),
        "{message}"
    );
    // A job on it ends image_error with the same explanation, and is not retried.
    let job = env.run(image_spec(&reference)).await;
    let (state, reason, detail) = outcome(&job);
    assert_eq!((state, reason.as_str()), (JobState::Error, "image_error"));
    assert!(detail.unwrap().contains("--insecure-registry"));
    assert_eq!(job.attempt, 1);
    assert_eq!(env.registry.blob_gets("plain"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowlist_refuses_other_registries() {
    let env = Env::start_with(|host, o| {
        o.insecure_registries = vec![host.to_string()];
        o.allowed_registries = Some(vec!["registry.example.com".into()]);
    })
    .await;
    env.push_busybox("denied", "1").await;
    let reference = env.reference("denied:1");
    let (status, body) = env.pull(&reference, "if_not_present").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "registry_not_allowed");
    let job = env.run(image_spec(&reference)).await;
    let (state, reason, detail) = outcome(&job);
    assert_eq!((state, reason.as_str()), (JobState::Error, "image_error"));
    assert!(
        detail
            .unwrap()
            .contains("not in the list of allowed registries")
    );
    assert_eq!(env.registry.blob_gets("denied"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_image_runs_on_the_wasm_backend() {
    let env = Env::start().await;
    env.push_wasm("hello-wasm", "1", &guests::hello()).await;
    let reference = env.reference("hello-wasm:1");

    let job = env.run(image_spec(&reference)).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);
    assert_eq!(env.stdout(&job).await, "hello\n");
    assert_eq!(job.program, reference);
    assert!(job.usage.as_ref().unwrap().setup_ms.is_some());

    // runtime: wasm with a fuel budget works on a Wasm image.
    let job = env
        .run(JobSpec {
            runtime: Some(RuntimeKind::Wasm),
            limits: Some(LimitsSpec {
                fuel: Some(1_000_000),
                ..Default::default()
            }),
            ..image_spec(&reference)
        })
        .await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);

    // The container runtime cannot run a Wasm image, nor the Wasm runtime a container image.
    let job = env
        .run(JobSpec {
            runtime: Some(RuntimeKind::Container),
            ..image_spec(&reference)
        })
        .await;
    let (state, reason, detail) = outcome(&job);
    assert_eq!((state, reason.as_str()), (JobState::Error, "spec_error"));
    assert!(detail.unwrap().contains("is a Wasm image"));

    env.push_busybox("box", "1").await;
    let job = env
        .run(JobSpec {
            runtime: Some(RuntimeKind::Wasm),
            ..image_spec(&env.reference("box:1"))
        })
        .await;
    let (state, reason, detail) = outcome(&job);
    assert_eq!((state, reason.as_str()), (JobState::Error, "spec_error"));
    assert!(detail.unwrap().contains("not a Wasm artifact"));

    // Container-only fields on a Wasm image are a spec error, not silently ignored.
    let job = env
        .run(JobSpec {
            workdir: Some("/work".into()),
            ..image_spec(&reference)
        })
        .await;
    assert_eq!(outcome(&job).1, "spec_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_jobs_on_one_new_image_pull_it_once() {
    let env = Env::start().await;
    env.push_wasm("ten", "1", &guests::hello()).await;
    let reference = env.reference("ten:1");
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(env.h.submit(&image_spec(&reference)).await.id);
    }
    for id in ids {
        let job = env.h.wait_finished(id, WAIT).await;
        assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);
        assert_eq!(env.stdout(&job).await, "hello\n");
    }
    assert_eq!(
        env.registry.blob_gets("ten"),
        2,
        "config and module fetched once each:\n{}",
        env.registry.log()
    );
    // And a later pull downloads nothing.
    let again = env.h.client.pull_image(&reference, false).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(env.registry.blob_gets("ten"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn malicious_images_end_in_image_error_and_write_nothing_outside_the_store() {
    let env = Env::start().await;
    let sentinel = env.tmp.path().join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            TarBuilder::new().file("../../x", b"x", 0o644).finish(),
        ),
        (
            "abs-symlink",
            TarBuilder::new()
                .symlink("evil", &sentinel.display().to_string())
                .file("evil/pwned", b"x", 0o644)
                .finish(),
        ),
        (
            "hardlink",
            TarBuilder::new().hardlink("passwd", "/etc/passwd").finish(),
        ),
        (
            "proc",
            TarBuilder::new()
                .symlink("proc", "/proc")
                .file("proc/x", b"x", 0o644)
                .finish(),
        ),
    ];
    let mut ids = Vec::new();
    for (repo, tar) in &cases {
        let layers = [Layer::gzip(&busybox_rootfs_tar()), Layer::gzip(tar)];
        let config = config_json(&host_arch(), &layers, &["sh"]);
        env.pusher
            .image(repo, "1", &layers, &config, media_types::OCI_CONFIG)
            .await;
        ids.push((
            *repo,
            env.h
                .submit(&image_spec(&env.reference(&format!("{repo}:1"))))
                .await
                .id,
        ));
    }
    for (repo, id) in ids {
        let job = env.h.wait_finished(id, WAIT).await;
        let (state, reason, detail) = outcome(&job);
        assert_eq!(
            (state, reason.as_str()),
            (JobState::Error, "image_error"),
            "{repo}: {detail:?}"
        );
        assert!(detail.unwrap().contains("layer"), "{repo}");
        assert_eq!(job.attempt, 1, "{repo}: a bad image is never retried");
    }
    assert_eq!(tree(&sentinel), Vec::<String>::new());
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
    assert!(!env.tmp.path().join("x").exists());
    let state = env.h.state_dir.path();
    assert!(!state.join("x").exists());
    assert_eq!(tree(&state.join("images/tmp")), Vec::<String>::new());
    assert!(env.h.client.list_images().await.unwrap().images.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_arch_index_resolves_to_this_hosts_manifest() {
    let env = Env::start().await;
    let mut entries = Vec::new();
    let mut ours = String::new();
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
        if arch == host_arch() {
            ours = pushed.manifest.clone();
        }
        entries.push((json!({"architecture": arch, "os": "linux"}), pushed));
    }
    let index_digest = env.pusher.index("multi", "1", &entries).await;
    let pulled = env
        .h
        .client
        .pull_image(&env.reference("multi:1"), false)
        .await
        .unwrap();
    assert_eq!(pulled.image.manifest_digest, ours);
    assert_eq!(
        pulled.image.index_digest.as_deref(),
        Some(index_digest.as_str())
    );
    assert_eq!(
        pulled.image.platform.as_deref(),
        Some(&*format!("linux/{}", host_arch()))
    );
}

/// Builds a tar of an OCI image layout holding one image.
fn layout_tar(manifest: &[u8], blobs: &[&[u8]], ref_name: &str) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [{
            "mediaType": media_types::OCI_MANIFEST,
            "digest": sha(manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    }))
    .unwrap();
    t.file("index.json", &index, 0o644);
    t.dir("blobs/", 0o755).dir("blobs/sha256/", 0o755);
    for blob in blobs.iter().copied().chain([manifest]) {
        let digest = sha(blob);
        let hex = digest.strip_prefix("sha256:").unwrap();
        t.file(&format!("blobs/sha256/{hex}"), blob, 0o644);
    }
    t.finish()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_oci_layout_runs_without_a_registry() {
    let env = Env::start().await;
    let module = guests::hello();
    let config = br#"{"architecture":"wasm","os":"wasip1"}"#.to_vec();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::WASM_CONFIG_V0, "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": media_types::WASM_LAYER, "digest": sha(&module), "size": module.len()}],
    }))
    .unwrap();
    let tar = layout_tar(&manifest, &[&config, &module], "1");
    let url = |q: &str| format!("{}/v1/images/import{q}", env.h.base);

    let resp = env
        .h
        .http
        .post(url("?reference=offline/hello:1"))
        .body(tar.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let imported: ImportResult = resp.json().await.unwrap();
    assert_eq!(imported.images.len(), 1);
    let reference = "docker.io/offline/hello:1";
    assert_eq!(imported.images[0].reference, reference);
    assert_eq!(imported.images[0].kind, ImageKindView::Wasm);
    let job = env.run(image_spec(reference)).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);
    assert_eq!(env.stdout(&job).await, "hello\n");

    // 4xx for bad uploads.
    for (q, body, status) in [
        ("?reference=Bad Ref!", tar.clone(), 422),
        ("?reference=x:1", b"not a tar at all".repeat(100), 422),
        // An empty body is well-formed but holds no layout, like a body that is not a tar.
        ("?reference=x:1", Vec::new(), 422),
        ("?colour=blue", tar.clone(), 400),
    ] {
        let resp = env.h.http.post(url(q)).body(body).send().await.unwrap();
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "{q}: {text}");
        assert!(text.contains("\"error\""), "{text}");
    }
    // No upload is left behind.
    assert_eq!(
        tree(&env.h.state_dir.path().join("images/uploads")),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_endpoints_answer_503_without_a_worker() {
    let h = Harness::start_with(|o| o.worker_slots = None).await;
    for (method, path) in [
        (reqwest::Method::GET, "/v1/images"),
        (reqwest::Method::POST, "/v1/images/gc"),
        (reqwest::Method::GET, "/v1/images/busybox"),
    ] {
        let resp = h
            .http
            .request(method, format!("{}{path}", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "images_unavailable");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("worker")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_job_specs_are_validated() {
    let h = Harness::start().await;
    let cases = [
        (json!({"image": "busybox:bad tag!"}), "image"),
        (
            json!({"image": "busybox", "workdir": "relative"}),
            "workdir",
        ),
        (json!({"image": "busybox", "user": "root:"}), "user"),
        (
            json!({"image": "busybox", "limits": {"fuel": 5}}),
            "limits.fuel",
        ),
        (json!({"image": "busybox", "entrypoint": []}), "entrypoint"),
        (
            json!({"image": "busybox", "entrypoints": ["x"]}),
            "entrypoints",
        ),
    ];
    for (body, field) in cases {
        let resp = h
            .http
            .post(format!("{}/v1/jobs", h.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"]["field"]
                .as_str()
                .unwrap_or("")
                .starts_with(field)
                || err["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {err}"
        );
    }
    assert_eq!(
        h.count("jobs").await,
        0,
        "a rejected request stores nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_credentials_come_from_a_docker_config_json() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start_with_test_user(tmp.path());
    let host = registry.host();
    let pusher = Pusher::with_basic_auth(&host, TEST_USER, TEST_PASSWORD).await;
    let layers = [Layer::gzip(&busybox_rootfs_tar())];
    let config = config_json(&host_arch(), &layers, &["sh"]);
    pusher
        .image("private", "1", &layers, &config, media_types::OCI_CONFIG)
        .await;
    let auth = tmp.path().join("config.json");
    fs::write(
        &auth,
        serde_json::to_vec(&json!({"auths": {host.clone(): {
            "auth": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{TEST_USER}:{TEST_PASSWORD}"))
        }}}))
        .unwrap(),
    )
    .unwrap();
    let reference = format!("{host}/private:1");
    let good_config = fs::read(&auth).unwrap();

    // Without credentials the registry refuses; with the config.json the pull works.
    let anon = {
        let host = host.clone();
        Harness::start_with(move |o| o.images.insecure_registries = vec![host]).await
    };
    let err = anon.client.pull_image(&reference, false).await.unwrap_err();
    assert!(err.to_string().contains("registry"), "{err:#}");
    let h = Harness::start_with(|o| {
        o.images.insecure_registries = vec![host.clone()];
        o.images.registry_auth = Some(auth.clone());
    })
    .await;
    let pulled = h.client.pull_image(&reference, false).await.unwrap();
    assert_eq!(pulled.image.layers.len(), 1);

    // A malformed credentials file stops the worker from starting, naming the file.
    fs::write(&auth, b"{\"auths\": {\"x\": {}}}").unwrap();
    let opts = ImageOptions {
        registry_auth: Some(auth.clone()),
        ..Default::default()
    };
    let err = nekton::images::start(tmp.path(), &opts).unwrap_err();
    assert!(format!("{err:#}").contains("config.json"), "{err:#}");

    // The store's size caps (`--image-max-*`) reach the store: a store capped below this image's
    // extracted size refuses the pull, naming the cap, and a store without that cap takes it.
    fs::write(&auth, &good_config).unwrap();
    let capped = {
        let host = host.clone();
        let auth = auth.clone();
        Harness::start_with(move |o| {
            o.images.insecure_registries = vec![host];
            o.images.registry_auth = Some(auth);
            o.images.store_limits.max_store_unpacked_bytes = 1;
        })
        .await
    };
    let err = capped
        .client
        .pull_image(&reference, false)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("max_store_unpacked_bytes"),
        "{err:#}"
    );
}

/// A worker host's image store is shared, its listing is not: a tenant sees the images it
/// pulled, imported or ran; another tenant's images are 404; the admin sees them all.
#[tokio::test(flavor = "multi_thread")]
async fn tenants_see_only_their_own_images() {
    let env = Env::start().await;
    env.push_busybox("busybox", "1").await;
    env.push_wasm("hello", "1", &common::guests::hello()).await;
    let busybox = env.reference("busybox:1");
    let hello = env.reference("hello:1");
    let scopes = ["jobs:read", "jobs:write", "images:write"];
    let (a, _) = env
        .h
        .clients_for(&env.h.tenant_token("img-a", &scopes).await);
    let (b, _) = env
        .h
        .clients_for(&env.h.tenant_token("img-b", &scopes).await);
    a.pull_image(&busybox, false).await.unwrap();
    // b runs a job on the Wasm image: that counts as b's too.
    let job = b.submit(&image_spec(&hello), None).await.unwrap();
    common::wait_finished(&b, job.id, WAIT).await;
    let names = |l: ImageList| {
        let mut v: Vec<String> = l.images.into_iter().map(|i| i.reference).collect();
        v.sort();
        v
    };
    assert_eq!(names(a.list_images().await.unwrap()), vec![busybox.clone()]);
    assert_eq!(names(b.list_images().await.unwrap()), vec![hello.clone()]);
    let mut all = vec![busybox.clone(), hello.clone()];
    all.sort();
    assert_eq!(names(env.h.client.list_images().await.unwrap()), all);
    let err = b.get_image(&busybox).await.unwrap_err().to_string();
    assert!(err.contains("404") || err.contains("not stored"), "{err}");
    assert!(a.get_image(&busybox).await.is_ok());
}
