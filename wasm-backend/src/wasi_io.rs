//! The guest's I/O: stdout/stderr streamed live into the job's [`OutputSink`], and the per-job
//! root directory preopened read-write at the guest's `/`.
//!
//! # The job's filesystem
//!
//! WASI programs (and the official wasi-testsuite, which runtimes run with `--dir <root>::/`)
//! expect one read-write directory preopened as `/`. Every job gets exactly that: a fresh host
//! directory holding its `files` (empty when there are none), preopened as the first and only
//! preopen (fd 3). wasmtime-wasi resolves every guest path inside it with cap-std, so `..`,
//! absolute paths and symlinks (even ones the guest creates itself) cannot reach the host. The
//! directory is removed when the job ends: nothing a job wrote outlives it.
//!
//! ## The size cap (`limits.disk_bytes`)
//!
//! wasmtime-wasi has no hook to count or refuse writes, and cap-std offers no quota, so the cap
//! is the kernel's: when the job has a `disk_bytes` limit, its directory is a tmpfs mounted with
//! `size=<disk_bytes>` (`nosuid,nodev,noexec`, mode 0700). Writes past it fail with `ENOSPC`
//! inside the guest (errno 51, `nospc`), the job's own input files count against it, and the
//! mount is detached (`umount2(MNT_DETACH)`) when the job ends, before the directory is removed.
//! Alternatives weighed: a wrapper filesystem in the WASI host (would need to re-implement
//! wasmtime-wasi's preview-1 filesystem to see every write, fallocate and truncate), a loop
//! device or an XFS project quota (far costlier per job, and need a particular host
//! filesystem). A tmpfs costs one `mount` and one `umount` per job (tens of µs, measured in
//! `benches/hello.rs`), and its pages are RAM: a job holds up to `disk_bytes` of memory besides
//! its linear memory.
//!
//! Mounting needs `CAP_SYS_ADMIN` (the worker runs as root in production). Without it (a
//! developer running the worker as a plain user) the directory is a plain directory on the
//! scratch filesystem and **the cap is not enforced**; the backend logs that once, at `warn`.
//!
//! WASI preview 1 writes go through a preview 2 [`OutputStream`]: `check_write` (a permit),
//! `write` (must not block), `flush`, and `ready` (wait until the stream can take more). Here
//! `write` starts sending the bytes to the sink and `ready` waits for the send to finish, so every
//! `fd_write` returns only once its bytes are in the pipeline (backpressure from a slow consumer
//! reaches the guest, and nothing is buffered until the end). When the sink reports the cap, the
//! stream fails with a trap carrying [`OutputLimitExceeded`], which stops the guest.

use std::future::Future;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use runtime_core::{InputFile, OutputLimitExceeded, OutputSink, Stream};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Largest write a stream accepts at once (WASI p1 hands over at most 4 KiB per call anyway).
const WRITE_PERMIT: usize = 64 * 1024;

type SendFuture = Pin<Box<dyn Future<Output = Result<(), OutputLimitExceeded>> + Send>>;

fn send(sink: &OutputSink, stream: Stream, data: Bytes) -> SendFuture {
    let sink = sink.clone();
    Box::pin(async move { sink.write(stream, &data).await })
}

fn limit_trap(e: OutputLimitExceeded) -> StreamError {
    StreamError::Trap(wasmtime::Error::new(e))
}

/// One of the job's output streams, as WASI sees it.
#[derive(Clone)]
pub(crate) struct SinkOutput {
    sink: OutputSink,
    stream: Stream,
}

impl SinkOutput {
    pub(crate) fn new(sink: OutputSink, stream: Stream) -> Self {
        Self { sink, stream }
    }
}

impl IsTerminal for SinkOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SinkOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(SinkStream {
            sink: self.sink.clone(),
            stream: self.stream,
            state: State::Idle,
        })
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(SinkAsyncWrite {
            sink: self.sink.clone(),
            stream: self.stream,
            pending: Mutex::new(None),
        })
    }
}

enum State {
    /// Ready for a write.
    Idle,
    /// Bytes on their way to the sink. The future is kept here (not in `ready`) so that a `ready`
    /// dropped half-way (e.g. by `poll_oneoff` returning for another event) loses nothing.
    Sending(SendFuture),
    /// The cap was reached: every further operation traps.
    Failed(OutputLimitExceeded),
}

struct SinkStream {
    sink: OutputSink,
    stream: Stream,
    state: State,
}

impl OutputStream for SinkStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match &self.state {
            State::Failed(e) => Err(limit_trap(*e)),
            State::Sending(_) => Err(StreamError::trap(
                "write without a permit: the previous write is still in flight",
            )),
            State::Idle if bytes.is_empty() => Ok(()),
            State::Idle => {
                self.state = State::Sending(send(&self.sink, self.stream, bytes));
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Completion is awaited by `ready`, which WASI calls after every flush.
        match &self.state {
            State::Failed(e) => Err(limit_trap(*e)),
            _ => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match &self.state {
            State::Idle => Ok(WRITE_PERMIT),
            State::Sending(_) => Ok(0),
            State::Failed(e) => Err(limit_trap(*e)),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for SinkStream {
    async fn ready(&mut self) {
        if let State::Sending(fut) = &mut self.state {
            self.state = match fut.as_mut().await {
                Ok(()) => State::Idle,
                Err(e) => State::Failed(e),
            };
        }
    }
}

/// The same stream as a tokio [`AsyncWrite`] (used by WASI preview 3 paths; preview 1 uses
/// [`SinkStream`]).
struct SinkAsyncWrite {
    sink: OutputSink,
    stream: Stream,
    /// The write in flight and the length it reports when done. A `Mutex` only to be `Sync`; it
    /// is reached through `&mut self`, never contended.
    pending: Mutex<Option<(SendFuture, usize)>>,
}

impl AsyncWrite for SinkAsyncWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let pending = this
            .pending
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (fut, len) = match pending {
            Some(in_flight) => in_flight,
            None => pending.insert((
                send(&this.sink, this.stream, Bytes::copy_from_slice(buf)),
                buf.len(),
            )),
        };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                let len = *len;
                *pending = None;
                Poll::Ready(result.map(|()| len).map_err(io::Error::other))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Why the input directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputDirError {
    /// The job's file list is unacceptable (the job's fault: `spec_error`).
    #[error("input file {path:?}: {reason}")]
    BadFile { path: String, reason: String },
    /// The host could not create the directory or write a file (`internal_error`).
    #[error("cannot prepare the input directory: {0}")]
    Host(String),
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

/// A job's root directory (see the [module docs](self)): removed, and first unmounted when it is a
/// capped tmpfs, on drop.
pub(crate) struct JobDir {
    /// True when `dir` is a tmpfs mount point this value must detach.
    mounted: bool,
    /// Declared after `mounted` and dropped after [`JobDir::drop`] ran: the mount is gone by the
    /// time `TempDir` removes the (then empty) mount point.
    dir: tempfile::TempDir,
}

impl JobDir {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// True if writes are capped (the directory is a tmpfs of the job's `disk_bytes`). Dropping a
    /// capped directory is cheap whatever the job wrote: the detached mount takes its contents
    /// with it, and only the empty mount point is removed.
    pub(crate) fn is_capped(&self) -> bool {
        self.mounted
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        if let Err(e) = umount_detach(self.dir.path()) {
            tracing::warn!(path = %self.dir.path().display(), error = %e,
                "cannot unmount a wasm job's directory; it stays mounted until the host reboots");
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

/// Mounts a tmpfs of `size` bytes on `path`. `Ok(false)`: not permitted (no `CAP_SYS_ADMIN`).
fn mount_tmpfs(path: &Path, size: u64) -> io::Result<bool> {
    let target = c_path(path)?;
    let options = std::ffi::CString::new(format!("size={size},mode=0700"))
        .map_err(|_| io::Error::other("tmpfs options contain a NUL byte"))?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; tmpfs takes
    // its options as such a string.
    let rc = unsafe {
        libc::mount(
            c"nekton-wasm-job".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
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

/// Creates a fresh directory under `root` (the system temp dir when `None`) holding the job's input
/// files, a tmpfs of `disk_bytes` when given and mounting is permitted. Blocking: call it on a
/// blocking thread. The directory is removed when the returned handle is dropped.
pub(crate) fn prepare_job_dir(
    root: Option<&Path>,
    files: &[InputFile],
    disk_bytes: Option<u64>,
) -> Result<JobDir, InputDirError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let mut builder = tempfile::Builder::new();
    builder.prefix("nekton-wasm-job-");
    let dir = match root {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .map_err(|e| InputDirError::Host(format!("cannot create a job directory: {e}")))?;
    let mut mounted = false;
    if let Some(size) = disk_bytes {
        match mount_tmpfs(dir.path(), size) {
            Ok(true) => mounted = true,
            Ok(false) => warn_uncapped("mount(2) was refused with EPERM/EACCES"),
            Err(e) => {
                return Err(InputDirError::Host(format!(
                    "cannot mount a {size}-byte tmpfs on {}: {e}",
                    dir.path().display()
                )));
            }
        }
    }
    let dir = JobDir { mounted, dir };

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
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let files = vec![
            InputFile {
                path: "in/data.txt".into(),
                content: b"hi".to_vec(),
                mode: Some(0o4755),
            },
            InputFile {
                path: "plain".into(),
                content: vec![],
                mode: None,
            },
        ];
        let dir = prepare_job_dir(Some(root.path()), &files, None).unwrap();
        let path = dir.path().to_path_buf();
        assert_eq!(std::fs::read(path.join("in/data.txt")).unwrap(), b"hi");
        let mode = std::fs::metadata(path.join("in/data.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o755);
        let mode = std::fs::metadata(path.join("plain"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o644);
        drop(dir);
        assert!(!path.exists());

        let clash = vec![
            InputFile {
                path: "a".into(),
                content: vec![],
                mode: None,
            },
            InputFile {
                path: "a/b".into(),
                content: vec![],
                mode: None,
            },
        ];
        assert!(matches!(
            prepare_job_dir(Some(root.path()), &clash, None),
            Err(InputDirError::BadFile { .. })
        ));
    }

    /// Needs root (CAP_SYS_ADMIN), as the worker has in production.
    #[test]
    fn a_disk_cap_is_a_tmpfs_that_refuses_writes_past_it_and_is_unmounted_on_drop() {
        assert!(
            is_root(),
            "this test needs root (CAP_SYS_ADMIN) to mount a tmpfs; run it as root"
        );
        let root = tempfile::tempdir().unwrap();
        let files = vec![InputFile {
            path: "in/a".into(),
            content: vec![1; 8192],
            mode: None,
        }];
        let dir = prepare_job_dir(Some(root.path()), &files, Some(64 << 10)).unwrap();
        assert!(dir.is_capped());
        let path = dir.path().to_path_buf();
        assert_eq!(std::fs::read(path.join("in/a")).unwrap().len(), 8192);
        let err = std::fs::write(path.join("big"), vec![0u8; 128 << 10]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(mounts.contains(path.to_str().unwrap()), "not mounted");
        drop(dir);
        assert!(!path.exists());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(path.to_str().unwrap()), "still mounted");

        // Input files past the cap are the job's fault.
        let too_big = vec![InputFile {
            path: "x".into(),
            content: vec![1; 256 << 10],
            mode: None,
        }];
        let e = prepare_job_dir(Some(root.path()), &too_big, Some(64 << 10))
            .err()
            .expect("must not fit");
        assert!(
            matches!(&e, InputDirError::BadFile { reason, .. } if reason.contains("disk_bytes")),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
}
