//! The Linux container backend (work in progress: the public API only).

mod rootfs;
mod run;
mod spawn;
mod sys;
mod users;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use crate::image::ImageService;
use crate::{Backend, ExecReport, ExecRequest, JobIo, Program};

/// Configuration of a [`ContainerBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Root for per-job dirs (`<state_dir>/jobs/<job_id>/`), created 0700 if missing.
    pub state_dir: PathBuf,
    /// Size cap of each job's writable layer (a tmpfs holding upper/work dirs). Default 1 GiB.
    pub scratch_bytes: u64,
    /// Size of /dev/shm. Default 64 MiB.
    pub shm_bytes: u64,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/nekton/containers"),
            scratch_bytes: 1 << 30,
            shm_bytes: 64 << 20,
        }
    }
}

/// Why a [`ContainerBackend`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A host prerequisite is missing; the text names it and how to fix it.
    #[error("container backend prerequisite missing: {0}")]
    Prerequisite(String),
    /// The state directory could not be prepared.
    #[error("container state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spawner thread could not be started.
    #[error("cannot start the container spawner thread: {0}")]
    Spawner(#[source] std::io::Error),
}

/// Capabilities a job keeps (bounding set; effective and permitted when it runs as uid 0):
/// Docker's default set without `NET_RAW` and `MKNOD`.
pub(crate) const CAP_KEEP: u64 = (1 << 0) // CHOWN
    | (1 << 1) // DAC_OVERRIDE
    | (1 << 3) // FOWNER
    | (1 << 4) // FSETID
    | (1 << 5) // KILL
    | (1 << 6) // SETGID
    | (1 << 7) // SETUID
    | (1 << 8) // SETPCAP
    | (1 << 10) // NET_BIND_SERVICE
    | (1 << 18) // SYS_CHROOT
    | (1 << 29) // AUDIT_WRITE
    | (1 << 31); // SETFCAP

pub(crate) struct Shared {
    pub config: ContainerConfig,
    pub images: ImageService,
    pub spawner: spawn::Spawner,
    pub jobs_dir: PathBuf,
    /// `<pid>.<start time>` of this process: the prefix of its job directories.
    pub tag: String,
    pub seq: AtomicU64,
    pub worker_pid: libc::pid_t,
    pub cap_last: u32,
}

/// Runs [`Program::Image`] jobs in Linux containers. See the [module docs](self).
pub struct ContainerBackend {
    shared: Shared,
}

impl std::fmt::Debug for ContainerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerBackend")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn prerequisite(msg: impl Into<String>) -> ContainerError {
    ContainerError::Prerequisite(msg.into())
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), in clock ticks since boot.
fn start_time(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn check_prerequisites(state_dir: &std::path::Path) -> Result<u32, ContainerError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(prerequisite(
            "the container backend must run as root (uid 0): it creates namespaces and mounts; \
             run the worker as root or disable the container backend",
        ));
    }
    match caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    ) {
        Ok(true) => {}
        _ => {
            return Err(prerequisite(
                "CAP_SYS_ADMIN is not in the worker's effective capabilities: run the worker as \
                 real root (for Docker/Kubernetes: --privileged) ",
            ));
        }
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| prerequisite(format!("cannot read /proc/filesystems ({e}): mount /proc")))?;
    for (fs, fix) in [
        ("overlay", "load the module with `modprobe overlay`"),
        ("tmpfs", "build the kernel with CONFIG_TMPFS"),
        ("proc", "build the kernel with CONFIG_PROC_FS"),
        ("sysfs", "build the kernel with CONFIG_SYSFS"),
        ("devpts", "build the kernel with CONFIG_UNIX98_PTYS"),
    ] {
        let present = filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some(fs));
        if !present {
            return Err(prerequisite(format!(
                "the `{fs}` filesystem is not in /proc/filesystems: {fix}"
            )));
        }
    }
    // The new mount API with overlayfs' `lowerdir+` (Linux 6.8+), openat2 (5.6+), pidfd (5.3+).
    let ctx = sys::fsopen(c"overlay").map_err(|e| {
        prerequisite(format!(
            "fsopen(\"overlay\") failed ({}): the container backend needs Linux 6.8 or newer",
            e.desc()
        ))
    })?;
    let probe = std::ffi::CString::new(state_dir.as_os_str().as_encoded_bytes())
        .map_err(|_| prerequisite("state_dir contains a NUL byte"))?;
    sys::fsconfig_str(ctx.as_fd(), c"lowerdir+", &probe).map_err(|e| {
        prerequisite(format!(
            "overlayfs refused the `lowerdir+` option ({}): the container backend needs Linux \
             6.8 or newer",
            e.desc()
        ))
    })?;
    drop(ctx);
    sys::openat2(
        rustix_cwd(),
        c".",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        sys::RESOLVE_BENEATH,
    )
    .map_err(|e| {
        prerequisite(format!(
            "openat2 is not available ({}): the container backend needs Linux 6.8 or newer",
            e.desc()
        ))
    })?;
    sys::pidfd_open(std::process::id() as libc::pid_t).map_err(|e| {
        prerequisite(format!(
            "pidfd_open is not available ({}): the container backend needs Linux 6.8 or newer",
            e.desc()
        ))
    })?;
    let cap_last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&n| n < 64)
        .ok_or_else(|| prerequisite("cannot read /proc/sys/kernel/cap_last_cap: mount /proc"))?;
    Ok(cap_last)
}

fn rustix_cwd() -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a valid "descriptor" for *at calls for the life of the process.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// Removes the job directories of dead processes (a crashed predecessor). Their mounts lived
/// in the jobs' own mount namespaces, which died with the jobs, so they are empty directories;
/// one that is a mount point in *our* namespace is left alone (and logged).
fn remove_stale_job_dirs(jobs_dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent_dev = std::fs::metadata(jobs_dir)?.dev();
    for entry in std::fs::read_dir(jobs_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let mut parts = name.splitn(3, '.');
        let live = match (parts.next(), parts.next()) {
            (Some(pid), Some(start)) => {
                pid.bytes().all(|b| b.is_ascii_digit())
                    && start_time(pid).is_some_and(|t| Some(t) == start.parse().ok())
            }
            _ => false,
        };
        if live {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && meta.dev() != parent_dev {
            tracing::warn!(path = %path.display(), "stale job directory is a mount point; left alone");
            continue;
        }
        let r = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match r {
            Ok(()) => tracing::info!(path = %path.display(), "removed a stale job directory"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale job directory")
            }
        }
    }
    Ok(())
}

impl ContainerBackend {
    /// Checks prerequisites (root/CAP_SYS_ADMIN, overlayfs in /proc/filesystems, ...) with an
    /// error naming what is missing and how to fix it; creates `state_dir`; removes leftovers of a
    /// previous (crashed) process.
    pub fn new(config: ContainerConfig, images: ImageService) -> Result<Self, ContainerError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let state_err = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| ContainerError::StateDir { path, source }
        };
        if config.scratch_bytes == 0 || config.shm_bytes == 0 {
            return Err(prerequisite(
                "scratch_bytes and shm_bytes must be > 0 (a tmpfs with size=0 is unlimited)",
            ));
        }
        let jobs_dir = config.state_dir.join("jobs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&jobs_dir)
            .map_err(state_err(&jobs_dir))?;
        for d in [&config.state_dir, &jobs_dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(state_err(d))?;
        }
        let cap_last = check_prerequisites(&jobs_dir)?;
        remove_stale_job_dirs(&jobs_dir).map_err(state_err(&jobs_dir))?;
        let pid = std::process::id();
        let start = start_time(&pid.to_string()).unwrap_or(0);
        let spawner = spawn::Spawner::start().map_err(ContainerError::Spawner)?;
        Ok(Self {
            shared: Shared {
                config,
                images,
                spawner,
                jobs_dir,
                tag: format!("{pid}.{start}"),
                seq: AtomicU64::new(0),
                worker_pid: pid as libc::pid_t,
                cap_last,
            },
        })
    }
}

#[async_trait::async_trait]
impl Backend for ContainerBackend {
    fn name(&self) -> &'static str {
        "container"
    }

    fn accepts(&self, program: &Program) -> bool {
        matches!(program, Program::Image { .. })
    }

    async fn run(&self, request: ExecRequest, io: JobIo) -> ExecReport {
        run::run(&self.shared, request, io).await
    }
}
