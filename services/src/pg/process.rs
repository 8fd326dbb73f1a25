//! Child processes of the embedded server, supervised from a dedicated thread.
//!
//! Every child (initdb, postgres) is forked by its own long-lived std thread which then waits
//! for it. The child asks for `PR_SET_PDEATHSIG` = SIGQUIT, and Linux delivers that signal when
//! the *thread* that forked it exits — so the forking thread must live exactly as long as the
//! child; a tokio blocking thread or a test thread could exit while the server still runs. When
//! the nekton process dies every thread dies, and the server gets SIGQUIT (immediate shutdown).
//!
//! The waiting thread first waits without reaping (`waitid(WNOWAIT)`), then reaps while holding
//! the same lock that [`Supervised::signal`] holds, so a signal can never reach a recycled pid.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use runtime_core::owner::Owner;
use tokio::sync::{oneshot, watch};

/// How a supervised child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exited {
    pub success: bool,
    pub description: String,
}

impl Exited {
    fn from_status(status: ExitStatus) -> Self {
        let description = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(s) => format!("killed by {s}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            _ => status.to_string(),
        };
        Exited {
            success: status.success(),
            description,
        }
    }
}

#[derive(Default)]
struct Shared {
    exited: Mutex<Option<Exited>>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Exited>> {
        self.exited.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A child process forked and reaped by a dedicated thread.
pub(crate) struct Supervised {
    pid: Pid,
    binary: PathBuf,
    shared: Arc<Shared>,
    exit_rx: watch::Receiver<Option<Exited>>,
}

impl Supervised {
    /// Spawns `cmd` from a new thread that lives until the child has exited. The child gets
    /// `PR_SET_PDEATHSIG` = SIGQUIT and its own process group (a terminal's Ctrl-C reaches nekton,
    /// which then stops the server in order, not the server directly).
    pub(crate) async fn spawn(mut cmd: Command, binary: &Path) -> Result<Self, io::Error> {
        let parent = std::process::id();
        cmd.process_group(0);
        // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
        // functions may be called: it makes two raw syscalls (prctl, getppid) and builds an
        // io::Error from an errno, which does not allocate. std runs pre_exec closures after it
        // has applied uid/gid, so the credential change cannot clear the death signal.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGQUIT).map_err(io::Error::from)?;
                // The parent may have died between fork and prctl: then no signal would come.
                if std::os::unix::process::parent_id() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }

        let shared = Arc::new(Shared::default());
        let (exit_tx, exit_rx) = watch::channel(None);
        let (spawned_tx, spawned_rx) = oneshot::channel::<io::Result<u32>>();
        let thread_shared = Arc::clone(&shared);
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::thread::Builder::new()
            .name(format!("pg-{name}"))
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = spawned_tx.send(Err(e));
                        return;
                    }
                };
                let raw = child.id();
                let _ = spawned_tx.send(Ok(raw));
                if let Ok(pid) = i32::try_from(raw) {
                    while let Err(Errno::EINTR) = waitid(
                        Id::Pid(Pid::from_raw(pid)),
                        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
                    ) {}
                }
                let mut guard = thread_shared.lock();
                let exited = match child.wait() {
                    Ok(status) => Exited::from_status(status),
                    Err(e) => Exited {
                        success: false,
                        description: format!("wait failed: {e}"),
                    },
                };
                *guard = Some(exited.clone());
                drop(guard);
                thread_shared.cv.notify_all();
                let _ = exit_tx.send(Some(exited));
            })?;

        let raw = spawned_rx
            .await
            .map_err(|_| io::Error::other("the process-supervising thread died"))??;
        let pid = i32::try_from(raw).map_err(|_| io::Error::other("pid out of range"))?;
        Ok(Supervised {
            pid: Pid::from_raw(pid),
            binary: binary.to_path_buf(),
            shared,
            exit_rx,
        })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// How the child ended, if it has.
    pub(crate) fn exited(&self) -> Option<Exited> {
        self.shared.lock().clone()
    }

    /// Sends `sig` unless the child has already been reaped. Returns whether it was sent.
    pub(crate) fn signal(&self, sig: Signal) -> bool {
        let guard = self.shared.lock();
        if guard.is_some() {
            return false;
        }
        let sent = kill(self.pid, sig).is_ok();
        drop(guard);
        sent
    }

    /// Waits for the child to end.
    pub(crate) async fn wait(&self) -> Exited {
        let mut rx = self.exit_rx.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(|| self.lost()),
            Err(_) => self.exited().unwrap_or_else(|| self.lost()),
        }
    }

    /// A future, independent of `self`, that resolves with how the child ended.
    pub(crate) fn exit_watcher(
        &self,
    ) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.exit_rx.clone();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), |e| e.description.clone()),
                Err(_) => "its supervising thread ended".to_string(),
            }
        }
    }

    /// Waits at most `timeout` for the child to end.
    pub(crate) async fn wait_timeout(&self, timeout: Duration) -> Option<Exited> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }

    /// Blocks the calling thread at most `timeout` for the child to end (for `Drop`, atexit).
    pub(crate) fn wait_blocking(&self, timeout: Duration) -> Option<Exited> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.lock();
        while guard.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            guard = match self.shared.cv.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        guard.clone()
    }

    /// SIGQUIT (immediate shutdown) and a bounded blocking wait; SIGKILL if that is not enough.
    pub(crate) fn kill_blocking(&self) {
        if self.signal(Signal::SIGQUIT) && self.wait_blocking(Duration::from_secs(5)).is_none() {
            self.signal(Signal::SIGKILL);
            self.wait_blocking(Duration::from_secs(5));
        }
    }

    fn lost(&self) -> Exited {
        Exited {
            success: false,
            description: "supervising thread ended without an exit status".into(),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.exited().is_none() {
            tracing::warn!(pid = self.pid(), binary = %self.binary.display(),
                "stopping PostgreSQL child process (SIGQUIT) on drop");
            self.kill_blocking();
        }
    }
}

/// Whether `pid` names a live (not zombie) process.
#[cfg(test)]
pub(crate) fn is_alive(pid: i32) -> bool {
    owner_of(pid).is_some()
}

/// The identity (pid and start time) of the live, not zombie, process `pid`.
pub(crate) fn owner_of(pid: i32) -> Option<Owner> {
    u32::try_from(pid).ok().and_then(Owner::of)
}

/// Whether `owner` is a live postmaster whose working directory is `data_dir` (postgres changes
/// into its data directory at startup, so this tells it from a recycled pid). `started` is the
/// start time the lock file records (line 3, whole seconds since the epoch): a process that
/// started later than that (2 s of slack for rounding) took a recycled pid.
pub(crate) fn is_postmaster_of(owner: Owner, started: Option<SystemTime>, data_dir: &Path) -> bool {
    if !owner.is_alive() {
        return false;
    }
    if let Some(recorded) = started
        && owner
            .started_at()
            .is_ok_and(|t| t > recorded + Duration::from_secs(2))
    {
        return false;
    }
    let pid = owner.pid();
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => {
            let want = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
            cwd == want
        }
        // Not allowed to look (another user, no root): judge by the command name.
        Err(_) => std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                c.split(|b| *b == 0)
                    .next()
                    .is_some_and(|a| a.ends_with(b"postgres"))
            })
            .unwrap_or(false),
    }
}

/// Polls until the process `owner` names is gone (a later process on the same pid does not
/// count) or `timeout` passes. Returns whether it is gone.
pub(crate) async fn wait_owner_gone(owner: Owner, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !owner.is_alive() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `pid` is gone or `timeout` passes. Returns whether it is gone.
#[cfg(test)]
pub(crate) async fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last lines a log file received after byte `from` (at most ~8 KiB, 40 lines).
pub(crate) fn log_tail(path: &Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX_BYTES: u64 = 8 * 1024;
    const MAX_LINES: usize = 40;
    let Ok(mut file) = std::fs::File::open(path) else {
        return "(log file missing)".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.min(len).max(len.saturating_sub(MAX_BYTES));
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return "(log file unreadable)".into();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    // A cut in the middle of a line: drop the fragment.
    if start > from && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(MAX_LINES);
    let tail = lines[skip..].join("\n");
    if tail.trim().is_empty() {
        "(log is empty)".into()
    } else {
        tail
    }
}
