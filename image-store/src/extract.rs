//! Safe extraction of one image layer into a directory (the security core; the rules are in the
//! module docs of [`crate`]).
//!
//! Nothing here ever turns an entry path into a host path: the layer root is a directory fd and
//! every operation is relative to a directory fd obtained by walking the entry's components one at
//! a time without following symlinks (see [`super::fsx`]).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fchmod, futimens, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::fsx::{self, file_type, is_dir, is_plain_name, lstat_at, open_child_dir, remove_at};
use super::{Digest, display_bytes};

const PATH_MAX: usize = 4096;
const MAX_DEPTH: usize = 256;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &std::ffi::CStr = c"trusted.overlay.opaque";
/// Skipped entries listed individually in the summary (the rest are only counted).
const SKIPPED_LISTED: usize = 100;
/// Memory for what extraction remembers about a layer (whiteout and opaque paths, directories
/// whose times are set last): a layer of a million deep paths must not exhaust the worker.
const MAX_RECORDED_BYTES: usize = 64 << 20;

/// Limits and policy for [`extract_layer`]. The defaults are the safe ones.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// File bytes written (regular file contents), in total. Default 8 GiB.
    pub max_bytes: u64,
    /// Entries in the archive. Default 500,000.
    pub max_entries: u64,
    /// Extension data (PAX records, GNU long names) read for one entry. Default 1 MiB.
    pub max_metadata_bytes: u64,
    /// Top-level names that must be directories if present, because the runtime mounts over
    /// them. Default `proc`, `sys`, `dev`.
    pub reserved_dirs: Vec<String>,
    /// Apply the archive's numeric uid/gid (needs root). Default: true when running as root.
    pub preserve_ownership: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 30,
            max_entries: 500_000,
            max_metadata_bytes: 1 << 20,
            reserved_dirs: ["proc", "sys", "dev"].map(String::from).to_vec(),
            preserve_ownership: nix::unistd::geteuid().is_root(),
        }
    }
}

/// A cap on extracted file bytes shared by several extractions — every layer of one pull, or
/// every layer of one store — charged as the bytes are written, so a decompression bomb stops at
/// the cap instead of after it has filled the disk. Cheap to clone (clones share the count).
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    used: Arc<AtomicU64>,
    /// Set when whatever the budget is for was abandoned: extractions charging it stop.
    aborted: Arc<AtomicBool>,
    cap: u64,
    /// What is capped and how to raise it, for the error message.
    what: &'static str,
}

impl ByteBudget {
    pub(crate) fn new(cap: u64, what: &'static str) -> Self {
        Self {
            used: Arc::new(AtomicU64::new(0)),
            aborted: Arc::default(),
            cap,
            what,
        }
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Adds `n` bytes unless that would pass the cap.
    pub(crate) fn try_charge(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|t| *t <= self.cap)
            })
            .is_ok()
    }

    /// Makes every extraction charging this budget fail at its next entry or write.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    /// Adds `n` bytes whatever the cap (bytes already on disk).
    pub(crate) fn add(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_add(n))
            });
    }

    /// Gives back `n` bytes charged earlier.
    pub(crate) fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// The error for an entry that did not fit.
    pub(crate) fn exceeded(&self, entry: &str) -> ExtractError {
        ExtractError::TooLarge {
            entry: entry.to_string(),
            what: self.what,
            limit: self.cap,
        }
    }
}

/// Why a layer was not extracted. `entry` is the archive path as stored (escaped for display).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExtractError {
    #[error("entry `{entry}` refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("entry `{entry}`: {what} exceeds the limit of {limit}")]
    TooLarge {
        entry: String,
        what: &'static str,
        limit: u64,
    },
    #[error("entry `{entry}`: {op} failed: {source}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("malformed tar stream (after {entries} entries): {reason}")]
    Malformed { entries: u64, reason: String },
}

impl ExtractError {
    /// The entry the error is about, if any.
    pub fn entry(&self) -> Option<&str> {
        match self {
            Self::Refused { entry, .. } | Self::TooLarge { entry, .. } | Self::Io { entry, .. } => {
                Some(entry)
            }
            Self::Malformed { .. } => None,
        }
    }

    /// True if the layer broke a rule or a cap (as opposed to a host I/O failure).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Io { .. })
    }
}

/// An entry that was deliberately not extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    pub path: String,
    pub reason: String,
}

/// What [`extract_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractSummary {
    /// sha256 of the uncompressed tar stream (the OCI `diff_id`).
    pub diff_id: Digest,
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Paths (relative, `/`-separated) turned into overlay whiteouts (0/0 character devices).
    pub whiteouts: Vec<String>,
    /// Directories marked opaque (`trusted.overlay.opaque=y`); `""` is the layer root.
    pub opaque_dirs: Vec<String>,
    /// Entries not extracted (fifos, aufs metadata), the first 100 of them.
    pub skipped: Vec<SkippedEntry>,
    pub skipped_total: u64,
    /// Archive xattrs not applied (anything but `user.*` and `security.capability`).
    pub xattrs_dropped: u64,
}

/// Extracts one layer blob (a tar stream, gzip- or zstd-compressed or not — detected from its
/// magic bytes) into `rootfs`, which must be a new, empty directory on the same filesystem as its
/// final home. On error `rootfs` holds a partial tree: the caller deletes it (the store extracts
/// into a temporary directory and renames it only on success).
pub fn extract_layer<'a>(
    blob: impl Read + 'a,
    rootfs: &Path,
    options: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    extract_layer_budgeted(blob, rootfs, options, &[])
}

/// [`extract_layer`], also charging every file byte written to each of `budgets` (the pull's and
/// the store's caps). On success the bytes stay charged (they are in the store now); on error they
/// are given back.
pub(crate) fn extract_layer_budgeted<'a>(
    blob: impl Read + 'a,
    rootfs: &Path,
    options: &ExtractOptions,
    budgets: &[&ByteBudget],
) -> Result<ExtractSummary, ExtractError> {
    let mut charged = 0;
    let result = extract(blob, rootfs, options, budgets, &mut charged);
    if result.is_err() {
        for b in budgets {
            b.release(charged);
        }
    }
    result
}

fn extract<'a>(
    blob: impl Read + 'a,
    rootfs: &Path,
    options: &ExtractOptions,
    budgets: &[&ByteBudget],
    charged: &mut u64,
) -> Result<ExtractSummary, ExtractError> {
    let root = fsx::open_dir_path(rootfs).map_err(|e| io_error("(layer root)", "open", e))?;
    fchmod(root.as_fd(), Mode::from_bits_truncate(0o755))
        .map_err(|e| errno_error("(layer root)", "chmod", e))?;

    let mut input = BufReader::with_capacity(64 * 1024, blob);
    let head = input
        .fill_buf()
        .map_err(|e| ExtractError::Malformed {
            entries: 0,
            reason: format!("reading the layer: {e}"),
        })?
        .to_vec();
    let decoded: Box<dyn Read + 'a> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(input).map_err(|e| {
                ExtractError::Malformed {
                    entries: 0,
                    reason: format!("zstd: {e}"),
                }
            })?,
        )
    } else {
        Box::new(input)
    };

    let meter = Rc::new(Meter {
        read: Cell::new(0),
        stream_cap: options
            .max_bytes
            .saturating_add(options.max_entries.saturating_mul(2048))
            .saturating_add(options.max_metadata_bytes),
        window_start: Cell::new(None),
        window_cap: options.max_metadata_bytes.saturating_add(8192),
        exceeded: Cell::new(None),
    });
    let reader = MeteredReader {
        inner: decoded,
        meter: meter.clone(),
        hasher: Sha256::new(),
    };

    let mut x = Extractor {
        root,
        opts: options,
        meter,
        bytes: 0,
        entries: 0,
        last_entry: String::new(),
        whiteouts: BTreeSet::new(),
        opaque: BTreeSet::new(),
        skipped: Vec::new(),
        skipped_total: 0,
        xattrs_dropped: 0,
        dir_times: Vec::new(),
        recorded: 0,
        buf: vec![0; 64 * 1024],
        budgets,
        charged,
    };

    let mut archive = tar::Archive::new(reader);
    {
        let mut entries = archive.entries().map_err(|e| x.stream_error(e))?;
        loop {
            x.meter.window_start.set(Some(x.meter.read.get()));
            let next = entries.next();
            x.meter.window_start.set(None);
            let entry = match next {
                None => break,
                Some(Ok(entry)) => entry,
                Some(Err(e)) => return Err(x.stream_error(e)),
            };
            x.entries += 1;
            if x.entries > options.max_entries {
                return Err(ExtractError::TooLarge {
                    entry: display_bytes(&entry.path_bytes()),
                    what: "the number of entries (a per-layer cap: raise `StoreLimits.extract.max_entries`)",
                    limit: options.max_entries,
                });
            }
            x.check_aborted(&display_bytes(&entry.path_bytes()))?;
            x.entry(entry)?;
        }
    }
    // The rest of the stream (end-of-archive blocks, padding) is part of the diff_id.
    let mut reader = archive.into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(|e| x.stream_error(e))?;
    let diff_id = Digest::from_hasher(reader.hasher);
    x.finish_dir_times();

    let lossy = |p: &Vec<u8>| String::from_utf8_lossy(p).into_owned();
    Ok(ExtractSummary {
        diff_id,
        entries: x.entries,
        bytes: x.bytes,
        whiteouts: x.whiteouts.iter().map(lossy).collect(),
        opaque_dirs: x.opaque.iter().map(lossy).collect(),
        skipped: x.skipped,
        skipped_total: x.skipped_total,
        xattrs_dropped: x.xattrs_dropped,
    })
}

/// Shared between the reader (inside the tar archive) and the extractor.
struct Meter {
    read: Cell<u64>,
    stream_cap: u64,
    /// Set while the tar crate reads headers and extension records of the next entry.
    window_start: Cell<Option<u64>>,
    window_cap: u64,
    exceeded: Cell<Option<(&'static str, u64)>>,
}

/// Counts and hashes the uncompressed stream and stops it at the caps.
struct MeteredReader<'a> {
    inner: Box<dyn Read + 'a>,
    meter: Rc<Meter>,
    hasher: Sha256,
}

impl Read for MeteredReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        let m = &self.meter;
        let total = m.read.get() + n as u64;
        m.read.set(total);
        if total > m.stream_cap {
            m.exceeded
                .set(Some((
                "the uncompressed layer stream (a per-layer cap: raise `StoreLimits.extract.max_bytes`)",
                m.stream_cap,
            )));
            return Err(io::Error::other("layer stream exceeds its size limit"));
        }
        if let Some(start) = m.window_start.get()
            && total - start > m.window_cap
        {
            m.exceeded.set(Some((
                "the entry's header and extension records (raise `StoreLimits.extract.max_metadata_bytes`)",
                m.window_cap,
            )));
            return Err(io::Error::other("entry metadata exceeds its size limit"));
        }
        Ok(n)
    }
}

struct Extractor<'o> {
    root: OwnedFd,
    opts: &'o ExtractOptions,
    /// Shared caps charged with every file byte written (all of them, or none).
    budgets: &'o [&'o ByteBudget],
    /// Bytes charged to each of `budgets` so far.
    charged: &'o mut u64,
    meter: Rc<Meter>,
    bytes: u64,
    entries: u64,
    last_entry: String,
    whiteouts: BTreeSet<Vec<u8>>,
    opaque: BTreeSet<Vec<u8>>,
    skipped: Vec<SkippedEntry>,
    skipped_total: u64,
    xattrs_dropped: u64,
    dir_times: Vec<(Vec<Vec<u8>>, u64)>,
    recorded: usize,
    buf: Vec<u8>,
}

/// Metadata applied to a created file or directory.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

fn io_error(entry: &str, op: &'static str, e: io::Error) -> ExtractError {
    ExtractError::Io {
        entry: entry.to_string(),
        op,
        source: Arc::new(e),
    }
}

fn errno_error(entry: &str, op: &'static str, e: Errno) -> ExtractError {
    io_error(entry, op, io::Error::from_raw_os_error(e as i32))
}

fn refused(entry: &str, reason: impl Into<String>) -> ExtractError {
    ExtractError::Refused {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

fn join(components: &[&[u8]]) -> Vec<u8> {
    components.join(&b'/')
}

/// Splits an archive path into components: `.` and empty components dropped; absolute paths, `..`,
/// NUL bytes, over-long and over-deep paths refused.
pub(crate) fn split_entry_path(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.len() > PATH_MAX {
        return Err("path longer than 4096 bytes");
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte");
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains `..`"),
            c => out.push(c),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err("path deeper than 256 components");
    }
    Ok(out)
}

/// What a whiteout file name means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// Not a whiteout.
    None,
    /// `.wh..wh..opq`: the directory is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Delete(&'a [u8]),
    /// `.wh..wh.<anything else>`: aufs bookkeeping, ignored.
    AufsMeta,
}

pub(crate) fn whiteout_kind(name: &[u8]) -> Whiteout<'_> {
    if name == OPAQUE_MARKER {
        return Whiteout::Opaque;
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Whiteout::None,
        Some(rest) if rest.starts_with(WHITEOUT_PREFIX) => Whiteout::AufsMeta,
        Some(rest) => Whiteout::Delete(rest),
    }
}

impl Extractor<'_> {
    fn stream_error(&self, e: io::Error) -> ExtractError {
        match self.meter.exceeded.get() {
            Some((what, limit)) => ExtractError::TooLarge {
                entry: if self.last_entry.is_empty() {
                    "(first entry)".to_string()
                } else {
                    format!("{} (or the entry after it)", self.last_entry)
                },
                what,
                limit,
            },
            None => ExtractError::Malformed {
                entries: self.entries,
                reason: e.to_string(),
            },
        }
    }

    /// Accounts for `bytes` more of remembered paths.
    fn record(&mut self, bytes: usize, name: &str) -> Result<(), ExtractError> {
        self.recorded += bytes + 32;
        if self.recorded > MAX_RECORDED_BYTES {
            return Err(ExtractError::TooLarge {
                entry: name.to_string(),
                what: "the memory for the layer's whiteout and directory records",
                limit: MAX_RECORDED_BYTES as u64,
            });
        }
        Ok(())
    }

    fn skip(&mut self, path: &str, reason: &str) {
        self.skipped_total += 1;
        if self.skipped.len() < SKIPPED_LISTED {
            self.skipped.push(SkippedEntry {
                path: path.to_string(),
                reason: reason.to_string(),
            });
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = display_bytes(&raw_path);
        self.last_entry = name.clone();
        let mut kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return self.drain(&mut entry);
        }
        let components = split_entry_path(&raw_path).map_err(|r| refused(&name, r))?;
        // Old tars mark directories as regular files with a trailing slash.
        if kind == EntryType::Regular && raw_path.ends_with(b"/") && entry.size() == 0 {
            kind = EntryType::Directory;
        }

        let Some((last, parents)) = components.split_last() else {
            // `./` — the layer root itself.
            if kind != EntryType::Directory {
                return Err(refused(&name, "the layer root must be a directory"));
            }
            let meta = self.meta(&mut entry, &name)?;
            let root = self
                .root
                .try_clone()
                .map_err(|e| io_error(&name, "dup", e))?;
            self.apply_meta(root.as_fd(), &meta, &name)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return self.drain(&mut entry);
        };
        if let Some(p) = parents.iter().find(|p| p.starts_with(WHITEOUT_PREFIX)) {
            return Err(refused(
                &name,
                format!("whiteout name `{}` used as a directory", display_bytes(p)),
            ));
        }

        match whiteout_kind(last) {
            Whiteout::None => {}
            Whiteout::AufsMeta => {
                self.skip(&name, "aufs metadata");
                return self.drain(&mut entry);
            }
            Whiteout::Opaque => {
                let dir = self.open_parent(parents, &name, true)?;
                fsx::set_xattr(dir.as_fd(), OVERLAY_OPAQUE_XATTR, b"y")
                    .map_err(|e| errno_error(&name, "set the opaque xattr", e))?;
                self.record(parents.len() + join(parents).len(), &name)?;
                self.opaque.insert(join(parents));
                return self.drain(&mut entry);
            }
            Whiteout::Delete(target) => {
                if !is_plain_name(target) {
                    return Err(refused(&name, "invalid whiteout target name"));
                }
                let dir = self.open_parent(parents, &name, true)?;
                let mut path: Vec<&[u8]> = parents.to_vec();
                path.push(target);
                self.whiteout(dir.as_fd(), target, &join(&path), &name)?;
                return self.drain(&mut entry);
            }
        }

        if parents.is_empty()
            && kind != EntryType::Directory
            && self
                .opts
                .reserved_dirs
                .iter()
                .any(|r| r.as_bytes() == *last)
        {
            return Err(refused(
                &name,
                format!(
                    "`{}` must be a directory (the runtime mounts over it), not a {}",
                    display_bytes(last),
                    kind_name(kind)
                ),
            ));
        }

        let path = join(&components);
        let leaf = OsStr::from_bytes(last);
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let meta = self.meta(&mut entry, &name)?;
                let dir = self.open_parent(parents, &name, true)?;
                self.clear_slot(dir.as_fd(), leaf, &path, false, &name)?;
                let fd = openat(
                    dir.as_fd(),
                    leaf,
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| errno_error(&name, "create", e))?;
                let mut file = File::from(fd);
                self.copy_data(&mut entry, &mut file, &name)?;
                self.apply_meta(file.as_fd(), &meta, &name)?;
            }
            EntryType::Directory => {
                let meta = self.meta(&mut entry, &name)?;
                let dir = self.open_parent(parents, &name, true)?;
                if self.clear_slot(dir.as_fd(), leaf, &path, true, &name)? {
                    mkdirat(dir.as_fd(), leaf, Mode::from_bits_truncate(0o700))
                        .map_err(|e| errno_error(&name, "mkdir", e))?;
                }
                let fd = open_child_dir(dir.as_fd(), leaf)
                    .map_err(|e| errno_error(&name, "open directory", e))?;
                self.apply_meta(fd.as_fd(), &meta, &name)?;
                self.record(path.len() + 16 * components.len(), &name)?;
                self.dir_times
                    .push((components.iter().map(|c| c.to_vec()).collect(), meta.mtime));
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.len() > PATH_MAX || target.contains(&0) {
                    return Err(refused(
                        &name,
                        "empty, over-long or NUL-containing symlink target",
                    ));
                }
                // The target is data: kept byte for byte whatever it points at, including
                // relative targets that climb above the layer root (`../../../../var/…`, common
                // in Debian packages). Nothing in the store resolves it, and the runtime resolves
                // links only inside the container's root, where `..` at `/` stays at `/`.
                let meta = self.meta(&mut entry, &name)?;
                let dir = self.open_parent(parents, &name, true)?;
                self.clear_slot(dir.as_fd(), leaf, &path, false, &name)?;
                symlinkat(OsStr::from_bytes(&target), dir.as_fd(), leaf)
                    .map_err(|e| errno_error(&name, "symlink", e))?;
                if self.opts.preserve_ownership {
                    fchownat(
                        dir.as_fd(),
                        leaf,
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| errno_error(&name, "chown symlink", e))?;
                }
                let t = TimeSpec::new(meta.mtime as i64, 0);
                utimensat(dir.as_fd(), leaf, &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(|e| errno_error(&name, "set symlink times", e))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hardlink(parents, leaf, &path, &target, &name)?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(refused(
                    &name,
                    "device nodes are not allowed in image layers",
                ));
            }
            EntryType::Fifo => self.skip(&name, "fifo"),
            other => {
                return Err(refused(
                    &name,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        self.drain(&mut entry)
    }

    /// Reads whatever the entry still holds (counted by the stream cap), so that the tar crate
    /// only ever reads headers while the metadata window is open.
    fn drain<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        io::copy(entry, &mut io::sink())
            .map(drop)
            .map_err(|e| self.stream_error(e))
    }

    fn meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<Meta, ExtractError> {
        let h = entry.header();
        let bad =
            |what: &str, e: io::Error| refused(name, format!("invalid {what} in header: {e}"));
        let mode = h.mode().map_err(|e| bad("mode", e))?;
        let uid = h.uid().map_err(|e| bad("uid", e))?;
        let gid = h.gid().map_err(|e| bad("gid", e))?;
        let mtime = h.mtime().map_err(|e| bad("mtime", e))?;
        let uid = u32::try_from(uid).map_err(|_| refused(name, "uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| refused(name, "gid out of range"))?;
        let mut xattrs = Vec::new();
        let mut dropped = 0;
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| refused(name, format!("invalid PAX records: {e}")))?
        {
            for ext in exts {
                let ext = ext.map_err(|e| refused(name, format!("invalid PAX record: {e}")))?;
                let Some(xname) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    if ext.key_bytes().starts_with(b"LIBARCHIVE.xattr.") {
                        dropped += 1;
                    }
                    continue;
                };
                let allowed = xname.starts_with(b"user.") || xname == b"security.capability";
                match CString::new(xname) {
                    Ok(c) if allowed => xattrs.push((c, ext.value_bytes().to_vec())),
                    _ => dropped += 1,
                }
            }
        }
        self.xattrs_dropped += dropped;
        Ok(Meta {
            uid,
            gid,
            mode: mode & 0o7777,
            mtime: mtime.min(i64::MAX as u64),
            xattrs,
        })
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown clears
    /// `security.capability`), then times.
    fn apply_meta(&self, fd: BorrowedFd<'_>, meta: &Meta, name: &str) -> Result<(), ExtractError> {
        if self.opts.preserve_ownership {
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| errno_error(name, "chown", e))?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| errno_error(name, "chmod", e))?;
        for (xname, value) in &meta.xattrs {
            fsx::set_xattr(fd, xname, value).map_err(|e| errno_error(name, "set xattr", e))?;
        }
        let t = TimeSpec::new(meta.mtime as i64, 0);
        futimens(fd, &t, &t).map_err(|e| errno_error(name, "set times", e))?;
        Ok(())
    }

    fn copy_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        name: &str,
    ) -> Result<(), ExtractError> {
        let too_large = || ExtractError::TooLarge {
            entry: name.to_string(),
            what: "the total size of the layer's files (a per-layer cap: raise `StoreLimits.extract.max_bytes`)",
            limit: self.opts.max_bytes,
        };
        if self.bytes.saturating_add(entry.size()) > self.opts.max_bytes {
            return Err(too_large());
        }
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_error(e)),
            };
            self.bytes += n as u64;
            if self.bytes > self.opts.max_bytes {
                return Err(too_large());
            }
            self.charge(n as u64, name)?;
            file.write_all(&self.buf[..n])
                .map_err(|e| io_error(name, "write", e))?;
        }
    }

    /// Charges `n` written bytes to every budget, or to none (and fails) if one is full.
    fn charge(&mut self, n: u64, name: &str) -> Result<(), ExtractError> {
        self.check_aborted(name)?;
        for (i, b) in self.budgets.iter().enumerate() {
            if !b.try_charge(n) {
                for earlier in &self.budgets[..i] {
                    earlier.release(n);
                }
                return Err(b.exceeded(name));
            }
        }
        *self.charged += n;
        Ok(())
    }

    fn check_aborted(&self, name: &str) -> Result<(), ExtractError> {
        if self.budgets.iter().any(|b| b.is_aborted()) {
            return Err(io_error(
                name,
                "extract",
                io::Error::other("abandoned: the pull failed or was cancelled"),
            ));
        }
        Ok(())
    }

    /// Opens (creating missing ones when `create`) the directories `parents` below the root, one
    /// component at a time, refusing symlinks and non-directories.
    fn open_parent(
        &mut self,
        parents: &[&[u8]],
        name: &str,
        create: bool,
    ) -> Result<OwnedFd, ExtractError> {
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| io_error(name, "dup", e))?;
        for (i, c) in parents.iter().enumerate() {
            let component = OsStr::from_bytes(c);
            let next = match open_child_dir(cur.as_fd(), component) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    mkdirat(cur.as_fd(), component, Mode::from_bits_truncate(0o700))
                        .map_err(|e| errno_error(name, "mkdir parent", e))?;
                    let fd = open_child_dir(cur.as_fd(), component)
                        .map_err(|e| errno_error(name, "open parent", e))?;
                    fchmod(fd.as_fd(), Mode::from_bits_truncate(0o755))
                        .map_err(|e| errno_error(name, "chmod parent", e))?;
                    fd
                }
                Err(Errno::ENOENT) => {
                    return Err(refused(
                        name,
                        format!(
                            "`{}` does not exist in this layer",
                            display_bytes(&join(&parents[..=i]))
                        ),
                    ));
                }
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => {
                    let prefix = display_bytes(&join(&parents[..=i]));
                    let is_link = matches!(
                        lstat_at(cur.as_fd(), component),
                        Ok(Some(st)) if file_type(&st) == SFlag::S_IFLNK
                    );
                    return Err(refused(
                        name,
                        if is_link {
                            format!("`{prefix}` is a symlink: nothing is written through a symlink")
                        } else {
                            format!("`{prefix}` is not a directory")
                        },
                    ));
                }
                Err(e) => return Err(errno_error(name, "open parent", e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Makes room for a new entry at `dir/leaf`. Returns true if the slot is empty afterwards, false
    /// if a directory was kept because the new entry is a directory too.
    fn clear_slot(
        &mut self,
        dir: BorrowedFd<'_>,
        leaf: &OsStr,
        path: &[u8],
        new_is_dir: bool,
        name: &str,
    ) -> Result<bool, ExtractError> {
        match lstat_at(dir, leaf).map_err(|e| errno_error(name, "lstat", e))? {
            None => Ok(true),
            Some(st) if is_dir(&st) && new_is_dir => Ok(false),
            Some(st) if is_dir(&st) => {
                remove_at(dir, leaf).map_err(|e| errno_error(name, "replace directory", e))?;
                self.forget_under(path);
                Ok(true)
            }
            Some(_) => {
                unlinkat(dir, leaf, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| errno_error(name, "replace", e))?;
                self.whiteouts.remove(path);
                Ok(true)
            }
        }
    }

    /// Drops whiteout/opaque records at or below `path` (its directory was replaced).
    fn forget_under(&mut self, path: &[u8]) {
        let below = |p: &Vec<u8>| {
            p.as_slice() == path || (p.starts_with(path) && p.get(path.len()) == Some(&b'/'))
        };
        self.whiteouts.retain(|p| !below(p));
        self.opaque.retain(|p| !below(p));
    }

    fn whiteout(
        &mut self,
        dir: BorrowedFd<'_>,
        target: &[u8],
        path: &[u8],
        name: &str,
    ) -> Result<(), ExtractError> {
        let leaf = OsStr::from_bytes(target);
        match lstat_at(dir, leaf).map_err(|e| errno_error(name, "lstat", e))? {
            None => {
                mknodat(dir, leaf, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| errno_error(name, "mknod whiteout", e))?;
                self.record(path.len(), name)?;
                self.whiteouts.insert(path.to_vec());
            }
            // This layer has a directory of that name: it replaces the lower one entirely.
            Some(st) if is_dir(&st) => {
                let fd = open_child_dir(dir, leaf)
                    .map_err(|e| errno_error(name, "open directory", e))?;
                fsx::set_xattr(fd.as_fd(), OVERLAY_OPAQUE_XATTR, b"y")
                    .map_err(|e| errno_error(name, "set the opaque xattr", e))?;
                self.record(path.len(), name)?;
                self.opaque.insert(path.to_vec());
            }
            // A file of this layer (or an earlier whiteout) already hides the lower entry.
            Some(_) => {}
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        parents: &[&[u8]],
        leaf: &OsStr,
        path: &[u8],
        target: &[u8],
        name: &str,
    ) -> Result<(), ExtractError> {
        let shown = display_bytes(target);
        let target_components = split_entry_path(target)
            .map_err(|r| refused(name, format!("hardlink target `{shown}`: {r}")))?;
        let Some((target_leaf, target_parents)) = target_components.split_last() else {
            return Err(refused(name, "hardlink to the layer root"));
        };
        if join(&target_components) == path {
            return Err(refused(name, "hardlink to itself"));
        }
        let target_dir = self
            .open_parent(target_parents, name, false)
            .map_err(|e| match e {
                ExtractError::Refused { entry, reason } => ExtractError::Refused {
                    entry,
                    reason: format!("hardlink target `{shown}`: {reason}"),
                },
                other => other,
            })?;
        let target_leaf = OsStr::from_bytes(target_leaf);
        match lstat_at(target_dir.as_fd(), target_leaf)
            .map_err(|e| errno_error(name, "lstat hardlink target", e))?
        {
            Some(st) if file_type(&st) == SFlag::S_IFREG => {}
            Some(_) => {
                return Err(refused(
                    name,
                    format!("hardlink target `{shown}` is not a regular file"),
                ));
            }
            None => {
                return Err(refused(
                    name,
                    format!("hardlink target `{shown}` was not extracted before the link"),
                ));
            }
        }
        let dir = self.open_parent(parents, name, true)?;
        self.clear_slot(dir.as_fd(), leaf, path, false, name)?;
        linkat(
            target_dir.as_fd(),
            target_leaf,
            dir.as_fd(),
            leaf,
            AtFlags::empty(),
        )
        .map_err(|e| errno_error(name, "link", e))
    }

    /// Directory mtimes change as entries are added below them: set them last, deepest first.
    fn finish_dir_times(&mut self) {
        let times = std::mem::take(&mut self.dir_times);
        for (components, mtime) in times.iter().rev() {
            let parts: Vec<&[u8]> = components.iter().map(Vec::as_slice).collect();
            let Ok(fd) = self.open_parent(&parts, "(directory times)", false) else {
                continue;
            };
            let t = TimeSpec::new(*mtime as i64, 0);
            let _ = futimens(fd.as_fd(), &t, &t);
        }
    }
}

fn kind_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Symlink => "symlink",
        EntryType::Link => "hardlink",
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "fifo",
        _ => "file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert_eq!(split_entry_path(b"./a/b").unwrap(), vec![&b"a"[..], b"b"]);
        assert_eq!(split_entry_path(b"a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(split_entry_path(b"./").unwrap().is_empty());
        assert_eq!(split_entry_path(b"/etc/x"), Err("absolute path"));
        assert_eq!(split_entry_path(b"../../x"), Err("path contains `..`"));
        assert_eq!(split_entry_path(b"a/../b"), Err("path contains `..`"));
        assert_eq!(split_entry_path(b"a/..").unwrap_err(), "path contains `..`");
        assert!(split_entry_path(b"a\0b").is_err());
        assert!(split_entry_path(&vec![b'a'; 5000]).is_err());
        assert!(split_entry_path("a/".repeat(300).as_bytes()).is_err());
        // `..` as part of a name is fine.
        assert!(split_entry_path(b"a/..b/c..").is_ok());
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout_kind(b"file"), Whiteout::None);
        assert_eq!(whiteout_kind(b".wh.file"), Whiteout::Delete(b"file"));
        assert_eq!(whiteout_kind(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(whiteout_kind(b".wh..wh.plnk"), Whiteout::AufsMeta);
        assert_eq!(whiteout_kind(b".wh."), Whiteout::Delete(b""));
        assert_eq!(whiteout_kind(b".whfoo"), Whiteout::None);
    }

    #[test]
    fn display_escapes_control_characters() {
        assert_eq!(display_bytes(b"a\x1b[31mb\n"), "a\\u{1b}[31mb\\n");
    }
}
