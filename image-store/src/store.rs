//! The content-addressed image store (layout and rules in the module docs of [`crate`]).
//!
//! The store is shared by every job on a host. It is safe to use from many threads and tasks of one
//! process; two processes may share a root for reading, but only one should pull or collect garbage
//! (temp entries are named by their owner, so a second process never deletes the first one's work,
//! but `gc` only knows the leases of its own process).
//!
//! # Temp entries and their owners
//!
//! Work in progress lives in `tmp/<owner>.<n>.<what>`, `<owner>` being the writing process's
//! [`Owner`] (`<pid>.<start time>`). [`ImageStore::open`] and `gc` remove the entries whose owner
//! is not [alive](Owner::is_alive): a dead pid, and also a live pid with another start time (a
//! recycled pid — a restarted worker in a container is often pid 1 again — whose predecessor's
//! entries a pid-only check would keep).
//!
//! Names written by versions before the shared owner helper, `<pid>.<hex tag>.<n>.<what>` (the
//! tag is the hex nanoseconds since the epoch at which that process named its first entry), are
//! still cleaned, without deleting the work of an old-version process that still runs beside
//! this one during an upgrade: such an entry is kept only while its pid runs *and* that process
//! started no later than the tag (plus 2 s: the boot time in `/proc/stat` is in whole seconds). A
//! process that took the pid over started after the tag, so its predecessor's entries go. (A new
//! name never passes this rule: its start time read as nanoseconds is in 1970.) Any other name is
//! nobody's and is removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runtime_core::owner::Owner;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWrite;

use super::extract::{ByteBudget, ExtractOptions, SkippedEntry, extract_layer_budgeted};
use super::media::{LayerFormat, Platform, layer_format};
use super::{Digest, ImageError, ImageRef};

const RECORD_VERSION: u32 = 1;

/// Size caps. Every number is a ceiling a hostile image cannot push the host past.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Any single blob (a compressed layer, a Wasm module). Default 4 GiB.
    pub max_blob_bytes: u64,
    /// Manifests, indexes and configs. Default 4 MiB.
    pub max_document_bytes: u64,
    /// Layers per image. Default 128.
    pub max_layers: usize,
    /// All blobs of one image together. Default 16 GiB.
    pub max_image_bytes: u64,
    /// All extracted layers of one image together (file contents), enforced while extracting: a
    /// pull stops at the cap, not after it. Default 32 GiB.
    pub max_image_unpacked_bytes: u64,
    /// All extracted layers in the store together (file contents), enforced while extracting.
    /// `gc` gives the bytes of removed layers back. Default: no cap (`u64::MAX`).
    pub max_store_unpacked_bytes: u64,
    /// Per-layer extraction caps and policy.
    pub extract: ExtractOptions,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_blob_bytes: 4 << 30,
            max_document_bytes: 4 << 20,
            max_layers: 128,
            max_image_bytes: 16 << 30,
            max_image_unpacked_bytes: 32 << 30,
            max_store_unpacked_bytes: u64::MAX,
            extract: ExtractOptions::default(),
        }
    }
}

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// A Linux container image: layers extracted, mounted with overlayfs.
    Container,
    /// A Wasm artifact: one module (or component) blob, run by the Wasm backend.
    Wasm,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Wasm => "wasm",
        }
    }
}

/// One layer of an image, in manifest order (bottom first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// Digest of the layer blob as stored (compressed); names `layers/<hex>`.
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Digest of the uncompressed tar (verified against the config's `rootfs.diff_ids`).
    pub diff_id: Option<Digest>,
}

/// The runtime-relevant part of an image config. Empty vectors mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// An image in the store, keyed by its normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    pub kind: ImageKind,
    /// The platform-specific manifest.
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The index (manifest list) the manifest was chosen from, if the reference named one.
    pub index_digest: Option<Digest>,
    /// The platform the manifest was chosen for (from the index entry or the config).
    pub platform: Option<Platform>,
    pub config_digest: Digest,
    pub config_media_type: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// Bytes of all blobs (config and layers).
    pub size: u64,
    /// Bytes of all extracted files (0 for Wasm).
    pub unpacked_size: u64,
    /// When the record was written (seconds since the epoch).
    pub stored_at: u64,
}

impl ImageRecord {
    /// The module blob of a Wasm image.
    pub fn wasm_module(&self) -> Option<&LayerRef> {
        (self.kind == ImageKind::Wasm)
            .then(|| self.layers.first())
            .flatten()
    }

    /// Every blob digest the record refers to.
    pub fn digests(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self.index_digest.iter().cloned().collect();
        out.push(self.manifest_digest.clone());
        out.push(self.config_digest.clone());
        out.extend(self.layers.iter().map(|l| l.digest.clone()));
        out
    }
}

/// What extraction recorded about a layer (`layers/<hex>/layer.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: Digest,
    pub diff_id: Digest,
    pub entries: u64,
    pub unpacked_bytes: u64,
    /// Overlay whiteouts (0/0 character devices) in this layer, relative paths.
    pub whiteouts: Vec<String>,
    /// Directories marked `trusted.overlay.opaque=y`; `""` is the root.
    pub opaque_dirs: Vec<String>,
    pub skipped: Vec<SkippedEntry>,
    pub skipped_total: u64,
    pub xattrs_dropped: u64,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub removed_layers: Vec<Digest>,
    /// Leftover temp entries of dead processes.
    pub removed_temp: usize,
    pub freed_bytes: u64,
}

/// Keeps blobs and layers from being collected while a job uses them (or a pull is writing them).
/// Released on drop.
pub struct Lease {
    pins: Arc<Mutex<HashMap<Digest, usize>>>,
    digests: Vec<Digest>,
}

impl Lease {
    /// Pins one more digest under this lease.
    pub(crate) fn add(&mut self, digest: &Digest) {
        *lock(&self.pins).entry(digest.clone()).or_insert(0) += 1;
        self.digests.push(digest.clone());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut pins = lock(&self.pins);
        for d in self.digests.drain(..) {
            if let Some(n) = pins.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(&d);
                }
            }
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("digests", &self.digests)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The image store. See the module docs for the layout.
pub struct ImageStore {
    root: PathBuf,
    limits: StoreLimits,
    pins: Arc<Mutex<HashMap<Digest, usize>>>,
    seq: AtomicU64,
    /// File bytes of every extracted layer in the store (and of extractions under way), against
    /// `limits.max_store_unpacked_bytes`.
    unpacked: ByteBudget,
    /// This process: the first part of its temp names.
    owner: Owner,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Removes a temp file or directory unless disarmed.
pub(crate) struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    fn path(&self) -> &Path {
        self.path.as_deref().expect("armed guard")
    }

    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // `remove_dir_all` does not follow symlinks inside the tree.
            let _ = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(_) => Ok(()),
            };
        }
    }
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fsync_dir(path: &Path) -> Result<(), ImageError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io_at("fsync", path))
}

/// Whether a temp entry named by a version before [`Owner`] (`<pid>.<hex tag>.…`) may still be
/// work in progress: its pid runs and that process started no later than the tag (see the module
/// docs).
fn legacy_owner_alive(pid: &str, tag: &str) -> bool {
    // `from_str` and `from_str_radix` accept a leading `+`; the names never had one.
    if !pid.bytes().all(|b| b.is_ascii_digit()) || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let (Ok(pid), Ok(tag_nanos)) = (pid.parse::<u32>(), u64::from_str_radix(tag, 16)) else {
        return false;
    };
    let Some(owner) = Owner::of(pid) else {
        return false;
    };
    let tag_time = UNIX_EPOCH + Duration::from_nanos(tag_nanos);
    owner
        .started_at()
        .is_ok_and(|started| started <= tag_time + Duration::from_secs(2))
}

impl ImageStore {
    /// Opens (creating it if needed) the store at `root`, and removes temp leftovers of processes
    /// that no longer exist.
    pub fn open(root: impl Into<PathBuf>, limits: StoreLimits) -> Result<Self, ImageError> {
        let root = root.into();
        // Owner-only: extracted layers hold image files with their setuid bits and owners, which
        // must not become a way into root for other users of the host.
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in ["blobs/sha256", "layers", "images", "tmp"] {
            let p = root.join(dir);
            builder
                .create(&p)
                .map_err(ImageError::io_at("create", &p))?;
        }
        for dir in ["blobs", "layers", "images", "tmp"] {
            let p = root.join(dir);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
                .map_err(ImageError::io_at("chmod", &p))?;
        }
        let unpacked = ByteBudget::new(
            limits.max_store_unpacked_bytes,
            "the extracted layers of all images in the store together (a per-store cap: raise \
             `StoreLimits.max_store_unpacked_bytes`, or remove images and collect garbage)",
        );
        // Before any cleanup: without procfs every owner would look dead.
        let owner = Owner::current().map_err(|e| ImageError::io("identify", &root, e))?;
        let store = Self {
            root,
            limits,
            pins: Arc::default(),
            seq: AtomicU64::new(0),
            unpacked,
            owner,
        };
        for p in store.stale_temp_entries()? {
            remove_any(&p);
        }
        // What the layers already here take (a store can be over a cap lowered since: then it
        // takes no new layer until gc frees enough).
        let layers = store.root.join("layers");
        let mut used: u64 = 0;
        for entry in fs::read_dir(&layers).map_err(ImageError::io_at("list", &layers))? {
            let entry = entry.map_err(ImageError::io_at("list", &layers))?;
            if let Some(d) = entry.file_name().to_str().and_then(Digest::from_hex)
                && let Ok(info) = store.layer_info(&d)
            {
                used = used.saturating_add(info.unpacked_bytes);
            }
        }
        store.unpacked.add(used);
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// File bytes of all extracted layers in the store (and of extractions under way): what
    /// `StoreLimits::max_store_unpacked_bytes` caps.
    pub fn unpacked_bytes(&self) -> u64 {
        self.unpacked.used()
    }

    // ---- blobs ----

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// Reads a blob, refusing blobs over `max` bytes.
    pub fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound(digest.to_string()),
            _ => ImageError::io("open", &path, e),
        })?;
        let mut out = Vec::new();
        file.take(max.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(ImageError::io_at("read", &path))?;
        if out.len() as u64 > max {
            return Err(ImageError::TooLarge {
                what: format!("blob {digest}"),
                limit: max,
            });
        }
        Ok(out)
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, ImageError> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest) {
            self.write_atomic(&self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
    }

    /// Stores `bytes`, which must have digest `expected`.
    pub(crate) fn put_blob_verified(
        &self,
        bytes: &[u8],
        expected: &Digest,
        what: &str,
    ) -> Result<(), ImageError> {
        let actual = Digest::of(bytes);
        if &actual != expected {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        self.put_blob(bytes).map(drop)
    }

    /// Streams a blob into the store from a blocking reader, verifying its digest (and its size,
    /// when known) before it becomes visible.
    pub fn ingest_blob(
        &self,
        mut reader: impl Read,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<(), ImageError> {
        if self.has_blob(expected) {
            return Ok(());
        }
        let what = format!("blob {expected}");
        let max = size.unwrap_or(self.limits.max_blob_bytes);
        if max > self.limits.max_blob_bytes {
            return Err(ImageError::TooLarge {
                what,
                limit: self.limits.max_blob_bytes,
            });
        }
        let mut guard = TempGuard::new(self.temp_path("blob"));
        let mut file = new_file(guard.path())?;
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io("read", Path::new(&what), e)),
            };
            written += n as u64;
            if written > max {
                return Err(match size {
                    Some(expected) => ImageError::SizeMismatch {
                        what,
                        expected,
                        actual: written,
                    },
                    None => ImageError::TooLarge { what, limit: max },
                });
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(ImageError::io_at("write", guard.path()))?;
        }
        if let Some(expected) = size
            && written != expected
        {
            return Err(ImageError::SizeMismatch {
                what,
                expected,
                actual: written,
            });
        }
        let actual = Digest::from_hasher(hasher);
        if &actual != expected {
            return Err(ImageError::DigestMismatch {
                what,
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        file.sync_all()
            .map_err(ImageError::io_at("fsync", guard.path()))?;
        let dest = self.blob_path(expected);
        fs::rename(guard.path(), &dest).map_err(ImageError::io_at("rename", &dest))?;
        guard.disarm();
        Ok(())
    }

    /// An async writer for a blob of known digest and size; nothing is visible until
    /// [`BlobWriter::commit`] has verified both.
    pub(crate) async fn blob_writer(
        &self,
        expected: &Digest,
        size: u64,
        progress: Option<Box<dyn Fn(u64) + Send + Sync>>,
    ) -> Result<BlobWriter, ImageError> {
        let guard = TempGuard::new(self.temp_path("blob"));
        let file = new_file(guard.path())?;
        Ok(BlobWriter {
            file: tokio::fs::File::from_std(file),
            dest: self.blob_path(expected),
            guard,
            expected: expected.clone(),
            size,
            hasher: Sha256::new(),
            written: 0,
            overflow: false,
            progress,
            reported: 0,
        })
    }

    // ---- layers ----

    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("layers").join(digest.hex())
    }

    /// The extracted tree of a layer: an overlayfs lower dir.
    pub fn layer_rootfs(&self, digest: &Digest) -> PathBuf {
        self.layer_dir(digest).join("rootfs")
    }

    pub fn has_layer(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.layer_dir(digest).join("layer.json")).is_ok_and(|m| m.is_file())
    }

    pub fn layer_info(&self, digest: &Digest) -> Result<LayerInfo, ImageError> {
        let path = self.layer_dir(digest).join("layer.json");
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound(format!("layer {digest}")),
            _ => ImageError::io("read", &path, e),
        })?;
        let file: LayerFile =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::Malformed {
                what: path.display().to_string(),
                reason: e.to_string(),
            })?;
        file.into_info()
    }

    /// Extracts the layer blob `digest` (already in the store) into `layers/<hex>` — once: an
    /// already extracted layer is returned as is. Blocking; call it from a blocking thread.
    pub fn unpack_layer(&self, digest: &Digest) -> Result<LayerInfo, ImageError> {
        self.unpack_layer_within(digest, None)
    }

    /// [`Self::unpack_layer`], also charging the bytes written to `image` (the pull's cap).
    pub(crate) fn unpack_layer_within(
        &self,
        digest: &Digest,
        image: Option<&ByteBudget>,
    ) -> Result<LayerInfo, ImageError> {
        if self.has_layer(digest) {
            return self.layer_info(digest);
        }
        let blob_path = self.blob_path(digest);
        let blob = File::open(&blob_path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound(format!("blob {digest}")),
            _ => ImageError::io("open", &blob_path, e),
        })?;
        let mut work = TempGuard::new(self.temp_path("layer"));
        let rootfs = work.path().join("rootfs");
        fs::create_dir(work.path()).map_err(ImageError::io_at("create", work.path()))?;
        fs::create_dir(&rootfs).map_err(ImageError::io_at("create", &rootfs))?;
        let mut budgets = vec![&self.unpacked];
        budgets.extend(image);
        let summary = extract_layer_budgeted(
            BufReader::with_capacity(256 * 1024, blob),
            &rootfs,
            &self.limits.extract,
            &budgets,
        )
        .map_err(|source| ImageError::Layer {
            layer: digest.to_string(),
            source,
        })?;
        // Charged to the store until the layer is in place (or given back below).
        let mut charge = StoreCharge {
            budget: &self.unpacked,
            bytes: summary.bytes,
        };
        let info = LayerInfo {
            digest: digest.clone(),
            diff_id: summary.diff_id,
            entries: summary.entries,
            unpacked_bytes: summary.bytes,
            whiteouts: summary.whiteouts,
            opaque_dirs: summary.opaque_dirs,
            skipped: summary.skipped,
            skipped_total: summary.skipped_total,
            xattrs_dropped: summary.xattrs_dropped,
        };
        let json = serde_json::to_vec_pretty(&LayerFile::from_info(&info))
            .map_err(|e| ImageError::Internal(e.to_string()))?;
        let mut f = new_file(&work.path().join("layer.json"))?;
        f.write_all(&json)
            .map_err(ImageError::io_at("write", work.path()))?;
        // One syncfs instead of an fsync per extracted file: the layer is durable before it is
        // visible.
        let dir = File::open(work.path()).map_err(ImageError::io_at("open", work.path()))?;
        nix::unistd::syncfs(dir.as_fd())
            .map_err(|e| ImageError::io("syncfs", work.path(), e.into()))?;
        let dest = self.layer_dir(digest);
        match fs::rename(work.path(), &dest) {
            Ok(()) => {
                work.disarm();
                charge.bytes = 0;
            }
            // Someone else extracted it meanwhile: theirs is as good as ours (same blob), and
            // already charged.
            Err(_) if self.has_layer(digest) => return self.layer_info(digest),
            Err(e) => return Err(ImageError::io("rename", &dest, e)),
        }
        fsync_dir(&self.root.join("layers"))?;
        Ok(info)
    }

    /// Overlay lower dirs for `record`, top-most layer first (overlayfs `lowerdir=` order).
    pub fn lowerdirs(&self, record: &ImageRecord) -> Vec<PathBuf> {
        record
            .layers
            .iter()
            .rev()
            .map(|l| self.layer_rootfs(&l.digest))
            .collect()
    }

    /// The module file of a Wasm image.
    pub fn wasm_module_path(&self, record: &ImageRecord) -> Option<PathBuf> {
        record.wasm_module().map(|l| self.blob_path(&l.digest))
    }

    // ---- records ----

    fn record_path(&self, reference: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", Digest::of(reference.as_bytes()).hex()))
    }

    /// The record of `reference` (normalised first), if the image is in the store.
    pub fn get(&self, reference: &str) -> Result<Option<ImageRecord>, ImageError> {
        self.get_ref(&ImageRef::parse(reference)?)
    }

    pub fn get_ref(&self, reference: &ImageRef) -> Result<Option<ImageRecord>, ImageError> {
        let path = self.record_path(&reference.to_string());
        match fs::read(&path) {
            Ok(bytes) => read_record(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read", &path, e)),
        }
    }

    /// A record whose manifest or index has this digest (under any reference).
    pub fn find_by_digest(&self, digest: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|r| &r.manifest_digest == digest || r.index_digest.as_ref() == Some(digest)))
    }

    pub(crate) fn put_record(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let json = serde_json::to_vec_pretty(&RecordFile::from_record(record))
            .map_err(|e| ImageError::Internal(e.to_string()))?;
        self.write_atomic(&self.record_path(&record.reference), &json)
    }

    /// Every image in the store, sorted by reference. Unreadable records are skipped (and logged).
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut out = Vec::new();
        for (path, result) in self.all_records()? {
            match result {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable image record")
                }
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    #[allow(clippy::type_complexity)]
    fn all_records(&self) -> Result<Vec<(PathBuf, Result<ImageRecord, ImageError>)>, ImageError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io_at("list", &dir))? {
            let entry = entry.map_err(ImageError::io_at("list", &dir))?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let result = fs::read(&path)
                .map_err(ImageError::io_at("read", &path))
                .and_then(|b| read_record(&path, &b));
            out.push((path, result));
        }
        Ok(out)
    }

    /// Removes the record of `reference`; its blobs and layers stay until [`gc`](Self::gc).
    pub fn remove(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let r = ImageRef::parse(reference)?;
        let record = self
            .get_ref(&r)?
            .ok_or_else(|| ImageError::NotFound(r.to_string()))?;
        let path = self.record_path(&record.reference);
        fs::remove_file(&path).map_err(ImageError::io_at("remove", &path))?;
        Ok(record)
    }

    // ---- leases and gc ----

    /// Keeps everything `record` needs from being collected until the lease is dropped. Fails if
    /// part of the image is missing.
    pub fn lease(&self, record: &ImageRecord) -> Result<Lease, ImageError> {
        let lease = self.pin(record.digests());
        for layer in &record.layers {
            let present = match record.kind {
                ImageKind::Container => self.has_layer(&layer.digest),
                ImageKind::Wasm => self.has_blob(&layer.digest),
            };
            if !present {
                return Err(ImageError::NotFound(format!(
                    "layer {} of {}",
                    layer.digest, record.reference
                )));
            }
        }
        Ok(lease)
    }

    pub(crate) fn pin(&self, digests: impl IntoIterator<Item = Digest>) -> Lease {
        let mut lease = Lease {
            pins: self.pins.clone(),
            digests: Vec::new(),
        };
        for d in digests {
            lease.add(&d);
        }
        lease
    }

    /// Deletes blobs and extracted layers that no image record references and no lease pins, and
    /// temp leftovers of dead processes. Refuses to run if any record is unreadable (it could
    /// reference anything). Blocking.
    pub fn gc(&self) -> Result<GcReport, ImageError> {
        let mut report = GcReport::default();
        let mut trash: Vec<PathBuf> = Vec::new();
        {
            // Held while deciding and unlinking/renaming, so a pull cannot finish (write its record
            // and unpin) in between: it either pinned its digests or its record is visible.
            let pins = lock(&self.pins);
            let mut keep: HashSet<Digest> = pins.keys().cloned().collect();
            for (path, record) in self.all_records()? {
                let record = record.map_err(|e| {
                    ImageError::Internal(format!(
                        "gc refused: record {} is unreadable ({e})",
                        path.display()
                    ))
                })?;
                keep.extend(record.digests());
            }

            let blobs = self.root.join("blobs/sha256");
            for entry in fs::read_dir(&blobs).map_err(ImageError::io_at("list", &blobs))? {
                let entry = entry.map_err(ImageError::io_at("list", &blobs))?;
                let Some(digest) = entry.file_name().to_str().and_then(Digest::from_hex) else {
                    continue;
                };
                if keep.contains(&digest) {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path())
                    .map_err(ImageError::io_at("remove", &entry.path()))?;
                report.freed_bytes += size;
                report.removed_blobs.push(digest);
            }

            let layers = self.root.join("layers");
            for entry in fs::read_dir(&layers).map_err(ImageError::io_at("list", &layers))? {
                let entry = entry.map_err(ImageError::io_at("list", &layers))?;
                let Some(digest) = entry.file_name().to_str().and_then(Digest::from_hex) else {
                    continue;
                };
                if keep.contains(&digest) {
                    continue;
                }
                let unpacked = self
                    .layer_info(&digest)
                    .map(|i| i.unpacked_bytes)
                    .unwrap_or(0);
                report.freed_bytes += unpacked;
                self.unpacked.release(unpacked);
                // Renamed out of sight now, deleted after the lock is released.
                let dest = self.temp_path("trash");
                fs::rename(entry.path(), &dest)
                    .map_err(ImageError::io_at("rename", &entry.path()))?;
                trash.push(dest);
                report.removed_layers.push(digest);
            }
        }
        let stale = self.stale_temp_entries()?;
        report.removed_temp = stale.len();
        trash.extend(stale);
        for p in trash {
            remove_any(&p);
        }
        report.removed_blobs.sort();
        report.removed_layers.sort();
        Ok(report)
    }

    // ---- helpers ----

    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}.{n}.{what}", self.owner))
    }

    /// Temp entries left by processes that are gone: their owner is not alive (a dead pid, or a
    /// recycled one: a restarted worker is often PID 1 again). Names of earlier versions follow
    /// the rule in the module docs; names we do not understand are not ours to keep either.
    fn stale_temp_entries(&self) -> Result<Vec<PathBuf>, ImageError> {
        let tmp = self.root.join("tmp");
        let mut out = Vec::new();
        for entry in fs::read_dir(&tmp).map_err(ImageError::io_at("list", &tmp))? {
            let entry = entry.map_err(ImageError::io_at("list", &tmp))?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            let live = Owner::parse_prefix(name).is_some_and(|(owner, _)| owner.is_alive())
                || match name.split('.').collect::<Vec<_>>()[..] {
                    [pid, tag, _, ..] => legacy_owner_alive(pid, tag),
                    _ => false,
                };
            if !live {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let mut guard = TempGuard::new(self.temp_path("file"));
        let mut f = new_file(guard.path())?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(ImageError::io_at("write", guard.path()))?;
        fs::rename(guard.path(), dest).map_err(ImageError::io_at("rename", dest))?;
        guard.disarm();
        if let Some(parent) = dest.parent() {
            fsync_dir(parent)?;
        }
        Ok(())
    }
}

/// Bytes charged to the store's budget for a layer not yet in place; given back on drop.
struct StoreCharge<'a> {
    budget: &'a ByteBudget,
    bytes: u64,
}

impl Drop for StoreCharge<'_> {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

fn new_file(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(ImageError::io_at("create", path))
}

fn remove_any(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "could not remove");
    }
}

/// Streams a blob to a temp file while hashing it; see [`ImageStore::blob_writer`].
pub(crate) struct BlobWriter {
    file: tokio::fs::File,
    guard: TempGuard,
    dest: PathBuf,
    expected: Digest,
    size: u64,
    hasher: Sha256,
    written: u64,
    overflow: bool,
    progress: Option<Box<dyn Fn(u64) + Send + Sync>>,
    reported: u64,
}

impl BlobWriter {
    const REPORT_EVERY: u64 = 256 * 1024;

    /// Flushes, verifies size and digest, and moves the blob into place.
    pub(crate) async fn commit(mut self, what: &str) -> Result<(), ImageError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .flush()
            .await
            .map_err(ImageError::io_at("write", self.guard.path()))?;
        self.file
            .sync_all()
            .await
            .map_err(ImageError::io_at("fsync", self.guard.path()))?;
        self.check_size(what)?;
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        if let Some(p) = &self.progress {
            p(self.written);
        }
        tokio::fs::rename(self.guard.path(), &self.dest)
            .await
            .map_err(ImageError::io_at("rename", &self.dest))?;
        self.guard.disarm();
        Ok(())
    }

    /// The size error, if the data so far already contradicts the descriptor.
    pub(crate) fn check_size(&self, what: &str) -> Result<(), ImageError> {
        if self.overflow || self.written != self.size {
            return Err(ImageError::SizeMismatch {
                what: what.to_string(),
                expected: self.size,
                actual: self.written + u64::from(self.overflow),
            });
        }
        Ok(())
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflow
    }
}

impl AsyncWrite for BlobWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.written.saturating_add(buf.len() as u64) > this.size {
            this.overflow = true;
            return Poll::Ready(Err(io::Error::other(format!(
                "blob is larger than the {} bytes its descriptor declares",
                this.size
            ))));
        }
        match Pin::new(&mut this.file).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.written += n as u64;
                if this.written - this.reported >= Self::REPORT_EVERY {
                    this.reported = this.written;
                    if let Some(p) = &this.progress {
                        p(this.written);
                    }
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

// ---- on-disk formats (private: the public types carry no serde) ----

#[derive(Serialize, Deserialize)]
struct PlatformFile {
    os: String,
    architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct LayerRefFile {
    digest: String,
    media_type: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diff_id: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    env: Vec<(String, String)>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct RecordFile {
    version: u32,
    reference: String,
    kind: String,
    manifest_digest: String,
    manifest_media_type: String,
    #[serde(default)]
    index_digest: Option<String>,
    #[serde(default)]
    platform: Option<PlatformFile>,
    config_digest: String,
    config_media_type: String,
    #[serde(default)]
    config: ConfigFile,
    layers: Vec<LayerRefFile>,
    size: u64,
    unpacked_size: u64,
    stored_at: u64,
}

impl RecordFile {
    fn from_record(r: &ImageRecord) -> Self {
        Self {
            version: RECORD_VERSION,
            reference: r.reference.clone(),
            kind: r.kind.as_str().to_string(),
            manifest_digest: r.manifest_digest.to_string(),
            manifest_media_type: r.manifest_media_type.clone(),
            index_digest: r.index_digest.as_ref().map(Digest::to_string),
            platform: r.platform.as_ref().map(|p| PlatformFile {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
            }),
            config_digest: r.config_digest.to_string(),
            config_media_type: r.config_media_type.clone(),
            config: ConfigFile {
                entrypoint: r.config.entrypoint.clone(),
                cmd: r.config.cmd.clone(),
                env: r.config.env.clone(),
                working_dir: r.config.working_dir.clone(),
                user: r.config.user.clone(),
                stop_signal: r.config.stop_signal.clone(),
                labels: r.config.labels.clone(),
            },
            layers: r
                .layers
                .iter()
                .map(|l| LayerRefFile {
                    digest: l.digest.to_string(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: l.diff_id.as_ref().map(Digest::to_string),
                })
                .collect(),
            size: r.size,
            unpacked_size: r.unpacked_size,
            stored_at: r.stored_at,
        }
    }

    fn into_record(self) -> Result<ImageRecord, ImageError> {
        if self.version != RECORD_VERSION {
            return Err(ImageError::Unsupported {
                what: "image record version",
                value: self.version.to_string(),
            });
        }
        let kind = match self.kind.as_str() {
            "container" => ImageKind::Container,
            "wasm" => ImageKind::Wasm,
            other => {
                return Err(ImageError::Unsupported {
                    what: "image kind",
                    value: other.to_string(),
                });
            }
        };
        Ok(ImageRecord {
            reference: self.reference,
            kind,
            manifest_digest: Digest::parse(&self.manifest_digest)?,
            manifest_media_type: self.manifest_media_type,
            index_digest: self
                .index_digest
                .as_deref()
                .map(Digest::parse)
                .transpose()?,
            platform: self
                .platform
                .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref())),
            config_digest: Digest::parse(&self.config_digest)?,
            config_media_type: self.config_media_type,
            config: ImageConfig {
                entrypoint: self.config.entrypoint,
                cmd: self.config.cmd,
                env: self.config.env,
                working_dir: self.config.working_dir,
                user: self.config.user,
                stop_signal: self.config.stop_signal,
                labels: self.config.labels,
            },
            layers: self
                .layers
                .into_iter()
                .map(|l| {
                    Ok(LayerRef {
                        digest: Digest::parse(&l.digest)?,
                        media_type: l.media_type,
                        size: l.size,
                        diff_id: l.diff_id.as_deref().map(Digest::parse).transpose()?,
                    })
                })
                .collect::<Result<_, ImageError>>()?,
            size: self.size,
            unpacked_size: self.unpacked_size,
            stored_at: self.stored_at,
        })
    }
}

fn read_record(path: &Path, bytes: &[u8]) -> Result<ImageRecord, ImageError> {
    let file: RecordFile = serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    file.into_record()
}

#[derive(Serialize, Deserialize)]
struct LayerFile {
    version: u32,
    digest: String,
    diff_id: String,
    entries: u64,
    unpacked_bytes: u64,
    whiteouts: Vec<String>,
    opaque_dirs: Vec<String>,
    skipped: Vec<(String, String)>,
    skipped_total: u64,
    xattrs_dropped: u64,
}

impl LayerFile {
    fn from_info(i: &LayerInfo) -> Self {
        Self {
            version: RECORD_VERSION,
            digest: i.digest.to_string(),
            diff_id: i.diff_id.to_string(),
            entries: i.entries,
            unpacked_bytes: i.unpacked_bytes,
            whiteouts: i.whiteouts.clone(),
            opaque_dirs: i.opaque_dirs.clone(),
            skipped: i
                .skipped
                .iter()
                .map(|s| (s.path.clone(), s.reason.clone()))
                .collect(),
            skipped_total: i.skipped_total,
            xattrs_dropped: i.xattrs_dropped,
        }
    }

    fn into_info(self) -> Result<LayerInfo, ImageError> {
        Ok(LayerInfo {
            digest: Digest::parse(&self.digest)?,
            diff_id: Digest::parse(&self.diff_id)?,
            entries: self.entries,
            unpacked_bytes: self.unpacked_bytes,
            whiteouts: self.whiteouts,
            opaque_dirs: self.opaque_dirs,
            skipped: self
                .skipped
                .into_iter()
                .map(|(path, reason)| SkippedEntry { path, reason })
                .collect(),
            skipped_total: self.skipped_total,
            xattrs_dropped: self.xattrs_dropped,
        })
    }
}

/// Builds the public config from the image's config JSON.
pub(crate) fn image_config(raw: &super::oci::RawConfigFile) -> ImageConfig {
    let Some(c) = &raw.config else {
        return ImageConfig::default();
    };
    ImageConfig {
        entrypoint: c.entrypoint.clone().unwrap_or_default(),
        cmd: c.cmd.clone().unwrap_or_default(),
        env: c
            .env
            .iter()
            .flatten()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user: c.user.clone().filter(|u| !u.is_empty()),
        stop_signal: c.stop_signal.clone().filter(|s| !s.is_empty()),
        labels: c.labels.clone().unwrap_or_default(),
    }
}

/// Which layers of a manifest are Wasm, which are tar, and whether the mix is acceptable.
pub(crate) fn classify_layers(
    layers: &[super::oci::Descriptor],
) -> Result<Vec<LayerFormat>, ImageError> {
    layers
        .iter()
        .map(|l| {
            layer_format(&l.media_type).ok_or_else(|| ImageError::Unsupported {
                what: "layer media type",
                value: super::display_bytes(l.media_type.as_bytes()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(reference: &str, layers: &[Digest]) -> ImageRecord {
        ImageRecord {
            reference: reference.to_string(),
            kind: ImageKind::Container,
            manifest_digest: Digest::of(reference.as_bytes()),
            manifest_media_type: super::super::media_types::OCI_MANIFEST.to_string(),
            index_digest: None,
            platform: Some(Platform::host()),
            config_digest: Digest::of(b"{}"),
            config_media_type: super::super::media_types::OCI_CONFIG.to_string(),
            config: ImageConfig {
                env: vec![("PATH".into(), "/bin".into())],
                ..Default::default()
            },
            layers: layers
                .iter()
                .map(|d| LayerRef {
                    digest: d.clone(),
                    media_type: super::super::media_types::OCI_LAYER_TAR.to_string(),
                    size: 1,
                    diff_id: None,
                })
                .collect(),
            size: 1,
            unpacked_size: 0,
            stored_at: 1,
        }
    }

    #[test]
    fn records_round_trip_and_gc_keeps_referenced_and_leased_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path().join("store"), StoreLimits::default()).unwrap();
        let a = store.put_blob(b"layer a").unwrap();
        let b = store.put_blob(b"layer b").unwrap();
        let c = store.put_blob(b"layer c").unwrap();
        let config = store.put_blob(b"{}").unwrap();
        let r = record("docker.io/library/x:1", std::slice::from_ref(&a));
        store.put_record(&r).unwrap();
        assert_eq!(store.get("x:1").unwrap().unwrap(), r);
        assert_eq!(store.list().unwrap(), vec![r.clone()]);

        let lease = store.pin([b.clone()]);
        let report = store.gc().unwrap();
        assert_eq!(report.removed_blobs, vec![c.clone()]);
        assert!(store.has_blob(&a) && store.has_blob(&b) && store.has_blob(&config));
        drop(lease);
        let report = store.gc().unwrap();
        assert_eq!(report.removed_blobs, vec![b]);

        store.remove("x:1").unwrap();
        assert!(store.get("x:1").unwrap().is_none());
        assert!(matches!(store.remove("x:1"), Err(ImageError::NotFound(_))));
        let report = store.gc().unwrap();
        let mut gone = vec![a, config];
        gone.sort();
        assert_eq!(report.removed_blobs, gone);
    }

    #[test]
    fn ingest_verifies_digest_and_size() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path().join("store"), StoreLimits::default()).unwrap();
        let d = Digest::of(b"data");
        assert!(matches!(
            store.ingest_blob(&b"dato"[..], &d, Some(4)),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(matches!(
            store.ingest_blob(&b"data!"[..], &d, Some(4)),
            Err(ImageError::SizeMismatch { .. })
        ));
        assert!(!store.has_blob(&d));
        store.ingest_blob(&b"data"[..], &d, Some(4)).unwrap();
        assert!(store.has_blob(&d));
        assert_eq!(
            fs::read_dir(tmp.path().join("store/tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn stale_temp_entries_are_removed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let store = ImageStore::open(&root, StoreLimits::default()).unwrap();
        let mine = store.temp_path("layer");
        fs::create_dir(&mine).unwrap();
        // pid 0 is never a live owner; our pid with another tag is an earlier incarnation.
        fs::create_dir(root.join("tmp/0.1a.1.layer")).unwrap();
        fs::create_dir(root.join(format!("tmp/{}.0.1.layer", std::process::id()))).unwrap();
        fs::write(root.join("tmp/junk"), b"").unwrap();
        drop(ImageStore::open(&root, StoreLimits::default()).unwrap());
        let left: Vec<_> = fs::read_dir(root.join("tmp")).unwrap().collect();
        assert_eq!(left.len(), 1);
        assert!(mine.exists(), "a live store's work in progress is kept");
        let mode = fs::metadata(root.join("layers"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn temp_entries_of_a_recycled_pid_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let store = ImageStore::open(&root, StoreLimits::default()).unwrap();
        let me = Owner::current().unwrap();
        let mine = store.temp_path("layer");
        assert!(
            mine.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{me}.")),
            "{mine:?} is named by its owner"
        );
        fs::create_dir(&mine).unwrap();
        // Our pid (alive) with another start time: a predecessor that had our pid.
        let recycled = root.join(format!("tmp/{}.{}.1.layer", me.pid(), me.start_time() + 1));
        fs::create_dir_all(recycled.join("usr/bin")).unwrap();
        fs::write(
            root.join(format!("tmp/{}.{}.2.file", me.pid(), me.start_time() + 1)),
            b"x",
        )
        .unwrap();
        // Old-format names (`<pid>.<hex nanos tag>.…`): one tagged an hour before this process
        // started is a recycled pid's; one tagged now is a live old-version process's work.
        let hex_nanos = |t: SystemTime| {
            format!(
                "{:x}",
                t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
            )
        };
        let started = me.started_at().unwrap();
        let old_recycled = root.join(format!(
            "tmp/{}.{}.3.layer",
            me.pid(),
            hex_nanos(started - Duration::from_secs(3600))
        ));
        let old_live = root.join(format!(
            "tmp/{}.{}.4.layer",
            me.pid(),
            hex_nanos(SystemTime::now())
        ));
        let old_dead = root.join(format!(
            "tmp/999999999.{}.5.layer",
            hex_nanos(SystemTime::now())
        ));
        for d in [&old_recycled, &old_live, &old_dead] {
            fs::create_dir(d).unwrap();
        }
        let report = store.gc().unwrap();
        assert_eq!(report.removed_temp, 4, "{report:?}");
        let mut left: Vec<_> = fs::read_dir(root.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        let mut want = vec![mine.clone(), old_live.clone()];
        want.sort();
        assert_eq!(left, want);
        // The same at open.
        fs::create_dir(&recycled).unwrap();
        drop(ImageStore::open(&root, StoreLimits::default()).unwrap());
        assert!(!recycled.exists());
        assert!(mine.exists() && old_live.exists());
    }
}
