//! Import of OCI image layouts (directory or tar) for air-gapped hosts, with the same verification
//! as a pull. Root only (extraction preserves owners); no network at all.

mod image_support;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use image_store::{
    ImageError, ImageService, ImageStore, Platform, RegistryOptions, StoreLimits, media_types,
};
use image_support::*;
use serde_json::{Value, json};

struct Built {
    manifest: String,
    manifest_size: usize,
    layer: String,
}

/// Writes one single-layer image's blobs into `layout` and returns its manifest descriptor.
fn add_image(layout: &Path, arch: &str, marker: &str) -> Built {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha(bytes);
        fs::write(blobs.join(d.strip_prefix("sha256:").unwrap()), bytes).unwrap();
        d
    };
    let tar = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/marker", marker.as_bytes(), 0o644)
        .finish();
    let layer = Layer::gzip(&tar);
    let config = config_json(arch, std::slice::from_ref(&layer), &["sh"]);
    let layer_digest = put(&layer.blob);
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": layer.media_type, "digest": layer_digest, "size": layer.blob.len()}],
    }))
    .unwrap();
    Built {
        manifest: put(&manifest),
        manifest_size: manifest.len(),
        layer: layer_digest,
    }
}

fn finish_layout(layout: &Path, entries: Vec<Value>) {
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": entries})).unwrap(),
    )
    .unwrap();
}

fn entry(built: &Built, name: Option<&str>, tag: Option<&str>) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(n) = name {
        annotations.insert("io.containerd.image.name".into(), json!(n));
    }
    if let Some(t) = tag {
        annotations.insert("org.opencontainers.image.ref.name".into(), json!(t));
    }
    json!({
        "mediaType": media_types::OCI_MANIFEST,
        "digest": built.manifest,
        "size": built.manifest_size,
        "annotations": annotations,
    })
}

fn service(dir: &Path) -> ImageService {
    let store = ImageStore::open(dir, StoreLimits::default()).unwrap();
    ImageService::new(Arc::new(store), RegistryOptions::default()).unwrap()
}

fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

#[tokio::test]
async fn imports_a_layout_directory_and_a_tar_of_it() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = add_image(&layout, "amd64", "imported");
    finish_layout(
        &layout,
        vec![entry(&built, Some("example.com/imported:1"), Some("1"))],
    );

    let svc = service(&tmp.path().join("store-dir"));
    let records = svc.import(&layout, None, None).await.unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.reference, "example.com/imported:1");
    assert_eq!(r.manifest_digest.to_string(), built.manifest);
    let root = svc.store().layer_rootfs(&r.layers[0].digest);
    assert_eq!(
        fs::read_to_string(root.join("etc/marker")).unwrap(),
        "imported"
    );
    assert_eq!(
        svc.store().get("example.com/imported:1").unwrap().as_ref(),
        Some(r)
    );

    // The same layout as a gzipped tar, under a reference given by the operator.
    let archive = tmp.path().join("layout.tar.gz");
    fs::write(&archive, gzip(&tar_dir(&layout))).unwrap();
    let svc = service(&tmp.path().join("store-tar"));
    let records = svc
        .import(&archive, Some("local/thing:2"), None)
        .await
        .unwrap();
    assert_eq!(records[0].reference, "docker.io/local/thing:2");
    assert_eq!(records[0].layers[0].digest.to_string(), built.layer);
    let root = svc.store().layer_rootfs(&records[0].layers[0].digest);
    assert_eq!(
        fs::read_to_string(root.join("etc/marker")).unwrap(),
        "imported"
    );
    assert_eq!(tree(&svc.store().root().join("tmp")), Vec::<String>::new());
}

#[tokio::test]
async fn a_multi_arch_layout_imports_this_platform() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut children = Vec::new();
    for arch in ["arm64", "amd64"] {
        let b = add_image(&layout, arch, arch);
        children.push(json!({
            "mediaType": media_types::OCI_MANIFEST,
            "digest": b.manifest,
            "size": b.manifest_size,
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": children,
    }))
    .unwrap();
    let index_digest = sha(&index);
    fs::write(layout.join("blobs/sha256").join(&index_digest[7..]), &index).unwrap();
    finish_layout(
        &layout,
        vec![json!({
            "mediaType": media_types::OCI_INDEX,
            "digest": index_digest,
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "example.com/multi:1"},
        })],
    );
    let svc = service(&tmp.path().join("store"));
    let r = svc.import(&layout, None, None).await.unwrap().remove(0);
    assert_eq!(r.reference, "example.com/multi:1");
    assert_eq!(r.index_digest.as_ref().unwrap().to_string(), index_digest);
    let root = svc.store().layer_rootfs(&r.layers[0].digest);
    assert_eq!(
        fs::read_to_string(root.join("etc/marker")).unwrap(),
        Platform::host().architecture
    );
}

#[tokio::test]
async fn tampered_or_symlinked_blobs_are_refused() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = add_image(&layout, "amd64", "x");
    finish_layout(&layout, vec![entry(&built, Some("example.com/t:1"), None)]);
    let layer_file = layout.join("blobs/sha256").join(&built.layer[7..]);
    let mut bytes = fs::read(&layer_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&layer_file, &bytes).unwrap();

    let svc = service(&tmp.path().join("store"));
    let err = svc.import(&layout, None, None).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(svc.store().list().unwrap().is_empty());

    // As a tar: the blob does not match its name.
    let archive = tmp.path().join("layout.tar");
    fs::write(&archive, tar_dir(&layout)).unwrap();
    let err = svc.import(&archive, None, None).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(svc.store().list().unwrap().is_empty());

    // A layout whose blob is a symlink to a host file is not followed.
    fs::remove_file(&layer_file).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &layer_file).unwrap();
    let err = svc.import(&layout, None, None).await.unwrap_err();
    assert!(matches!(err, ImageError::Import { .. }), "{err}");
    assert!(err.to_string().contains(&built.layer), "{err}");
    assert_eq!(tree(&svc.store().root().join("tmp")), Vec::<String>::new());
}

#[tokio::test]
async fn unnamed_images_need_a_reference() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let a = add_image(&layout, "amd64", "a");
    let b = add_image(&layout, "amd64", "b");
    finish_layout(
        &layout,
        vec![entry(&a, None, Some("latest")), entry(&b, None, Some("v2"))],
    );
    let svc = service(&tmp.path().join("store"));
    let err = svc.import(&layout, None, None).await.unwrap_err();
    assert!(err.to_string().contains("pass a reference"), "{err}");
    // With a reference, the tag picks the image.
    let r = svc
        .import(&layout, Some("example.com/picked:v2"), None)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(r.manifest_digest.to_string(), b.manifest);
    let err = svc
        .import(&layout, Some("example.com/picked:v3"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("none matches"), "{err}");
    // Not a layout at all.
    let err = svc.import(tmp.path(), None, None).await.unwrap_err();
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");
}
