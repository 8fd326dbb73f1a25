//! Pulling images from registries (through `oci-client`) and materialising them in the store.
//!
//! One [`ImageService`] per process: it owns the HTTP client, coalesces concurrent pulls of one
//! reference into one download (a shared future per reference, run as its own task so that a
//! caller that gives up does not cancel the others), and serialises work on one digest so two
//! images sharing a layer fetch and extract it once.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use super::extract::ByteBudget;
use super::media::{LayerFormat, Platform, is_manifest, is_wasm_config, media_types};
use super::oci::{Descriptor, Document, parse_config, parse_document};
use super::store::{
    BlobWriter, ImageConfig, ImageKind, ImageRecord, LayerRef, classify_layers, image_config,
};
use super::{Digest, ImageError, ImageRef, ImageStore, LayerInfo};

/// Registry credentials. `Debug` never shows the secret, and nothing in this module logs them.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    Bearer { token: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// How the service talks to registries. The defaults are the safe ones: HTTPS everywhere,
/// anonymous access (with the registry's anonymous token flow), this host's platform.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host:port`, as written in references) reached over plain HTTP. Default none.
    pub insecure_registries: Vec<String>,
    /// If set, the only registries images may come from (jobs name images, so without a list a
    /// job can make the worker contact any host). Default: any.
    pub allowed_registries: Option<Vec<String>>,
    /// Credentials per registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub credentials: HashMap<String, Credentials>,
    /// The platform chosen from multi-arch indexes; images for another one are refused.
    pub platform: Platform,
    /// Layers fetched (and extracted) at the same time by one pull. Default 3.
    pub max_concurrent_downloads: usize,
    pub connect_timeout: Option<Duration>,
    /// Per read on a connection (a stalled registry fails instead of hanging). Default 60 s.
    pub read_timeout: Option<Duration>,
    /// A whole pull. Default 1 hour.
    pub pull_timeout: Option<Duration>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            allowed_registries: None,
            credentials: HashMap::new(),
            platform: Platform::host(),
            max_concurrent_downloads: 3,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(60)),
            pull_timeout: Some(Duration::from_secs(3600)),
        }
    }
}

/// Whether to contact the registry when the image is already in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Use the stored image if there is one (no network at all).
    #[default]
    IfNotPresent,
    /// Resolve the reference again; only blobs not yet in the store are downloaded.
    Always,
}

/// Progress of a pull, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The manifest is known: what the image is made of.
    Resolved {
        reference: String,
        manifest_digest: Digest,
        platform: Option<Platform>,
        /// Layer digests and sizes, bottom first.
        layers: Vec<(Digest, u64)>,
    },
    /// Bytes of a blob received so far (reported every 256 KiB and at the end).
    Downloading {
        digest: Digest,
        done: u64,
        total: u64,
    },
    /// A blob was downloaded and verified.
    Downloaded {
        digest: Digest,
        total: u64,
    },
    /// A blob was already in the store: nothing downloaded.
    Cached {
        digest: Digest,
        total: u64,
    },
    Extracting {
        digest: Digest,
    },
    Extracted {
        digest: Digest,
        unpacked_bytes: u64,
    },
}

/// Receives [`PullEvent`]s; called from the pulling task, so keep it quick.
pub type ProgressFn = Arc<dyn Fn(&PullEvent) + Send + Sync>;

/// What one pull fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullStats {
    pub blobs_downloaded: u64,
    pub bytes_downloaded: u64,
    pub blobs_cached: u64,
    pub layers_extracted: u64,
}

/// The result of [`ImageService::pull`].
#[derive(Debug, Clone)]
pub struct PullOutcome {
    pub record: ImageRecord,
    /// What the pull that produced `record` fetched (shared by coalesced callers).
    pub stats: PullStats,
    /// This caller joined a pull another caller had started.
    pub coalesced: bool,
    /// The image was already stored; the registry was not contacted.
    pub from_cache: bool,
}

type SharedPull = Shared<BoxFuture<'static, Result<PullOutcome, ImageError>>>;

struct Flight {
    result: SharedPull,
    sinks: Arc<Mutex<Vec<ProgressFn>>>,
}

struct FlightGuard {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        lock(&self.inner.flights).remove(&self.key);
    }
}

/// Pulls and imports images into an [`ImageStore`]. Cheap to clone.
#[derive(Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

impl fmt::Debug for ImageService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageService")
            .field("store", &self.inner.store)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<ImageStore>,
    client: oci_client::Client,
    pub(crate) options: RegistryOptions,
    flights: Mutex<HashMap<String, Flight>>,
    digest_locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `e` and its sources, `: `-separated (reqwest hides the useful part in the sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let msg = src.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = src.source();
    }
    s
}

fn registry_error(reference: &ImageRef, e: OciDistributionError) -> ImageError {
    match e {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch {
                what: format!("content from the registry for {reference}"),
                expected,
                actual,
            }
        }
        other => ImageError::Registry {
            reference: reference.to_string(),
            message: error_chain(&other),
        },
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Internal(format!("blocking task failed: {e}")))?
}

/// Stops the extractions charging `0` when dropped (see `materialize`).
struct AbortOnDrop<'a>(&'a ByteBudget);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where manifests and blobs come from: a registry or an OCI layout.
#[async_trait::async_trait]
pub(crate) trait Source: Send + Sync {
    /// The bytes of the manifest or index `digest` (verified by the caller).
    async fn manifest(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ImageError>;
    /// Streams a blob into `out` (which verifies size and digest).
    async fn blob(&self, desc: &Descriptor, out: &mut BlobWriter) -> Result<(), ImageError>;
}

struct RegistrySource<'a> {
    client: &'a oci_client::Client,
    image: &'a ImageRef,
    auth: RegistryAuth,
}

#[async_trait::async_trait]
impl Source for RegistrySource<'_> {
    async fn manifest(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ImageError> {
        let by_digest = self.image.with_digest(digest.clone()).to_oci();
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&by_digest, &self.auth, media_types::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| registry_error(self.image, e))?;
        if bytes.len() as u64 > max {
            return Err(ImageError::TooLarge {
                what: format!("manifest {digest}"),
                limit: max,
            });
        }
        Ok(bytes.to_vec())
    }

    async fn blob(&self, desc: &Descriptor, out: &mut BlobWriter) -> Result<(), ImageError> {
        // No `urls`: a foreign layer is fetched from the registry or not at all (an image must not
        // make the host fetch arbitrary URLs).
        let descriptor = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.to_string(),
            size: desc.size as i64,
            ..Default::default()
        };
        self.client
            .pull_blob(&self.image.to_oci(), &descriptor, out)
            .await
            .map_err(|e| registry_error(self.image, e))
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    downloaded: AtomicU64,
    bytes: AtomicU64,
    cached: AtomicU64,
    extracted: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> PullStats {
        PullStats {
            blobs_downloaded: self.downloaded.load(Ordering::Relaxed),
            bytes_downloaded: self.bytes.load(Ordering::Relaxed),
            blobs_cached: self.cached.load(Ordering::Relaxed),
            layers_extracted: self.extracted.load(Ordering::Relaxed),
        }
    }
}

/// Fans events out to every caller waiting on a pull.
#[derive(Clone, Default)]
pub(crate) struct Progress {
    sinks: Arc<Mutex<Vec<ProgressFn>>>,
}

impl Progress {
    pub(crate) fn new(sink: Option<ProgressFn>) -> Self {
        Self {
            sinks: Arc::new(Mutex::new(sink.into_iter().collect())),
        }
    }

    fn emit(&self, event: &PullEvent) {
        let sinks = lock(&self.sinks).clone();
        for sink in sinks {
            sink(event);
        }
    }
}

impl ImageService {
    /// A service pulling into `store`. Installs rustls' `ring` provider as the process default if
    /// none is installed yet (`oci-client` is built without one and would panic otherwise).
    pub fn new(store: Arc<ImageStore>, options: RegistryOptions) -> Result<Self, ImageError> {
        super::install_crypto_provider();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(options.insecure_registries.clone()),
            // Indexes are resolved here (with variants), never by the client.
            platform_resolver: None,
            connect_timeout: options.connect_timeout,
            read_timeout: options.read_timeout,
            max_concurrent_download: options.max_concurrent_downloads.max(1),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| ImageError::Registry {
            reference: "(client setup)".to_string(),
            message: error_chain(&e),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                client,
                options,
                flights: Mutex::default(),
                digest_locks: Mutex::default(),
            }),
        })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.inner.store
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.inner.options
    }

    /// Pulls `reference` (normalised first) into the store and returns its record. Concurrent
    /// pulls of one reference share one download; with [`PullPolicy::IfNotPresent`] a stored
    /// image is returned without contacting the registry.
    pub async fn pull(
        &self,
        reference: &str,
        policy: PullPolicy,
        progress: Option<ProgressFn>,
    ) -> Result<PullOutcome, ImageError> {
        let image = ImageRef::parse(reference)?;
        if let Some(allowed) = &self.inner.options.allowed_registries
            && !allowed.iter().any(|r| r == image.registry())
        {
            return Err(ImageError::RegistryNotAllowed {
                registry: image.registry().to_string(),
            });
        }
        if policy == PullPolicy::IfNotPresent
            && let Some(record) = self.cached(&image).await?
        {
            return Ok(PullOutcome {
                record,
                stats: PullStats::default(),
                coalesced: false,
                from_cache: true,
            });
        }
        let key = image.to_string();
        let (result, coalesced) = {
            let mut flights = lock(&self.inner.flights);
            match flights.get(&key) {
                Some(flight) => {
                    if let Some(p) = progress {
                        lock(&flight.sinks).push(p);
                    }
                    (flight.result.clone(), true)
                }
                None => {
                    let progress = Progress::new(progress);
                    let sinks = progress.sinks.clone();
                    let inner = self.inner.clone();
                    let task_key = key.clone();
                    let task = tokio::spawn(async move {
                        // Ends the flight however the task ends (even by a panic), so a later
                        // pull starts afresh instead of joining a dead one.
                        let _flight = FlightGuard {
                            inner: inner.clone(),
                            key: task_key,
                        };
                        inner.pull_task(&image, &progress).await
                    });
                    let result = async move {
                        task.await
                            .map_err(|e| ImageError::Internal(format!("pull task failed: {e}")))?
                    }
                    .boxed()
                    .shared();
                    flights.insert(
                        key,
                        Flight {
                            result: result.clone(),
                            sinks,
                        },
                    );
                    (result, false)
                }
            }
        };
        let mut outcome = result.await?;
        outcome.coalesced = coalesced;
        Ok(outcome)
    }

    /// The stored record of `image`, if the image is complete in the store. A digest reference
    /// also matches an image stored under another name (a record is then written for this one).
    async fn cached(&self, image: &ImageRef) -> Result<Option<ImageRecord>, ImageError> {
        let store = self.inner.store.clone();
        let image = image.clone();
        blocking(move || {
            // Found by its own name, or by digest under another (then stored under this name
            // too, once its layers are known to be present).
            let (record, by_digest) = match store.get_ref(&image)? {
                Some(r) => (r, false),
                None => match image.digest() {
                    Some(d) => match store.find_by_digest(d)? {
                        Some(mut r) => {
                            r.reference = image.to_string();
                            (r, true)
                        }
                        None => return Ok(None),
                    },
                    None => return Ok(None),
                },
            };
            if store.lease(&record).is_err() {
                return Ok(None);
            }
            if by_digest {
                store.put_record(&record)?;
            }
            Ok(Some(record))
        })
        .await
    }

    /// Deletes unreferenced blobs and layers (see [`ImageStore::gc`]) off the async threads.
    pub async fn gc(&self) -> Result<super::GcReport, ImageError> {
        let store = self.inner.store.clone();
        blocking(move || store.gc()).await
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    async fn pull_task(
        &self,
        image: &ImageRef,
        progress: &Progress,
    ) -> Result<PullOutcome, ImageError> {
        let work = self.pull_from_registry(image, progress);
        let result = match self.options.pull_timeout {
            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(ImageError::Registry {
                    reference: image.to_string(),
                    message: format!("pull timed out after {limit:?}"),
                })
            }),
            None => work.await,
        };
        match &result {
            Ok(o) => tracing::info!(
                reference = %image,
                manifest = %o.record.manifest_digest,
                downloaded = o.stats.blobs_downloaded,
                bytes = o.stats.bytes_downloaded,
                "image pulled"
            ),
            Err(e) => tracing::warn!(reference = %image, error = %e, "image pull failed"),
        }
        result
    }

    fn auth_for(&self, image: &ImageRef) -> RegistryAuth {
        let creds = &self.options.credentials;
        let found = creds.get(image.registry()).or_else(|| {
            (image.registry() == "docker.io")
                .then(|| {
                    creds
                        .get("index.docker.io")
                        .or_else(|| creds.get("registry-1.docker.io"))
                })
                .flatten()
        });
        match found {
            None => RegistryAuth::Anonymous,
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(Credentials::Bearer { token }) => RegistryAuth::Bearer(token.clone()),
        }
    }

    async fn pull_from_registry(
        &self,
        image: &ImageRef,
        progress: &Progress,
    ) -> Result<PullOutcome, ImageError> {
        let auth = self.auth_for(image);
        let (top, _) = self
            .client
            .pull_manifest_raw(&image.to_oci(), &auth, media_types::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| registry_error(image, e))?;
        let max = self.store.limits().max_document_bytes;
        if top.len() as u64 > max {
            return Err(ImageError::TooLarge {
                what: format!("manifest of {image}"),
                limit: max,
            });
        }
        let source = RegistrySource {
            client: &self.client,
            image,
            auth,
        };
        let stats = Stats::default();
        let record = self
            .materialize(&source, image, top.to_vec(), progress, &stats)
            .await?;
        Ok(PullOutcome {
            record,
            stats: stats.snapshot(),
            coalesced: false,
            from_cache: false,
        })
    }

    fn select_platform<'a>(
        &self,
        manifests: &'a [Descriptor],
    ) -> Result<&'a Descriptor, ImageError> {
        let want = &self.options.platform;
        let mut best: Option<(u8, &Descriptor)> = None;
        for m in manifests {
            if !(m.media_type.is_empty() || is_manifest(&m.media_type)) {
                continue;
            }
            let Some(score) = m.platform.as_ref().and_then(|p| want.score(p)) else {
                continue;
            };
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, m));
            }
        }
        best.map(|(_, m)| m)
            .ok_or_else(|| ImageError::NoMatchingPlatform {
                wanted: want.to_string(),
                available: manifests
                    .iter()
                    .map(|m| {
                        m.platform
                            .as_ref()
                            .map_or("(none)".to_string(), Platform::to_string)
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn digest_lock(&self, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.digest_locks)
            .entry(digest.clone())
            .or_default()
            .clone()
    }

    fn release_digest_locks(&self) {
        lock(&self.digest_locks).retain(|_, l| Arc::strong_count(l) > 1);
    }

    /// Makes sure blob `desc` is in the store, downloading it from `source` if not.
    async fn ensure_blob(
        &self,
        source: &dyn Source,
        desc: &Descriptor,
        what: &str,
        limit: u64,
        progress: &Progress,
        stats: &Stats,
    ) -> Result<(), ImageError> {
        let result = async {
            let lock = self.digest_lock(&desc.digest);
            let _guard = lock.lock().await;
            if self.store.has_blob(&desc.digest) {
                stats.cached.fetch_add(1, Ordering::Relaxed);
                progress.emit(&PullEvent::Cached {
                    digest: desc.digest.clone(),
                    total: desc.size,
                });
                return Ok(());
            }
            if desc.size > limit {
                return Err(ImageError::TooLarge {
                    what: what.to_string(),
                    limit,
                });
            }
            let (p, digest, total) = (progress.clone(), desc.digest.clone(), desc.size);
            let report = Box::new(move |done| {
                p.emit(&PullEvent::Downloading {
                    digest: digest.clone(),
                    done,
                    total,
                })
            });
            let mut writer = self
                .store
                .blob_writer(&desc.digest, desc.size, Some(report))
                .await?;
            if let Err(e) = source.blob(desc, &mut writer).await {
                if writer.overflowed() {
                    writer.check_size(what)?;
                }
                return Err(e);
            }
            writer.commit(what).await?;
            stats.downloaded.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(desc.size, Ordering::Relaxed);
            progress.emit(&PullEvent::Downloaded {
                digest: desc.digest.clone(),
                total: desc.size,
            });
            Ok(())
        }
        .await;
        self.release_digest_locks();
        result
    }

    /// Extracts a stored layer blob once.
    /// Extracts a stored layer blob once, charging its bytes to `image` (the pull's cap) whether it
    /// is extracted now or was already in the store.
    async fn unpack(
        &self,
        digest: &Digest,
        image: &ByteBudget,
        progress: &Progress,
        stats: &Stats,
    ) -> Result<LayerInfo, ImageError> {
        let result = async {
            let lock = self.digest_lock(digest);
            let _guard = lock.lock().await;
            let store = self.store.clone();
            let d = digest.clone();
            if store.has_layer(digest) {
                let info = blocking(move || store.layer_info(&d)).await?;
                if !image.try_charge(info.unpacked_bytes) {
                    return Err(ImageError::Layer {
                        layer: digest.to_string(),
                        source: image.exceeded("(already extracted)"),
                    });
                }
                return Ok(info);
            }
            progress.emit(&PullEvent::Extracting {
                digest: digest.clone(),
            });
            let budget = image.clone();
            let info = blocking(move || store.unpack_layer_within(&d, Some(&budget))).await?;
            stats.extracted.fetch_add(1, Ordering::Relaxed);
            progress.emit(&PullEvent::Extracted {
                digest: digest.clone(),
                unpacked_bytes: info.unpacked_bytes,
            });
            Ok(info)
        }
        .await;
        self.release_digest_locks();
        result
    }

    /// From a top-level manifest or index (already fetched, not yet verified) to a stored image:
    /// platform resolution, verification of every document and blob, extraction, the record.
    pub(crate) async fn materialize(
        &self,
        source: &dyn Source,
        image: &ImageRef,
        top: Vec<u8>,
        progress: &Progress,
        stats: &Stats,
    ) -> Result<ImageRecord, ImageError> {
        let store = &self.store;
        let limits = store.limits().clone();
        let top_digest = Digest::of(&top);
        if let Some(want) = image.digest()
            && want != &top_digest
        {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {image}"),
                expected: want.to_string(),
                actual: top_digest.to_string(),
            });
        }
        // Everything this pull writes stays pinned until its record is visible.
        let mut lease = store.pin([top_digest.clone()]);

        let (manifest_bytes, manifest_digest, index_digest, index_platform) =
            match parse_document(&top, "manifest")? {
                Document::Index { manifests, .. } => {
                    let chosen = self.select_platform(&manifests)?.clone();
                    if chosen.size > limits.max_document_bytes {
                        return Err(ImageError::TooLarge {
                            what: format!("manifest {}", chosen.digest),
                            limit: limits.max_document_bytes,
                        });
                    }
                    let child = source
                        .manifest(&chosen.digest, limits.max_document_bytes)
                        .await?;
                    let actual = Digest::of(&child);
                    if actual != chosen.digest {
                        return Err(ImageError::DigestMismatch {
                            what: format!(
                                "manifest for {} of {image}",
                                chosen
                                    .platform
                                    .as_ref()
                                    .map_or(String::new(), Platform::to_string)
                            ),
                            expected: chosen.digest.to_string(),
                            actual: actual.to_string(),
                        });
                    }
                    if child.len() as u64 != chosen.size {
                        return Err(ImageError::SizeMismatch {
                            what: format!("manifest {}", chosen.digest),
                            expected: chosen.size,
                            actual: child.len() as u64,
                        });
                    }
                    let (s, t, d) = (store.clone(), top.clone(), top_digest.clone());
                    blocking(move || s.put_blob_verified(&t, &d, "image index")).await?;
                    (child, chosen.digest, Some(top_digest), chosen.platform)
                }
                Document::Manifest(_) => (top, top_digest, None, None),
            };
        lease.add(&manifest_digest);
        let manifest = match parse_document(&manifest_bytes, "manifest")? {
            Document::Manifest(m) => m,
            Document::Index { .. } => {
                return Err(ImageError::Unsupported {
                    what: "image index",
                    value: "an index inside an index".to_string(),
                });
            }
        };

        // Caps before anything is downloaded.
        if manifest.layers.len() > limits.max_layers {
            return Err(ImageError::TooLarge {
                what: format!("{image}: {} layers", manifest.layers.len()),
                limit: limits.max_layers as u64,
            });
        }
        let total: u64 = manifest
            .layers
            .iter()
            .fold(manifest.config.size, |acc, l| acc.saturating_add(l.size));
        if total > limits.max_image_bytes {
            return Err(ImageError::TooLarge {
                what: format!("{image} ({total} bytes of blobs)"),
                limit: limits.max_image_bytes,
            });
        }
        let formats = classify_layers(&manifest.layers)?;
        let wasm =
            is_wasm_config(&manifest.config.media_type) || formats.contains(&LayerFormat::Wasm);
        if wasm && formats != [LayerFormat::Wasm] {
            return Err(ImageError::Unsupported {
                what: "Wasm artifact",
                value: format!(
                    "{} layers with media types [{}]: exactly one Wasm layer is expected",
                    manifest.layers.len(),
                    manifest
                        .layers
                        .iter()
                        .map(|l| l.media_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        {
            let (s, b, d) = (
                store.clone(),
                manifest_bytes.clone(),
                manifest_digest.clone(),
            );
            blocking(move || s.put_blob_verified(&b, &d, "manifest")).await?;
        }
        progress.emit(&PullEvent::Resolved {
            reference: image.to_string(),
            manifest_digest: manifest_digest.clone(),
            platform: index_platform.clone(),
            layers: manifest
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size))
                .collect(),
        });

        // Config.
        lease.add(&manifest.config.digest);
        self.ensure_blob(
            source,
            &manifest.config,
            &format!("config {}", manifest.config.digest),
            limits.max_document_bytes,
            progress,
            stats,
        )
        .await?;
        let config_bytes = {
            let (s, d, max) = (
                store.clone(),
                manifest.config.digest.clone(),
                limits.max_document_bytes,
            );
            blocking(move || s.read_blob(&d, max)).await?
        };
        let (config, platform, diff_ids) = if wasm {
            (ImageConfig::default(), None, Vec::new())
        } else {
            let raw = parse_config(&config_bytes)?;
            let config_platform = match (&raw.os, &raw.architecture) {
                (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => {
                    Some(Platform::new(os, arch, raw.variant.as_deref()))
                }
                _ => None,
            };
            if let Some(p) = &config_platform
                && !self.options.platform.accepts(p)
            {
                return Err(ImageError::PlatformMismatch {
                    image: p.to_string(),
                    host: self.options.platform.to_string(),
                });
            }
            if let Some(kind) = raw.rootfs.as_ref().and_then(|r| r.kind.as_deref())
                && kind != "layers"
            {
                return Err(ImageError::Unsupported {
                    what: "rootfs type",
                    value: kind.to_string(),
                });
            }
            let diff_ids = match raw.rootfs.as_ref().and_then(|r| r.diff_ids.as_ref()) {
                Some(ids) => {
                    if ids.len() != manifest.layers.len() {
                        return Err(ImageError::Malformed {
                            what: format!("config of {image}"),
                            reason: format!(
                                "{} diff_ids for {} layers",
                                ids.len(),
                                manifest.layers.len()
                            ),
                        });
                    }
                    ids.iter()
                        .map(|s| Digest::parse(s))
                        .collect::<Result<Vec<_>, _>>()?
                }
                None => Vec::new(),
            };
            (
                image_config(&raw),
                index_platform.or(config_platform),
                diff_ids,
            )
        };

        // Layers: fetched and extracted concurrently, recorded in manifest order.
        for l in &manifest.layers {
            lease.add(&l.digest);
        }
        let concurrency = self.options.max_concurrent_downloads.max(1);
        let diff_ids = &diff_ids;
        let image_budget = &ByteBudget::new(
            limits.max_image_unpacked_bytes,
            "the extracted layers of this image together (a per-image cap: raise \
             `StoreLimits.max_image_unpacked_bytes`)",
        );
        // When one layer fails, or the pull is dropped (a timeout), the others stop: downloads
        // at once, extractions at their next write (they run on blocking threads, which a
        // dropped future would not stop). On failure the pull also waits for them to have
        // cleaned up, so it never returns with its temp files still in the store.
        let _abort_on_drop = AbortOnDrop(image_budget);
        let (abort_tx, abort_rx) = tokio::sync::watch::channel(false);
        let abandoned = || ImageError::Internal("abandoned: another layer failed".to_string());
        let abort_rx = &abort_rx;
        let mut layers = futures::stream::iter(manifest.layers.clone().into_iter().enumerate())
            .map(|(i, desc)| async move {
                let desc = &desc;
                if image_budget.is_aborted() {
                    return Err(abandoned());
                }
                let mut aborted = abort_rx.clone();
                let what = format!("layer {}", desc.digest);
                tokio::select! {
                    r = self.ensure_blob(
                        source,
                        desc,
                        &what,
                        limits.max_blob_bytes,
                        progress,
                        stats,
                    ) => r?,
                    _ = aborted.wait_for(|a| *a) => return Err(abandoned()),
                }
                if wasm {
                    return Ok((i, None));
                }
                let info = self
                    .unpack(&desc.digest, image_budget, progress, stats)
                    .await?;
                if let Some(expected) = diff_ids.get(i)
                    && expected != &info.diff_id
                {
                    return Err(ImageError::DigestMismatch {
                        what: format!("uncompressed layer {} (diff_id)", desc.digest),
                        expected: expected.to_string(),
                        actual: info.diff_id.to_string(),
                    });
                }
                Ok((i, Some(info)))
            })
            .buffer_unordered(concurrency);
        let mut done: Vec<(usize, Option<LayerInfo>)> = Vec::new();
        let mut failed = None;
        while let Some(result) = layers.next().await {
            match result {
                Ok(layer) => done.push(layer),
                Err(e) => {
                    if failed.is_none() {
                        image_budget.abort();
                        let _ = abort_tx.send(true);
                        failed = Some(e);
                    }
                }
            }
        }
        drop(layers);
        if let Some(e) = failed {
            return Err(e);
        }
        done.sort_by_key(|(i, _)| *i);

        let unpacked: u64 = done
            .iter()
            .filter_map(|(_, info)| info.as_ref())
            .map(|info| info.unpacked_bytes)
            .sum();
        if unpacked > limits.max_image_unpacked_bytes {
            return Err(ImageError::TooLarge {
                what: format!(
                    "{image} ({unpacked} bytes extracted; a per-image cap: raise \
                     `StoreLimits.max_image_unpacked_bytes`)"
                ),
                limit: limits.max_image_unpacked_bytes,
            });
        }
        if wasm {
            let module = &manifest.layers[0].digest;
            let head = {
                let (s, d) = (store.clone(), module.clone());
                blocking(move || {
                    let path = s.blob_path(&d);
                    let mut head = [0u8; 4];
                    let n = std::io::Read::read(
                        &mut std::fs::File::open(&path)
                            .map_err(ImageError::io_at("open", &path))?,
                        &mut head,
                    )
                    .map_err(ImageError::io_at("read", &path))?;
                    Ok(head[..n].to_vec())
                })
                .await?
            };
            if head != b"\0asm" {
                return Err(ImageError::Malformed {
                    what: format!("Wasm layer {module}"),
                    reason: "not a WebAssembly binary (no \\0asm header)".to_string(),
                });
            }
        }

        let record = ImageRecord {
            reference: image.to_string(),
            kind: if wasm {
                ImageKind::Wasm
            } else {
                ImageKind::Container
            },
            manifest_digest,
            manifest_media_type: manifest.media_type.clone(),
            index_digest,
            platform,
            config_digest: manifest.config.digest.clone(),
            config_media_type: manifest.config.media_type.clone(),
            config,
            layers: manifest
                .layers
                .iter()
                .zip(&done)
                .map(|(l, (_, info))| LayerRef {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: info.as_ref().map(|i| i.diff_id.clone()),
                })
                .collect(),
            size: total,
            unpacked_size: unpacked,
            stored_at: super::store::now_unix(),
        };
        {
            let (s, r) = (store.clone(), record.clone());
            blocking(move || s.put_record(&r)).await?;
        }
        drop(lease);
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_printed() {
        let mut options = RegistryOptions::default();
        options.credentials.insert(
            "r.example".into(),
            Credentials::Basic {
                username: "alice".into(),
                password: "hunter2".into(),
            },
        );
        options.credentials.insert(
            "s.example".into(),
            Credentials::Bearer {
                token: "tok-secret".into(),
            },
        );
        let shown = format!("{options:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("tok-secret"));
    }

    #[tokio::test]
    async fn selects_the_host_platform_from_an_index() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(ImageStore::open(tmp.path(), Default::default()).unwrap());
        let options = RegistryOptions {
            platform: Platform::new("linux", "amd64", None),
            ..Default::default()
        };
        let svc = ImageService::new(store, options).unwrap();
        let d = |b: &[u8]| Digest::of(b);
        let entry = |digest: Digest, p: Option<Platform>, mt: &str| Descriptor {
            media_type: mt.to_string(),
            digest,
            size: 1,
            platform: p,
            annotations: Default::default(),
        };
        let m = media_types::OCI_MANIFEST;
        let manifests = vec![
            entry(
                d(b"arm"),
                Some(Platform::new("linux", "arm64", Some("v8"))),
                m,
            ),
            entry(
                d(b"att"),
                Some(Platform::new("unknown", "unknown", None)),
                m,
            ),
            entry(d(b"amd"), Some(Platform::new("linux", "amd64", None)), m),
            entry(
                d(b"amd-v3"),
                Some(Platform::new("linux", "amd64", Some("v3"))),
                m,
            ),
        ];
        let chosen = svc.inner.select_platform(&manifests).unwrap();
        assert_eq!(chosen.digest, d(b"amd"));
        let err = svc.inner.select_platform(&manifests[..2]).unwrap_err();
        assert!(err.to_string().contains("linux/arm64/v8"), "{err}");
    }

    #[test]
    fn auth_lookup_by_registry() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(ImageStore::open(tmp.path(), Default::default()).unwrap());
        let mut options = RegistryOptions::default();
        options.credentials.insert(
            "index.docker.io".into(),
            Credentials::Bearer { token: "t".into() },
        );
        options.credentials.insert(
            "127.0.0.1:5000".into(),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into(),
            },
        );
        let svc = ImageService::new(store, options).unwrap();
        let auth = |r: &str| svc.inner.auth_for(&ImageRef::parse(r).unwrap());
        assert_eq!(auth("busybox"), RegistryAuth::Bearer("t".into()));
        assert_eq!(
            auth("127.0.0.1:5000/x"),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        assert_eq!(auth("ghcr.io/a/b"), RegistryAuth::Anonymous);
    }
}
