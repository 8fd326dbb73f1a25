//! Pulls through the real path (oci-client over HTTP) from a real registry — Debian's
//! `docker-registry` bound to 127.0.0.1 on a free port — with images built and pushed by the
//! tests themselves. Root only; no network but loopback.

mod image_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use image_store::{
    Credentials, ImageError, ImageKind, ImageRecord, ImageService, ImageStore, Platform, PullEvent,
    PullPolicy, RegistryOptions, StoreLimits, media_types,
};
use image_support::*;
use serde_json::json;

struct Env {
    tmp: tempfile::TempDir,
    registry: Registry,
    pusher: Pusher,
}

fn env() -> Env {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path());
    let pusher = Pusher::new(&registry.host());
    Env {
        tmp,
        registry,
        pusher,
    }
}

impl Env {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure_registries: vec![self.registry.host()],
            ..Default::default()
        }
    }

    /// A service over a fresh store named `name`.
    fn service(&self, name: &str) -> ImageService {
        self.service_with(name, self.options())
    }

    fn service_with(&self, name: &str, options: RegistryOptions) -> ImageService {
        let store = ImageStore::open(self.tmp.path().join(name), StoreLimits::default()).unwrap();
        ImageService::new(Arc::new(store), options).unwrap()
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.host())
    }

    async fn push_busybox(&self, repo: &str, tag: &str) -> Pushed {
        let layer = Layer::gzip(&busybox_rootfs_tar());
        let config = config_json("amd64", std::slice::from_ref(&layer), &["sh"]);
        self.pusher
            .image(repo, tag, &[layer], &config, media_types::OCI_CONFIG)
            .await
    }
}

fn recorder() -> (image_store::ProgressFn, Arc<Mutex<Vec<PullEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        Arc::new(move |e: &PullEvent| sink.lock().unwrap().push(e.clone())),
        events,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_a_busybox_image_once() {
    let env = env();
    let pushed = env.push_busybox("busybox", "1").await;
    let svc = env.service("store");
    let (progress, events) = recorder();
    let reference = env.reference("busybox:1");

    let outcome = svc
        .pull(&reference, PullPolicy::IfNotPresent, Some(progress))
        .await
        .unwrap();
    let record = &outcome.record;
    assert!(!outcome.from_cache && !outcome.coalesced);
    assert_eq!(record.reference, reference);
    assert_eq!(record.kind, ImageKind::Container);
    assert_eq!(record.manifest_digest.to_string(), pushed.manifest);
    assert_eq!(record.config_digest.to_string(), pushed.config);
    assert_eq!(record.config.cmd, vec!["sh"]);
    assert!(
        record
            .config
            .env
            .contains(&("PATH".into(), "/bin:/usr/bin".into()))
    );
    assert_eq!(record.platform.as_ref().unwrap().architecture, "amd64");
    assert_eq!(record.layers.len(), 1);
    assert_eq!(outcome.stats.blobs_downloaded, 2, "config and layer");
    assert_eq!(outcome.stats.layers_extracted, 1);
    assert_eq!(env.registry.blob_gets("busybox"), 2);

    // The layer is a real root filesystem: its busybox runs.
    let root = svc.store().layer_rootfs(&record.layers[0].digest);
    assert_eq!(
        fs::read(root.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let out = Command::new(root.join("bin/busybox"))
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(svc.store().lowerdirs(record), vec![root.clone()]);

    // Progress: resolved, bytes per blob, extraction.
    let events = events.lock().unwrap().clone();
    assert!(matches!(&events[0], PullEvent::Resolved { layers, .. } if layers.len() == 1));
    let layer_digest = record.layers[0].digest.clone();
    let last_bytes = events.iter().rev().find_map(|e| match e {
        PullEvent::Downloading {
            digest,
            done,
            total,
        } if *digest == layer_digest => Some((*done, *total)),
        _ => None,
    });
    assert_eq!(
        last_bytes,
        Some((record.layers[0].size, record.layers[0].size))
    );
    assert!(
        events.contains(&PullEvent::Extracted {
            digest: layer_digest.clone(),
            unpacked_bytes: svc
                .store()
                .layer_info(&layer_digest)
                .unwrap()
                .unpacked_bytes,
        })
    );

    // Pulled again: nothing downloaded, the registry is not even asked.
    let again = svc
        .pull(&reference, PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
    assert!(again.from_cache);
    assert_eq!(&again.record, record);
    // Forced re-resolution: the manifest is fetched, no blob is.
    let always = svc
        .pull(&reference, PullPolicy::Always, None)
        .await
        .unwrap();
    assert!(!always.from_cache);
    assert_eq!(always.stats.blobs_downloaded, 0);
    assert_eq!(always.stats.blobs_cached, 2);
    assert_eq!(always.record.manifest_digest, record.manifest_digest);
    // A new service over the same store (a restarted worker) finds it too.
    let restarted = env.service_with("store", env.options());
    assert!(
        restarted
            .pull(&reference, PullPolicy::IfNotPresent, None)
            .await
            .unwrap()
            .from_cache
    );
    // By digest: found under its other name, no download.
    let by_digest = format!("{}/busybox@{}", env.registry.host(), pushed.manifest);
    assert!(
        svc.pull(&by_digest, PullPolicy::IfNotPresent, None)
            .await
            .unwrap()
            .from_cache
    );
    assert_eq!(
        env.registry.blob_gets("busybox"),
        2,
        "no blob was downloaded twice"
    );
    assert_eq!(svc.store().list().unwrap().len(), 2);
}

/// The merged view of an image's layers, computed from the layer records (no mount).
fn merged_view(store: &ImageStore, record: &ImageRecord) -> BTreeSet<String> {
    let under = |p: &str, dir: &str| dir.is_empty() || p.starts_with(&format!("{dir}/"));
    let mut view = BTreeSet::new();
    for layer in &record.layers {
        let info = store.layer_info(&layer.digest).unwrap();
        for dir in &info.opaque_dirs {
            view.retain(|p: &String| !under(p, dir));
        }
        for w in &info.whiteouts {
            view.retain(|p: &String| p != w && !under(p, w));
        }
        for p in tree(&store.layer_rootfs(&layer.digest)) {
            if !info.whiteouts.contains(&p) {
                view.insert(p);
            }
        }
    }
    view
}

/// What overlayfs shows for these lower dirs (mounted in a private mount namespace, so nothing
/// can leak onto the host's mount table).
fn overlay_view(lowerdirs: &[PathBuf], mnt: &Path) -> BTreeSet<String> {
    fs::create_dir_all(mnt).unwrap();
    let lower = lowerdirs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let script = format!(
        "mount -t overlay overlay -o ro,lowerdir={lower} {mnt} && cd {mnt} && find . -mindepth 1",
        mnt = mnt.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "overlay mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_layer_image_with_whiteouts() {
    let env = env();
    let l1 = TarBuilder::new()
        .file("a", b"a", 0o644)
        .file("b", b"b", 0o644)
        .dir("d/", 0o755)
        .file("d/x", b"x", 0o644)
        .file("d/y", b"y", 0o644)
        .dir("keep/", 0o755)
        .file("keep/k", b"k", 0o644)
        .dir("e/", 0o755)
        .file("e/old", b"o", 0o644)
        .finish();
    let l2 = TarBuilder::new()
        .file(".wh.a", b"", 0o644)
        .dir("d/", 0o755)
        .file("d/.wh..wh..opq", b"", 0o644)
        .file("d/z", b"z", 0o644)
        .file("keep/new", b"n", 0o644)
        .file(".wh.e", b"", 0o644)
        .finish();
    let l3 = TarBuilder::new()
        .file(".wh.b", b"", 0o644)
        .file("c", b"c", 0o644)
        .dir("e/", 0o755)
        .file("e/fresh", b"f", 0o644)
        .finish();
    // Three compressions and both media type families.
    let layers = [Layer::docker_gzip(&l1), Layer::zstd(&l2), Layer::plain(&l3)];
    let config = config_json("amd64", &layers, &["sh"]);
    env.pusher
        .image("layered", "1", &layers, &config, media_types::OCI_CONFIG)
        .await;

    let svc = env.service("store");
    let record = svc
        .pull(&env.reference("layered:1"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap()
        .record;
    assert_eq!(record.layers.len(), 3);
    for (l, pushed) in record.layers.iter().zip(&layers) {
        assert_eq!(l.diff_id.as_ref().unwrap().to_string(), pushed.diff_id);
    }
    let expected: BTreeSet<String> = [
        "c", "d", "d/z", "e", "e/fresh", "keep", "keep/k", "keep/new",
    ]
    .map(String::from)
    .into();
    assert_eq!(merged_view(svc.store(), &record), expected);
    // The overlay representation gives the same view.
    let lowerdirs = svc.store().lowerdirs(&record);
    assert_eq!(
        overlay_view(&lowerdirs, &env.tmp.path().join("mnt")),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_picks_this_platform() {
    let env = env();
    let mut entries = Vec::new();
    for (arch, variant) in [("arm64", Some("v8")), ("amd64", None), ("riscv64", None)] {
        let tar = TarBuilder::new()
            .file("arch", arch.as_bytes(), 0o644)
            .finish();
        let layer = Layer::gzip(&tar);
        let config = config_json(arch, std::slice::from_ref(&layer), &["sh"]);
        let pushed = env
            .pusher
            .image("multi", "@", &[layer], &config, media_types::OCI_CONFIG)
            .await;
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        entries.push((platform, pushed));
    }
    let index_digest = env.pusher.index("multi", "1", &entries).await;

    let svc = env.service("store");
    let reference = env.reference("multi:1");
    let record = svc
        .pull(&reference, PullPolicy::IfNotPresent, None)
        .await
        .unwrap()
        .record;
    assert_eq!(
        record.index_digest.as_ref().unwrap().to_string(),
        index_digest
    );
    assert_eq!(record.platform.as_ref().unwrap().architecture, host_arch());
    let root = svc.store().layer_rootfs(&record.layers[0].digest);
    assert_eq!(fs::read_to_string(root.join("arch")).unwrap(), host_arch());
    // Only the chosen manifest's blobs were fetched.
    assert_eq!(env.registry.blob_gets("multi"), 2);

    // Another platform, another manifest.
    let arm = env.service_with(
        "store-arm",
        RegistryOptions {
            platform: Platform::new("linux", "arm64", Some("v8")),
            ..env.options()
        },
    );
    let record = arm
        .pull(&reference, PullPolicy::IfNotPresent, None)
        .await
        .unwrap()
        .record;
    let root = arm.store().layer_rootfs(&record.layers[0].digest);
    assert_eq!(fs::read_to_string(root.join("arch")).unwrap(), "arm64");

    // No manifest for the platform: a clear error listing what there is.
    let s390x = env.service_with(
        "store-s390x",
        RegistryOptions {
            platform: Platform::new("linux", "s390x", None),
            ..env.options()
        },
    );
    let err = s390x
        .pull(&reference, PullPolicy::IfNotPresent, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("linux/arm64/v8"), "{err}");

    // A single-platform manifest for another architecture is refused, not run.
    let arm_manifest = entries[0].1.manifest.clone();
    let err = svc
        .pull(
            &format!("{}/multi@{arm_manifest}", env.registry.host()),
            PullPolicy::IfNotPresent,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::PlatformMismatch { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_is_detected() {
    let env = env();
    let pushed = env.push_busybox("corrupt", "1").await;
    // Flip one byte of the layer inside the registry's storage (same size, wrong content).
    let file = env.registry.blob_file(&pushed.layers[0]);
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&file, &bytes).unwrap();

    let svc = env.service("fresh");
    let err = svc
        .pull(&env.reference("corrupt:1"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&pushed.layers[0]), "{err}");
    let store = svc.store();
    assert!(store.list().unwrap().is_empty());
    let layer = pushed.layers[0].parse().unwrap();
    assert!(!store.has_blob(&layer) && !store.has_layer(&layer));
    assert_eq!(tree(&store.root().join("tmp")), Vec::<String>::new());
    assert_eq!(tree(&store.root().join("layers")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_pulls_of_a_new_image_download_it_once() {
    let env = env();
    let base = Layer::gzip(&busybox_rootfs_tar());
    let top = Layer::zstd(&TarBuilder::new().file("app", b"app", 0o755).finish());
    let layers = [base, top];
    let config = config_json("amd64", &layers, &["/app"]);
    env.pusher
        .image("popular", "1", &layers, &config, media_types::OCI_CONFIG)
        .await;

    let svc = env.service("store");
    let reference = env.reference("popular:1");
    let pulls: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            let reference = reference.clone();
            let (progress, events) = recorder();
            tokio::spawn(async move {
                let outcome = svc
                    .pull(&reference, PullPolicy::IfNotPresent, Some(progress))
                    .await;
                (outcome, events)
            })
        })
        .collect();
    let mut leaders = 0;
    let mut records = BTreeSet::new();
    for p in pulls {
        let (outcome, events) = p.await.unwrap();
        let outcome = outcome.unwrap();
        if outcome.stats.blobs_downloaded > 0 && !outcome.coalesced {
            leaders += 1;
            assert!(!events.lock().unwrap().is_empty());
        }
        records.insert(outcome.record.manifest_digest.to_string());
    }
    assert_eq!(leaders, 1, "exactly one pull downloaded anything");
    assert_eq!(records.len(), 1);
    assert_eq!(
        env.registry.blob_gets("popular"),
        3,
        "each blob (config + 2 layers) downloaded once:\n{}",
        env.registry.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_artifacts_are_stored_as_modules() {
    let env = env();
    // (module) — the smallest valid Wasm module.
    let module = b"\0asm\x01\0\0\0".to_vec();
    let svc = env.service("store");
    for (tag, media_type) in [
        ("1", media_types::WASM_LAYER),
        ("2", media_types::WASM_CONTENT_LAYER_V1),
    ] {
        let layer = Layer {
            blob: module.clone(),
            media_type: media_type.to_string(),
            diff_id: sha(&module),
        };
        let config = br#"{"architecture":"wasm","os":"wasip1"}"#;
        env.pusher
            .image(
                "hello-wasm",
                tag,
                &[layer],
                config,
                media_types::WASM_CONFIG_V0,
            )
            .await;
        let record = svc
            .pull(
                &env.reference(&format!("hello-wasm:{tag}")),
                PullPolicy::IfNotPresent,
                None,
            )
            .await
            .unwrap()
            .record;
        assert_eq!(record.kind, ImageKind::Wasm);
        let m = record.wasm_module().unwrap();
        assert_eq!(m.media_type, media_type);
        let path = svc.store().wasm_module_path(&record).unwrap();
        assert_eq!(fs::read(path).unwrap(), module);
        assert!(
            !svc.store().has_layer(&m.digest),
            "Wasm layers are never extracted"
        );
    }
    // Something that says it is Wasm but is not.
    let layer = Layer {
        blob: b"#!/bin/sh\n".to_vec(),
        media_type: media_types::WASM_LAYER.to_string(),
        diff_id: String::new(),
    };
    env.pusher
        .image(
            "not-wasm",
            "1",
            &[layer],
            b"{}",
            media_types::WASM_CONFIG_V0,
        )
        .await;
    let err = svc
        .pull(&env.reference("not-wasm:1"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not a WebAssembly binary"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_unreferenced_and_unleased_layers() {
    let env = env();
    let base = Layer::gzip(&busybox_rootfs_tar());
    let a_top = Layer::gzip(&TarBuilder::new().file("a", b"a", 0o644).finish());
    let b_top = Layer::gzip(&TarBuilder::new().file("b", b"b", 0o644).finish());
    for (tag, top) in [("a", &a_top), ("b", &b_top)] {
        let layers = [base.clone(), top.clone()];
        let config = config_json("amd64", &layers, &["sh"]);
        env.pusher
            .image("gc", tag, &layers, &config, media_types::OCI_CONFIG)
            .await;
    }
    let svc = env.service("store");
    let a = svc
        .pull(&env.reference("gc:a"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap()
        .record;
    let b = svc
        .pull(&env.reference("gc:b"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
    assert_eq!(
        b.stats.blobs_cached, 1,
        "the shared base layer was not downloaded again"
    );
    let b = b.record;
    let store = svc.store().clone();
    assert_eq!(svc.gc().await.unwrap().removed_layers.len(), 0);

    store.remove(&a.reference).unwrap();
    let report = svc.gc().await.unwrap();
    let a_top_digest = a.layers[1].digest.clone();
    assert_eq!(report.removed_layers, vec![a_top_digest.clone()]);
    assert!(report.removed_blobs.contains(&a_top_digest));
    assert!(report.removed_blobs.contains(&a.manifest_digest));
    assert!(report.freed_bytes > 0);
    assert!(store.has_layer(&b.layers[0].digest), "shared base kept");
    assert!(!store.has_layer(&a_top_digest));

    // A job using `b` holds a lease: removing the image does not pull the layers from under it.
    let lease = store.lease(&b).unwrap();
    store.remove(&b.reference).unwrap();
    let report = svc.gc().await.unwrap();
    assert!(report.removed_layers.is_empty(), "{report:?}");
    assert!(store.has_layer(&b.layers[0].digest) && store.has_layer(&b.layers[1].digest));
    drop(lease);
    let report = svc.gc().await.unwrap();
    assert_eq!(report.removed_layers.len(), 2);
    assert_eq!(tree(&store.root().join("layers")), Vec::<String>::new());
    assert_eq!(
        tree(&store.root().join("blobs/sha256")),
        Vec::<String>::new()
    );
    // And it can be pulled again.
    svc.pull(&env.reference("gc:b"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
}

/// Real images (Debian, Alpine, distroless) ship symlinks with absolute targets and relative ones
/// that climb above the layer root: they are kept as links with their exact targets, and resolve
/// inside the root once the process is confined to it (`chroot` here, `pivot_root` in the runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_images_whose_symlinks_climb_above_the_root() {
    let env = env();
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox (Debian's busybox-static)");
    let mut t = TarBuilder::new();
    t.dir("bin/", 0o755).file("bin/busybox", &busybox, 0o755);
    let layer = Layer::gzip(&add_real_world_links(&mut t).finish());
    let config = config_json(&host_arch(), std::slice::from_ref(&layer), &["sh"]);
    env.pusher
        .image("links", "1", &[layer], &config, media_types::OCI_CONFIG)
        .await;
    let svc = env.service("store");
    let record = svc
        .pull(&env.reference("links:1"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap_or_else(|e| panic!("image with real-world symlinks refused: {e}"))
        .record;
    let root = svc.store().layer_rootfs(&record.layers[0].digest);
    assert_real_world_links(&root);
    // Confined to the layer, `..` at `/` stays at `/`: the far-climbing links land inside it.
    let cat = |path: &str| {
        let out = Command::new("chroot")
            .arg(&root)
            .args(["/bin/busybox", "cat", path])
            .output()
            .expect("chroot (coreutils) runs");
        assert!(
            out.status.success(),
            "cat {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(cat("/usr/share/doc/libc6/changelog.gz"), b"changelog\n");
    assert_eq!(cat("/etc/os-release"), b"12.5\n");
    assert_eq!(cat("/usr/share/doc/far/up/etc/debian_version"), b"12.5\n");
    assert_eq!(cat("/up/up/etc/ssl/cert.pem"), b"certificates\n");
    assert_eq!(tree(&svc.store().root().join("tmp")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_images_are_refused_and_write_nothing_outside_the_store() {
    let env = env();
    let sentinel = env.tmp.path().join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    let passwd = fs::metadata("/etc/passwd").unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            TarBuilder::new().file("../../x", b"x", 0o644).finish(),
            "../../x",
        ),
        (
            "abs-symlink",
            TarBuilder::new()
                .symlink("evil", &sentinel.display().to_string())
                .file("evil/pwned", b"x", 0o644)
                .finish(),
            "evil/pwned",
        ),
        (
            "climbing-symlink",
            TarBuilder::new()
                .symlink("up", "../../../../../../../../../..")
                .file("up/etc/cron.d/pwned", b"x", 0o644)
                .finish(),
            "up/etc/cron.d/pwned",
        ),
        (
            "hardlink",
            TarBuilder::new().hardlink("passwd", "/etc/passwd").finish(),
            "passwd",
        ),
        (
            "proc",
            TarBuilder::new()
                .symlink("proc", "/proc")
                .file("proc/x", b"x", 0o644)
                .finish(),
            "proc",
        ),
    ];
    let svc = env.service("store");
    for (repo, tar, entry) in cases {
        let base = Layer::gzip(&busybox_rootfs_tar());
        let layers = [base, Layer::gzip(&tar)];
        let config = config_json("amd64", &layers, &["sh"]);
        env.pusher
            .image(repo, "1", &layers, &config, media_types::OCI_CONFIG)
            .await;
        let err = svc
            .pull(
                &env.reference(&format!("{repo}:1")),
                PullPolicy::IfNotPresent,
                None,
            )
            .await
            .unwrap_err();
        match &err {
            ImageError::Layer { source, .. } => assert_eq!(source.entry(), Some(entry), "{err}"),
            other => panic!("{repo}: unexpected error {other}"),
        }
        assert!(err.is_content_error());
        assert!(
            svc.store()
                .get(&env.reference(&format!("{repo}:1")))
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(tree(&sentinel), Vec::<String>::new());
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd.nlink());
    assert!(!env.tmp.path().join("x").exists());
    assert_eq!(tree(&svc.store().root().join("tmp")), Vec::<String>::new());
}

/// A gzip bomb (~4 MiB expanding to 4 GiB) in a pulled image stops at the per-image extraction
/// cap while it streams, counting the image's layers that were already in the store; the pull is
/// an image error naming the option, and the store is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_stop_at_the_per_image_extraction_cap() {
    let env = env();
    let limits = StoreLimits {
        max_image_unpacked_bytes: 3 << 20,
        ..StoreLimits::default()
    };
    let store = ImageStore::open(env.tmp.path().join("store"), limits).unwrap();
    let svc = ImageService::new(Arc::new(store), env.options()).unwrap();
    let base = Layer::gzip(&TarBuilder::new().zeros("base", 2 << 20).finish());
    let bomb = Layer {
        blob: gzip_bomb(4096, 0, 1 << 20),
        media_type: media_types::OCI_LAYER_GZIP.into(),
        // Hashing 4 GiB would make the test slow; extraction stops long before the diff_id
        // could be compared, so any well-formed digest does.
        diff_id: format!("sha256:{}", "0".repeat(64)),
    };
    assert!(
        bomb.blob.len() < 6 << 20,
        "a ~4 MiB bomb: {}",
        bomb.blob.len()
    );
    let arch = host_arch();
    for (repo, layers) in [
        ("base", vec![base.clone()]),
        ("bomb", vec![bomb.clone()]),
        ("based-bomb", vec![base.clone(), bomb.clone()]),
    ] {
        let config = config_json(&arch, &layers, &["sh"]);
        env.pusher
            .image(repo, "1", &layers, &config, media_types::OCI_CONFIG)
            .await;
    }
    svc.pull(&env.reference("base:1"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
    let store = svc.store();
    let layers_before = tree(&store.root().join("layers"));
    assert_eq!(store.unpacked_bytes(), 2 << 20);

    let started = std::time::Instant::now();
    for repo in ["bomb", "based-bomb"] {
        let reference = env.reference(&format!("{repo}:1"));
        let err = svc
            .pull(&reference, PullPolicy::IfNotPresent, None)
            .await
            .expect_err("bomb pulled");
        assert!(
            matches!(
                &err,
                ImageError::Layer {
                    source: image_store::ExtractError::TooLarge { .. },
                    ..
                }
            ),
            "{repo}: {err}"
        );
        assert!(err.is_content_error());
        assert!(
            err.to_string()
                .contains("`StoreLimits.max_image_unpacked_bytes`"),
            "{repo}: the error names the option: {err}"
        );
        assert!(store.get(&reference).unwrap().is_none());
        assert_eq!(tree(&store.root().join("layers")), layers_before, "{repo}");
        assert_eq!(tree(&store.root().join("tmp")), Vec::<String>::new());
        assert_eq!(store.unpacked_bytes(), 2 << 20, "{repo}");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "stopped at the cap, not after 4 GiB: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_for_registries_listed_as_insecure() {
    let env = env();
    env.push_busybox("secure", "1").await;
    let svc = env.service_with("store", RegistryOptions::default());
    let err = svc
        .pull(&env.reference("secure:1"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err}");
    assert_eq!(env.registry.blob_gets("secure"), 0);

    // An operator's allowlist of registries is enforced before any network access.
    let elsewhere = env.service_with(
        "store-allow",
        RegistryOptions {
            allowed_registries: Some(vec!["registry.example.com".into()]),
            ..env.options()
        },
    );
    let err = elsewhere
        .pull(&env.reference("secure:1"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::RegistryNotAllowed { .. }),
        "{err}"
    );
    let allowed = env.service_with(
        "store-allowed",
        RegistryOptions {
            allowed_registries: Some(vec![env.registry.host()]),
            ..env.options()
        },
    );
    allowed
        .pull(&env.reference("secure:1"), PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_credentials_from_config() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start_with_test_user(tmp.path());
    let host = registry.host();
    let pusher = Pusher::with_basic_auth(&host, TEST_USER, TEST_PASSWORD).await;
    let layer = Layer::gzip(&busybox_rootfs_tar());
    let config = config_json("amd64", std::slice::from_ref(&layer), &["sh"]);
    pusher
        .image("private", "1", &[layer], &config, media_types::OCI_CONFIG)
        .await;
    let reference = format!("{host}/private:1");

    let open = |name: &str, credentials| {
        let store = ImageStore::open(tmp.path().join(name), StoreLimits::default()).unwrap();
        let mut options = RegistryOptions {
            insecure_registries: vec![host.clone()],
            ..Default::default()
        };
        if let Some(c) = credentials {
            options.credentials.insert(host.clone(), c);
        }
        ImageService::new(Arc::new(store), options).unwrap()
    };
    let anonymous = open("anon", None);
    let err = anonymous
        .pull(&reference, PullPolicy::IfNotPresent, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err}");

    let wrong = open(
        "wrong",
        Some(Credentials::Basic {
            username: TEST_USER.into(),
            password: "not-it".into(),
        }),
    );
    let err = wrong
        .pull(&reference, PullPolicy::IfNotPresent, None)
        .await
        .unwrap_err();
    assert!(
        !err.to_string().contains("not-it"),
        "password leaked: {err}"
    );

    let authed = open(
        "authed",
        Some(Credentials::Basic {
            username: TEST_USER.into(),
            password: TEST_PASSWORD.into(),
        }),
    );
    let record = authed
        .pull(&reference, PullPolicy::IfNotPresent, None)
        .await
        .unwrap()
        .record;
    assert_eq!(record.layers.len(), 1);
    assert!(!format!("{:?}", authed.options()).contains(TEST_PASSWORD));
    assert!(!registry.log().contains(TEST_PASSWORD));
}
