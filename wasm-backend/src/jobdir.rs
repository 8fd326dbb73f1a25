//! The job's root directory, preopened read-write at the guest's `/` by default, and the pool
//! that keeps such directories ready between jobs.
//!
//! # The job's filesystem
//!
//! WASI programs (and the official wasi-testsuite, which runtimes run with `--dir <root>::/`)
//! expect one read-write directory preopened as `/`. Every job gets exactly that by default: a
//! host directory holding its `files` and nothing else (empty when there are none), preopened as
//! the first and only preopen (fd 3; a component sees it as its one `wasi:filesystem/preopens`
//! entry) — except a core module that could not use it (see `cache::uses_preopens`) and has
//! no files. A job's `wasm.preopens` replaces that with directories of this one at guest paths of
//! its choice ([`make_preopen_dirs`]).
//! wasmtime-wasi resolves every guest path inside it with cap-std, so `..`, absolute paths and
//! symlinks (even ones the guest creates itself) cannot reach the host. Nothing a job wrote
//! outlives it.
//!
//! ## The pool
//!
//! Creating and removing a directory (and mounting and detaching a tmpfs) per job cost more
//! than running a hello-world job itself (`benches/hello.rs`). So the backend keeps directories
//! ready in a [`DirPool`] under a private parent (`<scratch>/nekton-wasm-jobs-<pid>.<start
//! time>.XXXXXX`, mode 0700), one list for plain directories and one for tmpfs mounts, at most
//! [`DirPool::max_idle`] each. When a job ends — after its `Store`, and with it every WASI
//! handle, is dropped — its directory goes back to the pool **only if it is empty**: the pool
//! reads it through a descriptor it kept (`getdents64` from offset 0: only `.` and `..`), resets
//! its mode (0700) and times (now), and keeps it. A directory that holds anything (input files,
//! whatever the job wrote), or that cannot be checked or reset, is removed as before (a tmpfs
//! detached first), and the pool makes a fresh one when it next runs dry. Nor does the directory
//! of a job stopped by the cancel or wall-time guard (`run.rs`), whose last host call may still
//! run on a blocking thread and create a file after any check. So no job can see a
//! file of another; what a reused directory can tell a job is only its inode number, and on a
//! tmpfs the inode numbers earlier jobs used up (as the shared scratch filesystem tells any fresh
//! directory). Jobs with input files pay for writing them, not for the directory.
//!
//! ## The size cap (`limits.disk_bytes`)
//!
//! wasmtime-wasi has no hook to count or refuse writes, and cap-std offers no quota, so the cap
//! is the kernel's: when the job has a `disk_bytes` limit, its directory is a tmpfs mounted with
//! `size=<disk_bytes>` (`nosuid,nodev,noexec`, mode 0700). Writes past it fail with `ENOSPC`
//! inside the guest (errno 51, `nospc`), and the job's own input files count against it. A
//! pooled tmpfs of another size is resized with a remount (`MS_REMOUNT`, `size=`; it is empty,
//! so any size fits); one that cannot be reused is detached (`umount2(MNT_DETACH)`) before its
//! mount point is removed. Alternatives weighed: a wrapper filesystem in the WASI host (would
//! need to re-implement wasmtime-wasi's filesystem to see every write, fallocate and truncate),
//! a loop device or an XFS project quota (far costlier per job, and need a particular host
//! filesystem). A tmpfs's pages are RAM: a job holds up to `disk_bytes` of memory besides its
//! linear memory; an idle pooled tmpfs is empty and holds none.
//!
//! A worker that dies without dropping its pool (a crash, `SIGKILL`) leaves the parent behind,
//! and the tmpfs of each job directory in it still mounted on the host. The parent's name carries
//! its worker's identity ([`runtime_core::owner::Owner`]: pid and start time), so a pool that
//! starts in the same scratch directory detaches those mounts and removes the parents whose
//! worker is gone ([`remove_stale_parents`]); a live worker's, and a name without an owner, it
//! leaves alone.
//!
//! Mounting needs `CAP_SYS_ADMIN` (the worker runs as root in production). Without it (a
//! developer running the worker as a plain user) the directory is a plain directory on the
//! scratch filesystem and **the cap is not enforced**; the backend logs that once, at `warn`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use runtime_core::InputFile;

/// Why the input directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputDirError {
    /// The job's file list is unacceptable (the job's fault: `spec_error`).
    #[error("input file {path:?}: {reason}")]
    BadFile { path: String, reason: String },
    /// The host could not create the directory or write a file (`internal_error`).
    #[error("cannot prepare the input directory: {0}")]
    Host(String),
    /// The chain's base cannot be used for this job (the job's fault: `spec_error`).
    #[error("the base of the chain: {0}")]
    Base(String),
    /// A preopen's directory cannot be made (the job's fault: `spec_error`).
    #[error("wasm.preopens[{index}] (dir {dir:?}): {reason}")]
    BadPreopen {
        index: usize,
        dir: String,
        reason: String,
    },
}

/// Checks a job-supplied relative path and returns it as a `PathBuf` made of plain components.
fn sanitize(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("the path is absolute".into()),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err("the path names no file".into());
    }
    Ok(clean)
}

/// A job's root directory (see the [module docs](self)). Dropping it removes it (a tmpfs is
/// detached first); [`DirPool::recycle`] keeps it for the next job instead when it is empty.
pub(crate) struct JobDir {
    path: PathBuf,
    /// The directory (the tmpfs root when mounted), opened after mounting: the emptiness check
    /// and the resets go through it.
    fd: OwnedFd,
    /// The size of the tmpfs mounted on `path`, if it is one.
    tmpfs: Option<u64>,
}

impl JobDir {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's descriptor (the tmpfs root when it is one).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// True if writes are capped (the directory is a tmpfs). Dropping a capped directory is cheap
    /// whatever the job wrote: the detached mount takes its contents with it, and only the empty
    /// mount point is removed.
    pub(crate) fn is_capped(&self) -> bool {
        self.tmpfs.is_some()
    }

    /// The bytes the job's tmpfs holds (`fstatfs`: blocks in use × block size), or `None` when
    /// the directory is not a tmpfs (an uncapped directory is not measured: that would mean
    /// walking whatever the job wrote).
    pub(crate) fn used_bytes(&self) -> Option<u64> {
        self.tmpfs?;
        // SAFETY: a zeroed statfs is a valid out-parameter.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is an open descriptor owned by `self`; `st` is a valid, writable statfs.
        if unsafe { libc::fstatfs(self.fd.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        // Block counts are unsigned (`fsblkcnt_t`, 64 bits wide where nekton runs).
        let (blocks, free) = (st.f_blocks as u64, st.f_bfree as u64);
        let size = u64::try_from(st.f_bsize).ok()?;
        Some(blocks.saturating_sub(free).saturating_mul(size))
    }

    /// Removes the directory if it is empty and not a mount (one `rmdir`): true when it is gone,
    /// and dropping `self` then costs nothing more.
    pub(crate) fn remove_if_empty(&self) -> bool {
        self.tmpfs.is_none() && std::fs::remove_dir(&self.path).is_ok()
    }

    /// True if the directory holds nothing but `.` and `..`.
    fn is_empty(&self) -> io::Result<bool> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: `fd` is an open descriptor owned by `self`.
        if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // `linux_dirent64` records: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name; 8-byte
        // aligned.
        #[repr(C, align(8))]
        struct Buf([u8; 1024]);
        let mut buf = Buf([0; 1024]);
        loop {
            // SAFETY: the buffer is valid for writes of its whole length and 8-byte aligned.
            let n =
                unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.0.as_mut_ptr(), buf.0.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                return Ok(true);
            }
            let bytes = buf.0.get(..n).ok_or_else(|| {
                io::Error::other("getdents64 returned more bytes than the buffer holds")
            })?;
            let mut at = 0;
            while at + 19 < bytes.len() {
                let reclen = usize::from(u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]));
                if reclen == 0 || at + reclen > bytes.len() {
                    return Err(io::Error::other("getdents64 returned a malformed record"));
                }
                let name = &bytes[at + 19..at + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    return Ok(false);
                }
                at += reclen;
            }
        }
    }

    /// Gives the directory back its fresh state: mode 0700, access and modification times now.
    fn reset(&self) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: `fd` is an open descriptor owned by `self`.
        if unsafe { libc::fchmod(fd, 0o700) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let now = libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        };
        // SAFETY: `fd` is open and `times` points to two valid timespecs.
        if unsafe { libc::futimens(fd, [now, now].as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        if self.tmpfs.is_some()
            && let Err(e) = umount_detach(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e,
                "cannot unmount a wasm job's directory; it stays mounted until the host reboots");
            return;
        }
        let removed = match std::fs::remove_dir(&self.path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                std::fs::remove_dir_all(&self.path)
            }
            other => other,
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a wasm job's directory")
            }
        }
    }
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))
}

fn umount_detach(path: &Path) -> io::Result<()> {
    let target = c_path(path)?;
    // SAFETY: `target` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Mounts a tmpfs of `size` bytes on `path` (or, with `remount`, resizes the one there).
/// `Ok(false)`: not permitted (no `CAP_SYS_ADMIN`).
fn mount_tmpfs(path: &Path, size: u64, remount: bool) -> io::Result<bool> {
    let target = c_path(path)?;
    let options = std::ffi::CString::new(format!("size={size},mode=0700"))
        .map_err(|_| io::Error::other("tmpfs options contain a NUL byte"))?;
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if remount {
        flags |= libc::MS_REMOUNT;
    }
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; tmpfs takes
    // its options as such a string.
    let rc = unsafe {
        libc::mount(
            c"nekton-wasm-job".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Warns once per process that disk caps are not enforced.
fn warn_uncapped(e: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            reason = e,
            "cannot mount a tmpfs for wasm jobs (needs CAP_SYS_ADMIN): limits.disk_bytes is not \
             enforced for wasm jobs on this worker"
        );
    });
}

/// The start of a pool parent's name, followed by its worker's `<pid>.<start time>.`.
const PARENT_PREFIX: &str = "nekton-wasm-jobs-";

/// Removes the pool parents under `base` that a worker which is gone left behind (see the
/// [module docs](self)): each job directory in one is detached first (an idle pool's or a running
/// job's tmpfs; `EINVAL` for a plain directory), then the parent is removed. Best effort: what
/// cannot be removed is logged and left.
fn remove_stale_parents(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PARENT_PREFIX))
            .and_then(runtime_core::owner::Owner::parse_prefix)
            .map(|(owner, _)| owner)
        else {
            continue;
        };
        if owner.is_alive() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let parent = entry.path();
        if let Ok(jobs) = std::fs::read_dir(&parent) {
            for job in jobs.flatten() {
                let _ = umount_detach(&job.path());
            }
        }
        match std::fs::remove_dir_all(&parent) {
            Ok(()) => tracing::info!(path = %parent.display(), %owner,
                "removed the wasm job directories of a worker that is gone"),
            // Another pool starting at the same time removed it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %parent.display(), error = %e,
                "cannot remove the wasm job directories of a worker that is gone"),
        }
    }
}

/// Empty job directories kept ready between jobs (see the [module docs](self)).
pub(crate) struct DirPool {
    /// Idle directories: plain ones, and tmpfs mounts. Declared before `parent` so they are
    /// detached and removed before the parent is.
    idle: Mutex<Idle>,
    max_idle: usize,
    next: AtomicU64,
    /// Set once mounting was refused (no `CAP_SYS_ADMIN`): capped jobs then get plain directories.
    mount_refused: AtomicBool,
    /// The private parent of every directory of this pool, removed with it.
    parent: tempfile::TempDir,
}

#[derive(Default)]
struct Idle {
    plain: Vec<JobDir>,
    tmpfs: Vec<JobDir>,
}

impl DirPool {
    /// A pool under `root` (the system temporary directory when `None`) keeping at most
    /// `max_idle` directories of each kind.
    pub(crate) fn new(root: Option<&Path>, max_idle: usize) -> io::Result<Self> {
        let base = root.map_or_else(std::env::temp_dir, Path::to_path_buf);
        remove_stale_parents(&base);
        // `<prefix><pid>.<start time>.` (then tempfile's random part): what a later pool's
        // cleanup reads. Without /proc the owner is unknown and the name has none.
        let prefix = match runtime_core::owner::Owner::current() {
            Ok(owner) => format!("{PARENT_PREFIX}{owner}."),
            Err(_) => PARENT_PREFIX.to_string(),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        let parent = builder.tempdir_in(&base)?;
        Ok(Self {
            idle: Mutex::new(Idle::default()),
            max_idle,
            next: AtomicU64::new(0),
            mount_refused: AtomicBool::new(false),
            parent,
        })
    }

    /// The directory holding every job directory of this pool.
    #[cfg(test)]
    pub(crate) fn parent(&self) -> &Path {
        self.parent.path()
    }

    /// An empty directory for a job, a tmpfs of `disk_bytes` when given and mounting is
    /// permitted: from the pool, or fresh. Cheap when the pool has one; otherwise blocking
    /// (`mkdir`, `mount`).
    pub(crate) fn take(&self, disk_bytes: Option<u64>) -> Result<JobDir, InputDirError> {
        let disk_bytes = disk_bytes.filter(|_| !self.mount_refused.load(Ordering::Relaxed));
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            match disk_bytes {
                None => idle.plain.pop(),
                Some(size) => match idle.tmpfs.iter().rposition(|d| d.tmpfs == Some(size)) {
                    Some(i) => Some(idle.tmpfs.swap_remove(i)),
                    None => idle.tmpfs.pop(),
                },
            }
        };
        if let Some(mut dir) = reused {
            match (disk_bytes, dir.tmpfs) {
                (Some(size), Some(current)) if size != current => {
                    match mount_tmpfs(&dir.path, size, true) {
                        Ok(true) => {
                            dir.tmpfs = Some(size);
                            return Ok(dir);
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(path = %dir.path.display(), error = %e,
                            "cannot resize a pooled tmpfs; mounting a new one"),
                    }
                    // Dropped: detached and removed.
                }
                _ => return Ok(dir),
            }
        }
        self.create(disk_bytes)
    }

    fn create(&self, disk_bytes: Option<u64>) -> Result<JobDir, InputDirError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.parent.path().join(format!("job-{n}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                InputDirError::Host(format!(
                    "cannot create the job directory {}: {e}",
                    path.display()
                ))
            })?;
        let mut tmpfs = None;
        if let Some(size) = disk_bytes {
            match mount_tmpfs(&path, size, false) {
                Ok(true) => tmpfs = Some(size),
                Ok(false) => {
                    self.mount_refused.store(true, Ordering::Relaxed);
                    warn_uncapped("mount(2) was refused with EPERM/EACCES");
                }
                Err(e) => {
                    let _ = std::fs::remove_dir(&path);
                    return Err(InputDirError::Host(format!(
                        "cannot mount a {size}-byte tmpfs on {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path);
        match opened {
            Ok(file) => Ok(JobDir {
                path,
                fd: file.into(),
                tmpfs,
            }),
            Err(e) => {
                if tmpfs.is_some() {
                    let _ = umount_detach(&path);
                }
                let _ = std::fs::remove_dir(&path);
                Err(InputDirError::Host(format!(
                    "cannot open the job directory {}: {e}",
                    path.display()
                )))
            }
        }
    }

    /// Keeps `dir` for a later job if it is empty and could be reset, and the pool has room;
    /// otherwise hands it back, to be dropped (removed) by the caller. Call it only once nothing
    /// of the job can reach the directory any more (its `Store` dropped).
    pub(crate) fn recycle(&self, dir: JobDir) -> Option<JobDir> {
        match dir.is_empty() {
            Ok(true) => {}
            Ok(false) => return Some(dir),
            Err(e) => {
                tracing::warn!(path = %dir.path.display(), error = %e, "cannot read a wasm job's directory; removing it");
                return Some(dir);
            }
        }
        if let Err(e) = dir.reset() {
            tracing::warn!(path = %dir.path.display(), error = %e, "cannot reset a wasm job's directory; removing it");
            return Some(dir);
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = if dir.tmpfs.is_some() {
            &mut idle.tmpfs
        } else {
            &mut idle.plain
        };
        if list.len() >= self.max_idle {
            return Some(dir);
        }
        list.push(dir);
        None
    }
}

/// Writes the job's input files into its (empty) directory. Blocking: call it on a blocking
/// thread. `disk_bytes` is only for the error message when the files do not fit.
pub(crate) fn write_files(
    dir: &JobDir,
    files: &[InputFile],
    disk_bytes: Option<u64>,
) -> Result<(), InputDirError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    for file in files {
        let bad = |reason: String| InputDirError::BadFile {
            path: file.path.clone(),
            reason,
        };
        let relative = sanitize(&file.path).map_err(bad)?;
        let target = dir.path().join(&relative);
        // Everything below `dir` was created by this function, so there is no symlink to follow;
        // these errors mean the job's own paths or modes collide (a file where a directory must
        // go, a file rewritten after an earlier entry made it read-only).
        let job_fault = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::IsADirectory
                    | io::ErrorKind::PermissionDenied
            )
        };
        let fail = |e: io::Error| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                bad(format!(
                    "does not fit: the job's files exceed its limits.disk_bytes ({} bytes)",
                    disk_bytes.unwrap_or_default()
                ))
            } else if job_fault(&e) {
                bad(format!("cannot be created: {e}"))
            } else {
                InputDirError::Host(format!("cannot write {:?}: {e}", file.path))
            }
        };
        // A base's files were copied in first, symlinks included: a symlink where this path
        // goes is removed (the input file wins), never followed.
        clear_symlinks(dir.path(), &relative).map_err(fail)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        // No setuid/setgid/sticky bits: only the permission bits make sense here.
        let mode = file.mode.unwrap_or(0o644) & 0o777;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .map_err(fail)?;
        io::Write::write_all(&mut out, &file.content).map_err(fail)?;
        drop(out);
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    }
    Ok(())
}

/// Makes the directory of each of the job's preopens below `dir` (after its files: a file's
/// directories and a preopen's may be the same) and returns their host paths, in order. A
/// symlink on the way (a chain's base may hold the ones an earlier run made) is removed, never
/// followed, so each path is a real directory inside the job's; nothing else changes the
/// directory before the guest starts. Blocking.
pub(crate) fn make_preopen_dirs(
    dir: &JobDir,
    preopens: &[runtime_core::Preopen],
) -> Result<Vec<PathBuf>, InputDirError> {
    preopens
        .iter()
        .enumerate()
        .map(|(index, preopen)| {
            if preopen.dir.is_empty() {
                return Ok(dir.path().to_path_buf());
            }
            let bad = |reason: String| InputDirError::BadPreopen {
                index,
                dir: preopen.dir.clone(),
                reason,
            };
            let relative = sanitize(&preopen.dir).map_err(bad)?;
            let target = dir.path().join(&relative);
            let made = clear_symlinks(dir.path(), &relative)
                .and_then(|()| std::fs::create_dir_all(&target));
            match made {
                Ok(()) => Ok(target),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory
                    ) =>
                {
                    Err(bad(format!(
                        "cannot be a directory: one of the job's files is in its place ({e})"
                    )))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(bad(
                    "does not fit: the job's files fill its limits.disk_bytes".into(),
                )),
                Err(e) => Err(InputDirError::Host(format!(
                    "cannot make the directory {:?} of wasm.preopens[{index}]: {e}",
                    preopen.dir
                ))),
            }
        })
        .collect()
}

/// Removes every symlink on the way to `dir/relative` (the last component included), so that
/// nothing written there afterwards follows one. Nothing else changes the directory meanwhile: the
/// job has not started.
fn clear_symlinks(dir: &Path, relative: &Path) -> io::Result<()> {
    let mut at = dir.to_path_buf();
    for part in relative.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&at)?,
            Ok(meta) if meta.is_dir() => continue,
            // A file (the create that follows reports it) or nothing yet: no symlink below.
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How deep a base's directories may nest.
const MAX_BASE_DEPTH: usize = 128;

/// Copies the files of a kept job directory (a chain's base) into `dir`, a fresh directory:
/// regular files and directories with their permission bits, symlinks as symlinks (their targets
/// as written; the guest's filesystem confines them to its directory, as it did for the run that
/// made them); anything else is left out. Every file's size counts against `disk_bytes`. Blocking.
///
/// The base is frozen (the run that wrote it has ended and nothing of it is left: a run stopped
/// with a host call maybe in flight keeps no base) and lies in the pool's private parent, so it
/// is read by path; its entries are examined without following symlinks, and directories are
/// entered only when they are directories, so no path leaves it.
pub(crate) fn copy_base(
    base: &Path,
    dir: &JobDir,
    disk_bytes: Option<u64>,
) -> Result<u64, InputDirError> {
    let mut used = 0u64;
    copy_tree(base, dir.path(), disk_bytes, &mut used, 0)?;
    Ok(used)
}

fn copy_tree(
    from: &Path,
    to: &Path,
    disk_bytes: Option<u64>,
    used: &mut u64,
    depth: usize,
) -> Result<(), InputDirError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    if depth > MAX_BASE_DEPTH {
        return Err(InputDirError::Base(format!(
            "its directories nest deeper than {MAX_BASE_DEPTH} levels"
        )));
    }
    let host = |what: &str, path: &Path, e: io::Error| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            InputDirError::Base(format!(
                "its files do not fit in this job's limits.disk_bytes ({} bytes)",
                disk_bytes.unwrap_or_default()
            ))
        } else {
            InputDirError::Host(format!("cannot {what} {}: {e}", path.display()))
        }
    };
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(|e| host("read the base directory", from, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| host("read the base directory", from, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let source = entry.path();
        let target = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&source)
            .map_err(|e| host("examine the base's", &source, e))?;
        let kind = meta.file_type();
        let mode = meta.permissions().mode() & 0o777;
        if kind.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&target)
                .map_err(|e| host("create", &target, e))?;
            copy_tree(&source, &target, disk_bytes, used, depth + 1)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(|e| host("set the mode of", &target, e))?;
        } else if kind.is_file() {
            *used = used.saturating_add(meta.len());
            if let Some(cap) = disk_bytes
                && *used > cap
            {
                return Err(InputDirError::Base(format!(
                    "its files ({} bytes so far) do not fit in this job's limits.disk_bytes \
                     ({cap} bytes)",
                    *used
                )));
            }
            let mut input = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&source)
                .map_err(|e| host("open the base's", &source, e))?;
            let mut output = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .map_err(|e| host("create", &target, e))?;
            io::copy(&mut input, &mut output).map_err(|e| host("copy to", &target, e))?;
            drop(output);
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(|e| host("set the mode of", &target, e))?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(&source)
                .map_err(|e| host("read the base's symlink", &source, e))?;
            *used = used.saturating_add(link.as_os_str().len() as u64);
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| host("create the symlink", &target, e))?;
        }
        // Devices, FIFOs, sockets: a WASI guest cannot make them; nothing to copy.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8], mode: Option<u32>) -> InputFile {
        InputFile {
            path: path.into(),
            content: content.to_vec(),
            mode,
        }
    }

    #[test]
    fn sanitize_accepts_relative_paths_only() {
        assert_eq!(sanitize("a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        assert_eq!(sanitize("./a").unwrap(), PathBuf::from("a"));
        assert!(sanitize("/etc/passwd").is_err());
        assert!(sanitize("../x").is_err());
        assert!(sanitize("a/../../x").is_err());
        assert!(sanitize("").is_err());
        assert!(sanitize(".").is_err());
    }

    #[test]
    fn writes_files_with_modes_and_removes_the_directory() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let pool = DirPool::new(Some(root.path()), 4).unwrap();
        let files = vec![
            file("in/data.txt", b"hi", Some(0o4755)),
            file("plain", b"", None),
        ];
        let dir = pool.take(None).unwrap();
        write_files(&dir, &files, None).unwrap();
        let path = dir.path().to_path_buf();
        assert_eq!(std::fs::read(path.join("in/data.txt")).unwrap(), b"hi");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path.join("in/data.txt")), 0o755);
        assert_eq!(mode(&path.join("plain")), 0o644);
        // Not empty: not kept, removed when dropped.
        let dir = pool
            .recycle(dir)
            .expect("a directory with files is not kept");
        drop(dir);
        assert!(!path.exists());

        let clash = vec![file("a", b"", None), file("a/b", b"", None)];
        let dir = pool.take(None).unwrap();
        assert!(matches!(
            write_files(&dir, &clash, None),
            Err(InputDirError::BadFile { .. })
        ));
    }

    /// A preopen's directory is made inside the job's directory, never through a symlink a
    /// chain's base may have left on its way; the job directory itself is `""`; a file in its
    /// place is the job's fault.
    #[test]
    fn preopen_directories_are_made_inside_and_never_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let pool = DirPool::new(Some(root.path()), 4).unwrap();
        let dir = pool.take(None).unwrap();
        write_files(
            &dir,
            &[file("in/a.txt", b"a", None), file("f", b"", None)],
            None,
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let preopen = |dir: &str| runtime_core::Preopen {
            guest: "/x".into(),
            dir: dir.into(),
            read_only: false,
        };
        let made =
            make_preopen_dirs(&dir, &[preopen(""), preopen("in"), preopen("link/sub")]).unwrap();
        assert_eq!(
            made,
            [
                dir.path().to_path_buf(),
                dir.path().join("in"),
                dir.path().join("link/sub")
            ]
        );
        let link = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
        assert!(link.is_dir(), "the symlink was replaced by a directory");
        assert!(dir.path().join("link/sub").is_dir());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(std::fs::read(dir.path().join("in/a.txt")).unwrap(), b"a");
        for bad in ["f", "f/sub", "../up"] {
            match make_preopen_dirs(&dir, &[preopen("in"), preopen(bad)]) {
                Err(InputDirError::BadPreopen { index: 1, dir, .. }) => assert_eq!(dir, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_empty_directories_are_reused_and_they_come_back_fresh() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let pool = DirPool::new(Some(root.path()), 2).unwrap();
        let dir = pool.take(None).unwrap();
        let path = dir.path().to_path_buf();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        std::fs::File::open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // Many entries (more than one getdents64 buffer), then all removed: empty again.
        for i in 0..200 {
            std::fs::write(path.join(format!("a-fairly-long-file-name-{i}")), b"x").unwrap();
        }
        let dir = pool.recycle(dir).expect("not empty: not kept");
        for i in 0..200 {
            std::fs::remove_file(path.join(format!("a-fairly-long-file-name-{i}"))).unwrap();
        }
        assert!(pool.recycle(dir).is_none(), "an empty directory is kept");
        let again = pool.take(None).unwrap();
        assert_eq!(again.path(), path, "reused");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        assert!(meta.modified().unwrap() > old);
        // A directory holding only a (hidden, empty) subdirectory is not empty.
        std::fs::create_dir(path.join(".d")).unwrap();
        let again = pool.recycle(again).expect("a subdirectory: not kept");
        drop(again);
        assert!(!path.exists());
        // At most `max_idle` are kept.
        let dirs: Vec<_> = (0..3).map(|_| pool.take(None).unwrap()).collect();
        let kept = dirs.into_iter().filter_map(|d| pool.recycle(d)).count();
        assert_eq!(kept, 1, "one of three handed back");
        drop(pool);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    /// Needs root (CAP_SYS_ADMIN), as the worker has in production.
    #[test]
    #[cfg_attr(
        not(feature = "root-tests"),
        ignore = "root tier: mounts a tmpfs; run with --features root-tests as root (scripts/test.sh does)"
    )]
    fn a_disk_cap_is_a_tmpfs_that_refuses_writes_past_it_and_is_reused_only_empty() {
        require_root();
        let root = tempfile::tempdir().unwrap();
        let pool = DirPool::new(Some(root.path()), 4).unwrap();
        let dir = pool.take(Some(64 << 10)).unwrap();
        write_files(&dir, &[file("in/a", &[1; 8192], None)], Some(64 << 10)).unwrap();
        assert!(dir.is_capped());
        let path = dir.path().to_path_buf();
        assert_eq!(std::fs::read(path.join("in/a")).unwrap().len(), 8192);
        let err = std::fs::write(path.join("big"), vec![0u8; 128 << 10]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(mounted(&path), "not mounted");
        // With files: not kept; detached and removed.
        drop(pool.recycle(dir).expect("not empty: not kept"));
        assert!(!path.exists());
        assert!(!mounted(&path), "still mounted");

        // Empty: kept mounted, and resized for a job with another cap.
        let dir = pool.take(Some(64 << 10)).unwrap();
        let path = dir.path().to_path_buf();
        assert!(pool.recycle(dir).is_none());
        assert!(mounted(&path));
        let dir = pool.take(Some(256 << 10)).unwrap();
        assert_eq!(dir.path(), path, "reused");
        std::fs::write(path.join("big"), vec![0u8; 128 << 10]).expect("fits the new size");
        let err = std::fs::write(path.join("bigger"), vec![0u8; 256 << 10]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        std::fs::remove_file(path.join("big")).unwrap();
        std::fs::remove_file(path.join("bigger")).unwrap();
        assert!(pool.recycle(dir).is_none(), "emptied: kept");

        // Input files past the cap are the job's fault.
        let dir = pool.take(Some(64 << 10)).unwrap();
        let e = write_files(&dir, &[file("x", &[1; 256 << 10], None)], Some(64 << 10))
            .expect_err("must not fit");
        assert!(
            matches!(&e, InputDirError::BadFile { reason, .. } if reason.contains("disk_bytes")),
            "{e}"
        );
        drop(dir);
        let parent = pool.parent().to_path_buf();
        drop(pool);
        assert!(!mounted(&path), "the pool's tmpfs outlives it");
        assert!(!parent.exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    /// Needs root (CAP_SYS_ADMIN), as the worker has in production.
    #[test]
    #[cfg_attr(
        not(feature = "root-tests"),
        ignore = "root tier: mounts a tmpfs; run with --features root-tests as root (scripts/test.sh does)"
    )]
    fn a_new_pool_removes_what_a_worker_that_is_gone_left_mounted() {
        require_root();
        use runtime_core::owner::Owner;
        let root = tempfile::tempdir().unwrap();
        let me = Owner::current().unwrap();
        // A worker that is gone: this pid with a later start time names no running process.
        let gone = root.path().join(format!(
            "{PARENT_PREFIX}{}.Ab12Cd",
            Owner::new(me.pid(), me.start_time() + 1)
        ));
        let live = root.path().join(format!("{PARENT_PREFIX}{me}.Ef34Gh"));
        let unnamed = root.path().join(format!("{PARENT_PREFIX}Ij56Kl"));
        for parent in [&gone, &live, &unnamed] {
            std::fs::create_dir_all(parent.join("job-0")).unwrap();
            std::fs::create_dir_all(parent.join("job-1")).unwrap();
        }
        let tmpfs = gone.join("job-0");
        assert!(mount_tmpfs(&tmpfs, 1 << 20, false).unwrap());
        std::fs::write(tmpfs.join("left"), b"x").unwrap();
        std::fs::write(gone.join("job-1/left"), b"x").unwrap();
        assert!(mounted(&tmpfs));

        let pool = DirPool::new(Some(root.path()), 2).unwrap();
        assert!(
            !gone.exists(),
            "the parent of a worker that is gone was left"
        );
        assert!(!mounted(&tmpfs), "its tmpfs is still mounted");
        assert!(
            live.join("job-0").is_dir(),
            "a live worker's parent was touched"
        );
        assert!(
            unnamed.join("job-0").is_dir(),
            "a parent without an owner was touched"
        );
        // The new pool's own parent names this process, for a later pool's cleanup.
        let name = pool
            .parent()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let (owner, _) = Owner::parse_prefix(name.strip_prefix(PARENT_PREFIX).unwrap()).unwrap();
        assert_eq!(owner, me, "{name}");
    }

    /// The tests that mount a tmpfs need root (CAP_SYS_ADMIN), as the worker has in production.
    fn require_root() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() == 0 };
        assert!(
            root,
            "this test needs root (CAP_SYS_ADMIN) to mount a tmpfs; run it as root"
        );
    }

    /// Whether something is mounted on `path` (`/proc/self/mountinfo`).
    fn mounted(path: &Path) -> bool {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&format!(" {} ", path.display()))
    }
}
