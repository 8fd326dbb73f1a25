//! Collecting a finished run's [`Artifacts`]: the files its patterns match in the job's writable
//! root, read through descriptors only, capped.
//!
//! The job controls everything below the root it wrote: names, symlinks, hard links, sparse
//! files, devices (an overlay's whiteouts are character devices), millions of entries. So:
//!
//! - Every open is `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, relative to a directory descriptor that was itself
//!   opened that way from the root: no path a job made can lead outside the root, through a
//!   symlink, or onto another mount. Each directory is entered by one name at a time.
//! - Only regular files are collected. A symlink is never followed, not even inside the root
//!   (it is listed as skipped); a file with more than one link (`st_nlink > 1`) is skipped too,
//!   since a job can hard-link a file it did not create — a host file that shares the
//!   filesystem, or a file of the image — and present it as its own. Character devices (what
//!   overlayfs leaves for a deleted file), FIFOs, sockets and block devices are skipped; a FIFO
//!   is never opened (the type is checked with `fstatat` first, and the open is `O_NONBLOCK`
//!   besides, in case the entry changed in between).
//! - The kind and the link count that decide are read with `fstat` on the opened descriptor,
//!   the very file whose bytes are read.
//! - Reads are capped: at most [`Artifacts::max_file_bytes`] of one file (a longer one is cut:
//!   `truncated`, `size` its real size — a 2 GB sparse file costs one capped read, never 2 GB),
//!   at most [`Artifacts::max_total_bytes`] over the run (files past it are cut or kept empty
//!   and flagged), at most [`Artifacts::max_files`] files (further matches are listed as
//!   skipped). The walk itself is bounded too: at most [`MAX_DEPTH`] directories deep and
//!   [`MAX_ENTRIES`] directory entries examined, past which it stops and says so.
//! - The result is deterministic: matches are collected and read in sorted path order (bytes
//!   of the normalised path), each path once however many patterns match it.
//!
//! # Patterns
//!
//! A pattern is split at `/`; empty and `.` components are ignored, and a `..` component makes
//! the pattern invalid (the service refuses it before it gets here; [`check_pattern`] is that
//! check). `**` as a whole component matches any number of directories, none included
//! (`a/**/b` matches `a/b` and `a/x/y/b`; a final `**` matches every file below). Any other
//! component is matched against one name with [`glob::Pattern`] (`*`, `?`, `[abc]`, `[!a-z]`;
//! `[*]` for a literal star); names are matched as they are, dot files included. A component
//! without glob characters is looked up directly. A directory named by a literal final component
//! is listed as skipped ("use DIR/**"); directories a wildcard matches are passed over like
//! `find -type f` does.
//!
//! Relative patterns are taken from the start directory (a container's working directory; the
//! root for Wasm) and reported relative to it; absolute ones from the root, reported with their
//! leading `/`.
//!
//! Why `glob` for the matching: it is the rust-lang team's crate, has no dependencies and builds
//! in about a second, and its `Pattern` matches one string — exactly the per-component matching
//! needed here, since the walk itself must go through descriptors, which no glob crate does.
//! `globset` would bring regex (a far larger build) for whole-path matching this module does not
//! use.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::stage::{Artifact, ArtifactReport, Artifacts, SkippedArtifact};

/// How deep the walk goes below the root (directory levels).
pub const MAX_DEPTH: usize = 64;
/// How many directory entries the walk examines over the whole request.
pub const MAX_ENTRIES: usize = 200_000;
/// How many skipped entries are listed; one more entry then says how many were left out.
pub const MAX_SKIPPED: usize = 1000;

const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE: u64 =
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

/// Checks a pattern the way [`collect`] reads it: an error says what is wrong with it.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    parse(pattern).map(drop)
}

/// One component of a pattern.
#[derive(Debug)]
enum Comp {
    /// A name without glob characters.
    Literal(String),
    /// A glob over one name.
    Glob(glob::Pattern),
    /// `**`: any number of directories.
    AnyDepth,
}

/// A parsed pattern: whether it is absolute, and its components.
fn parse(pattern: &str) -> Result<(bool, Vec<Comp>), String> {
    if pattern.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let absolute = pattern.starts_with('/');
    let mut comps = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err("`..` is not allowed (patterns stay inside the job)".into()),
            "**" => {
                // `**/**` is the same as `**`.
                if !matches!(comps.last(), Some(Comp::AnyDepth)) {
                    comps.push(Comp::AnyDepth);
                }
            }
            p if p.contains(['*', '?', '[']) => {
                let glob = glob::Pattern::new(p).map_err(|e| {
                    format!("component {p:?} is not a valid glob ({}; `**` must stand alone between slashes)", e.msg)
                })?;
                comps.push(Comp::Glob(glob));
            }
            p => comps.push(Comp::Literal(p.to_owned())),
        }
    }
    if comps.is_empty() {
        return Err("names no file (empty, or only `/` and `.`)".into());
    }
    Ok((absolute, comps))
}

/// A match found by the walk: where it is from the root, and how it is reported.
struct Found {
    /// Components below the root.
    from_root: Vec<String>,
}

/// What the walk gathers, keyed by the reported path (so sorted and unique).
#[derive(Default)]
struct Walk {
    found: BTreeMap<String, Found>,
    skipped: BTreeMap<String, String>,
    entries: usize,
    stopped: Option<String>,
}

impl Walk {
    fn skip(&mut self, path: String, reason: impl Into<String>) {
        self.skipped.entry(path).or_insert_with(|| reason.into());
    }

    /// Counts one examined entry: false once the walk must stop.
    fn count_entry(&mut self) -> bool {
        if self.entries >= MAX_ENTRIES {
            self.stopped.get_or_insert_with(|| {
                format!("the walk stopped after {MAX_ENTRIES} directory entries; later matches were not looked for")
            });
            return false;
        }
        self.entries += 1;
        true
    }
}

/// Where the walk stands: the directory's descriptor, its path below the root, and its path as
/// reported (relative to the start directory, or absolute).
struct Place<'a> {
    fd: BorrowedFd<'a>,
    from_root: Vec<String>,
    shown: String,
}

impl Place<'_> {
    fn child_shown(&self, name: &str) -> String {
        if self.shown.is_empty() {
            name.to_owned()
        } else if self.shown.ends_with('/') {
            format!("{}{name}", self.shown)
        } else {
            format!("{}/{name}", self.shown)
        }
    }

    fn child_from_root(&self, name: &str) -> Vec<String> {
        let mut v = self.from_root.clone();
        v.push(name.to_owned());
        v
    }
}

/// The kind of a directory entry, by `fstatat(AT_SYMLINK_NOFOLLOW)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice,
    Other(&'static str),
}

impl Kind {
    fn of(mode: libc::mode_t) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::Other("a block device"),
            libc::S_IFIFO => Kind::Other("a FIFO"),
            libc::S_IFSOCK => Kind::Other("a socket"),
            _ => Kind::Other("of an unknown file type"),
        }
    }

    /// Why a match of this kind is not collected (`None` for a regular file).
    fn skip_reason(self) -> Option<String> {
        match self {
            Kind::File => None,
            Kind::Dir => Some("a directory (use DIR/** for the files below it)".into()),
            Kind::Symlink => Some("symlink (never followed)".into()),
            Kind::CharDevice => Some(
                "not a regular file: a character device (an overlay whiteout marks a deleted file)"
                    .into(),
            ),
            Kind::Other(what) => Some(format!("not a regular file: {what}")),
        }
    }
}

/// Collects what `request` asks for from the directory `root` (the job's writable root).
/// `start` is the directory relative patterns are taken from, a relative path below `root`
/// (empty for the root itself). Never fails as a whole: what cannot be read is listed in
/// [`ArtifactReport::skipped`] with the reason. Blocking: call it where blocking is allowed.
pub fn collect(root: BorrowedFd<'_>, start: &str, request: &Artifacts) -> ArtifactReport {
    let mut walk = Walk::default();
    if request.patterns.is_empty() {
        return ArtifactReport::default();
    }
    let start_parts: Vec<String> = start
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_owned)
        .collect();
    // The start directory, opened only if a relative pattern needs it.
    let mut start_fd: Option<Result<OwnedFd, String>> = None;

    for pattern in &request.patterns {
        let (absolute, comps) = match parse(pattern) {
            Ok(p) => p,
            Err(e) => {
                walk.skip(pattern.clone(), format!("invalid pattern: {e}"));
                continue;
            }
        };
        if absolute {
            let place = Place {
                fd: root,
                from_root: vec![],
                shown: "/".into(),
            };
            walk_comps(&mut walk, &place, &comps, 0);
        } else {
            let opened = start_fd.get_or_insert_with(|| {
                if start_parts.is_empty() {
                    dup_dir(root).map_err(|e| e.to_string())
                } else {
                    open_dir(root, &start_parts.join("/")).map_err(|e| e.to_string())
                }
            });
            match opened {
                Ok(fd) => {
                    let place = Place {
                        fd: fd.as_fd(),
                        from_root: start_parts.clone(),
                        shown: String::new(),
                    };
                    walk_comps(&mut walk, &place, &comps, 0);
                }
                Err(e) => walk.skip(
                    pattern.clone(),
                    format!("the working directory {start:?} cannot be opened: {e}"),
                ),
            }
        }
    }

    let mut report = ArtifactReport::default();
    let mut total_left = request.max_total_bytes;
    let mut skipped = std::mem::take(&mut walk.skipped);
    for (shown, found) in std::mem::take(&mut walk.found) {
        if report.files.len() >= request.max_files {
            skipped.entry(shown).or_insert_with(|| {
                format!(
                    "past the file count cap ({} files per run)",
                    request.max_files
                )
            });
            continue;
        }
        match read_capped(root, &found.from_root, request.max_file_bytes, total_left) {
            Ok(Read1 { size, data, mode }) => {
                total_left -= data.len() as u64;
                let truncated = (data.len() as u64) < size;
                report.files.push(Artifact {
                    path: shown,
                    size,
                    data,
                    truncated,
                    mode,
                });
            }
            Err(reason) => {
                skipped.entry(shown).or_insert(reason);
            }
        }
    }
    let mut skipped: Vec<SkippedArtifact> = skipped
        .into_iter()
        .map(|(path, reason)| SkippedArtifact { path, reason })
        .collect();
    if skipped.len() > MAX_SKIPPED {
        let more = skipped.len() - MAX_SKIPPED;
        skipped.truncate(MAX_SKIPPED);
        skipped.push(SkippedArtifact {
            path: String::new(),
            reason: format!("{more} more skipped matches are not listed"),
        });
    }
    if let Some(stopped) = walk.stopped {
        skipped.push(SkippedArtifact {
            path: String::new(),
            reason: stopped,
        });
    }
    report.skipped = skipped;
    report
}

/// Matches `comps` below `place`.
fn walk_comps(walk: &mut Walk, place: &Place<'_>, comps: &[Comp], depth: usize) {
    let Some((first, rest)) = comps.split_first() else {
        return;
    };
    let last = rest.is_empty();
    match first {
        Comp::Literal(name) => {
            if !walk.count_entry() {
                return;
            }
            let Ok(cname) = CString::new(name.as_bytes()) else {
                return;
            };
            match stat_at(place.fd, &cname) {
                Ok(kind) => visit(walk, place, name, kind, rest, last, true, depth),
                // Not there: the pattern simply matches nothing.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(e) => walk.skip(place.child_shown(name), format!("cannot be examined: {e}")),
            }
        }
        Comp::Glob(glob) => {
            for (name, kind) in list(walk, place) {
                let text = name.to_string_lossy();
                if !glob.matches(&text) {
                    continue;
                }
                visit_named(walk, place, &name, kind, rest, last, depth);
            }
        }
        Comp::AnyDepth => {
            let entries = list(walk, place);
            // Zero directories: the rest matches right here (a final `**` matches every file).
            if last {
                for (name, kind) in &entries {
                    if *kind != Kind::Dir {
                        visit_named(walk, place, name, *kind, rest, true, depth);
                    }
                }
            } else {
                walk_comps(walk, place, rest, depth);
            }
            // One directory or more: descend into every real directory, `**` still first.
            for (name, kind) in entries {
                if kind != Kind::Dir {
                    continue;
                }
                let Ok(name) = name.to_str() else {
                    continue;
                };
                descend(walk, place, name, comps, depth);
            }
        }
    }
}

/// A directory entry whose name is not UTF-8 cannot be reported; it is listed as skipped with
/// its name made readable.
fn visit_named(
    walk: &mut Walk,
    place: &Place<'_>,
    name: &CStr,
    kind: Kind,
    rest: &[Comp],
    last: bool,
    depth: usize,
) {
    match name.to_str() {
        Ok(name) => visit(walk, place, name, kind, rest, last, false, depth),
        Err(_) => {
            if last && kind != Kind::Dir {
                let shown = place.child_shown(&name.to_string_lossy());
                walk.skip(shown, "the name is not valid UTF-8");
            }
        }
    }
}

/// One entry a component matched: collect it (last component), or go on below it.
#[allow(clippy::too_many_arguments)]
fn visit(
    walk: &mut Walk,
    place: &Place<'_>,
    name: &str,
    kind: Kind,
    rest: &[Comp],
    last: bool,
    literal: bool,
    depth: usize,
) {
    if last {
        match kind.skip_reason() {
            None => {
                walk.found.entry(place.child_shown(name)).or_insert(Found {
                    from_root: place.child_from_root(name),
                });
            }
            // A wildcard passes over directories, as `find -type f` would.
            Some(_) if kind == Kind::Dir && !literal => {}
            Some(reason) => walk.skip(place.child_shown(name), reason),
        }
        return;
    }
    match kind {
        Kind::Dir => descend(walk, place, name, rest, depth),
        Kind::Symlink if literal => walk.skip(
            place.child_shown(name),
            "symlink (never followed, not even to a directory)",
        ),
        _ => {}
    }
}

/// Opens the directory `name` below `place` and matches `comps` there.
fn descend(walk: &mut Walk, place: &Place<'_>, name: &str, comps: &[Comp], depth: usize) {
    if depth + 1 > MAX_DEPTH {
        walk.stopped.get_or_insert_with(|| {
            format!("the walk does not go deeper than {MAX_DEPTH} directories")
        });
        return;
    }
    match open_dir(place.fd, name) {
        Ok(fd) => {
            let child = Place {
                fd: fd.as_fd(),
                from_root: place.child_from_root(name),
                shown: place.child_shown(name),
            };
            walk_comps(walk, &child, comps, depth + 1);
        }
        Err(e) => walk.skip(
            place.child_shown(name),
            format!("the directory cannot be opened: {e}"),
        ),
    }
}

/// The entries of `place` (without `.` and `..`) with their kinds, in name order, each counted.
fn list(walk: &mut Walk, place: &Place<'_>) -> Vec<(CString, Kind)> {
    let names = match read_dir(place.fd) {
        Ok(n) => n,
        Err(e) => {
            let shown = if place.shown.is_empty() {
                ".".to_owned()
            } else {
                place.shown.clone()
            };
            walk.skip(shown, format!("the directory cannot be read: {e}"));
            return vec![];
        }
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if !walk.count_entry() {
            break;
        }
        if let Ok(kind) = stat_at(place.fd, &name) {
            out.push((name, kind));
        }
    }
    out
}

/// What one capped read gave.
struct Read1 {
    size: u64,
    data: Vec<u8>,
    mode: u32,
}

/// Opens the file at `from_root` below `root` and reads it within the caps; `Err` is the reason
/// it is skipped.
fn read_capped(
    root: BorrowedFd<'_>,
    from_root: &[String],
    max_file: u64,
    total_left: u64,
) -> Result<Read1, String> {
    let path = from_root.join("/");
    let fd = openat2(
        root,
        &path,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => "symlink (never followed)".to_owned(),
        Some(libc::EXDEV) => "on another filesystem (mount points are not crossed)".to_owned(),
        _ => format!("cannot be opened: {e}"),
    })?;
    let st = fstat(fd.as_fd()).map_err(|e| format!("cannot be examined: {e}"))?;
    if let Some(reason) = Kind::of(st.st_mode).skip_reason() {
        return Err(reason);
    }
    if st.st_nlink > 1 {
        return Err(format!(
            "hard link ({} names for one file: it may not be the job's own)",
            st.st_nlink
        ));
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let budget = max_file.min(total_left);
    let want = size.min(budget);
    let mut data = Vec::with_capacity(usize::try_from(want.min(1 << 20)).unwrap_or(0));
    File::from(fd)
        .take(want)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot be read: {e}"))?;
    Ok(Read1 {
        size,
        data,
        mode: st.st_mode & 0o7777,
    })
}

fn openat2(dir: BorrowedFd<'_>, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `open_how` is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = RESOLVE;
    loop {
        // SAFETY: `path` is a valid C string and `how` lives across the call; its size is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        let fd = libc::c_int::try_from(r).map_err(|_| io::Error::other("openat2: bad fd"))?;
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

fn open_dir(dir: BorrowedFd<'_>, path: &str) -> io::Result<OwnedFd> {
    openat2(dir, path, libc::O_RDONLY | libc::O_DIRECTORY)
}

fn dup_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    open_dir(dir, ".")
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is valid for writes.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Kind> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open, `name` a valid C string and `st` valid for writes.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Kind::of(st.st_mode))
}

/// The names in the directory `dir` (without `.` and `..`), sorted.
fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let own = dup_dir(dir)?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(own);
    // SAFETY: `raw` is an open directory descriptor we own; on success the stream owns it.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; clearing it tells end-of-stream from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is a valid open stream used by this thread only.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir returned a valid entry whose `d_name` is NUL-terminated; it stays
        // valid until the next readdir on this stream, and we copy it before then.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(name.to_owned());
        }
    };
    // SAFETY: `stream` is valid and closed once; it closes `raw` with it.
    unsafe { libc::closedir(stream) };
    result?;
    names.sort_by(|a, b| OsStr::from_bytes(a.to_bytes()).cmp(OsStr::from_bytes(b.to_bytes())));
    Ok(names)
}

#[cfg(test)]
mod tests;
