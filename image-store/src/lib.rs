//! OCI images: references, a content-addressed store, registry pulls, OCI-layout import and safe
//! layer extraction.
//!
//! The pieces, bottom up:
//! - [`ImageRef`] — Docker-style reference normalisation (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! - [`Digest`] — a validated `sha256:<hex>`; the only thing ever used to name a file in the store.
//! - [`extract_layer`] — turns one layer (tar, gzip or zstd) into a directory that overlayfs can use
//!   as a lower dir, refusing anything that could write outside it (the security core, see below).
//! - [`ImageStore`] — the on-disk, content-addressed store shared by every job on a host: blobs,
//!   extracted layers, image records, leases and garbage collection. Its root is an argument.
//! - [`ImageService`] — pulls through `oci-client` (platform resolution, auth, insecure registries,
//!   digest verification, coalescing of concurrent pulls, progress) and imports OCI image layouts.
//!
//! # Store layout
//!
//! ```text
//! <root>/blobs/sha256/<hex>          verified blobs: indexes, manifests, configs, layers, Wasm modules
//! <root>/layers/<hex>/rootfs/        an extracted layer (hex = the layer blob's digest): overlay lower dir
//! <root>/layers/<hex>/layer.json     what extraction found: diff_id, whiteouts, opaque dirs, skipped entries
//! <root>/images/<sha256(ref)>.json   one record per normalised reference
//! <root>/tmp/                        work in progress (<pid>.<start time>.<n>.<what>, see store); renamed into place when complete
//! ```
//! Every write is a temp file or directory renamed into place, so a reader (or a crash) never sees
//! half a blob, half a layer or half a record.
//!
//! # Security decisions (layer extraction)
//!
//! Images are hostile. [`extract_layer`] never joins an entry path onto a host path: the layer root
//! is opened once as a directory fd and every parent component is opened relative to its parent with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` (or
//! `openat(O_NOFOLLOW | O_DIRECTORY)` where `openat2` is unavailable) and every leaf is created with
//! `*at` calls that do not follow symlinks (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mknodat`, `symlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`). So:
//! - **Paths**: absolute entry paths and any `..` component are refused (not stripped); so are
//!   paths longer than 4096 bytes or deeper than 256 components.
//! - **Symlinks**: stored as symlinks with their exact target, never followed by the store,
//!   whatever they point at. That includes absolute targets (Alpine's `/bin/sh -> /bin/busybox`,
//!   distroless's `/var/run -> /run`) and relative targets that climb above the layer root
//!   (Debian's `usr/share/doc/x/changelog.gz -> ../../../../../../../var/…`): Docker and containerd
//!   keep both, and refusing them made real images fail. It is safe because a symlink is only data
//!   until something resolves it, and nothing resolves these on the host: extraction works through
//!   directory fds and never follows a link (see above), and the runtime resolves paths only
//!   inside the container's root — after `pivot_root`, or with `openat2(RESOLVE_IN_ROOT)` before
//!   it — where `..` at `/` stays at `/`, exactly as for an absolute target. What stays refused:
//!   any entry that would be written *through* a symlink (e.g. `evil -> /etc` then `evil/passwd`,
//!   or `a/up -> ../../..` then `a/up/x`), whatever the symlink's target; hardlinks out of the
//!   layer, `..` entry names and devices (below).
//! - **Reserved paths**: `proc`, `sys` and `dev` at the layer root must be directories if present
//!   (the runtime mounts over them; a symlink there is how runc CVE-2019-16884/2019-19921 started).
//! - **Hardlinks**: the target must be a relative, `..`-free path to a *regular file already
//!   extracted in this layer*, reached without symlinks; anything else is refused (so a hardlink can
//!   never pin a host file such as `/etc/passwd`).
//! - **Devices**: character and block devices are refused (a device node in a lower dir would give
//!   the job raw hardware access if the runtime ever failed to mount `nodev`); fifos are skipped and
//!   listed in the layer record.
//! - **Modes and owners** are preserved (numeric uid/gid, as root); setuid/setgid bits are kept as
//!   data — the runtime runs jobs with `no_new_privs`, which makes them inert.
//! - **xattrs** from the archive: only `user.*` and `security.capability` are applied; `trusted.*`
//!   (which would let an image forge overlayfs metadata such as `trusted.overlay.redirect`) and every
//!   other namespace are dropped and counted.
//! - **Size caps**: bytes written, entry count, bytes of the uncompressed stream and of each entry's
//!   extension headers are all capped per layer (`StoreLimits::extract`), so decompression bombs
//!   stop at the cap. File bytes are also charged, as they are written, to two shared caps: the
//!   pull's (`StoreLimits::max_image_unpacked_bytes`: every layer of the image, those already in
//!   the store included) and the store's (`StoreLimits::max_store_unpacked_bytes`: every extracted
//!   layer in the store; `gc` gives removed layers' bytes back, and [`ImageStore::open`] counts
//!   what is there). So a 4 MiB layer that expands to 4 GiB stops at the smallest cap, whichever
//!   it is; the error names that cap and the option that raises it, and nothing is left in
//!   `tmp/` or `layers/`. When one layer of a pull fails (or the pull is dropped, e.g. on a
//!   timeout) the pull's other extractions stop at their next write and its downloads at once,
//!   and a failed pull returns only after they have cleaned up.
//! - **Whiteouts**: `.wh.<name>` becomes an overlayfs whiteout (a 0/0 character device made with
//!   `mknodat` by the store itself — the only device node ever created) and `.wh..wh..opq` sets
//!   `trusted.overlay.opaque=y` on its directory; both are also listed in `layer.json` so a backend
//!   can compute the merged view without mounting.
//! - **Atomicity**: a layer is extracted into `tmp/` and renamed into `layers/` only when complete;
//!   a refused layer leaves nothing behind.

mod digest;
mod extract;
mod fsx;
mod layout;
mod media;
mod oci;
mod pull;
mod reference;
mod store;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use digest::Digest;
pub use extract::{ExtractError, ExtractOptions, ExtractSummary, SkippedEntry, extract_layer};
pub use media::{Compression, LayerFormat, Platform, layer_format, media_types};
pub use pull::{
    Credentials, ImageService, ProgressFn, PullEvent, PullOutcome, PullPolicy, PullStats,
    RegistryOptions,
};
pub use reference::ImageRef;
pub use store::{
    GcReport, ImageConfig, ImageKind, ImageRecord, ImageStore, LayerInfo, LayerRef, Lease,
    StoreLimits,
};

/// Installs rustls' `ring` crypto provider as the process default, once (later calls do nothing).
///
/// `oci-client` is built with `rustls-tls-no-provider`, and Cargo unifies that feature into every
/// `reqwest` of the workspace: a process must install a provider before it builds any
/// `reqwest::Client`, or reqwest panics. [`ImageService::new`] calls this.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Everything that can go wrong with images. Cheap to clone (pull results are shared between
/// coalesced callers); the `Display` text is complete enough to be a job's `image_error` detail.
/// Credentials never appear in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid digest `{0}`: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    #[error("image `{0}` is not in the store")]
    NotFound(String),
    #[error("registry `{registry}` is not in the list of allowed registries")]
    RegistryNotAllowed { registry: String },
    #[error("registry error for `{reference}`: {message}")]
    Registry { reference: String, message: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("unsupported {what}: {value}")]
    Unsupported { what: &'static str, value: String },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("no manifest for {wanted} in the image index (it has: {available})")]
    NoMatchingPlatform { wanted: String, available: String },
    #[error("image is built for {image}, this host runs {host}")]
    PlatformMismatch { image: String, host: String },
    #[error("layer {layer}: {source}")]
    Layer {
        layer: String,
        #[source]
        source: ExtractError,
    },
    #[error("import from `{path}`: {reason}")]
    Import { path: PathBuf, reason: String },
    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// A closure for `map_err`.
    pub(crate) fn io_at<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> Self + 'a {
        move |e| Self::io(op, path, e)
    }

    /// True when the image itself is at fault (malicious or malformed content, wrong platform),
    /// as opposed to the network, the registry or the host.
    pub fn is_content_error(&self) -> bool {
        matches!(
            self,
            Self::DigestMismatch { .. }
                | Self::SizeMismatch { .. }
                | Self::TooLarge { .. }
                | Self::Unsupported { .. }
                | Self::Malformed { .. }
                | Self::NoMatchingPlatform { .. }
                | Self::PlatformMismatch { .. }
                | Self::Layer { .. }
        )
    }
}

/// Renders bytes from an image (an entry name, a link target) for an error message: lossy UTF-8,
/// control characters escaped (an image must not be able to inject terminal escapes into logs),
/// truncated to a readable length.
pub fn display_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 300;
    let lossy = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(lossy.len().min(MAX + 8));
    for (i, c) in lossy.chars().enumerate() {
        if i >= MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
