//! The worker side of one container job: planning (argv, env, user, paths — all validated and
//! turned into C strings before the init is started), the pipes, the spawn request, live output,
//! limits, cancellation, and the verdict.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::cgroup::JobCgroup;
use super::chain::{self, Kept, ScratchFd};
use super::protocol::Status;
use super::spawn::{ChildFds, ChildSpec, FileSpec, HostIds, Spawned};
use super::userns::Range;
use super::verdict::{Facts, Stopped, verdict};
use image_store::{ImageConfig, ImageKind, ImageRecord, PullPolicy};
use runtime_core::{
    ExecReport, ExecRequest, JobIo, NetworkMode, Outcome, OutcomeReason, OutputLimitExceeded,
    OutputSink, Program, Stream, Usage,
};

/// `PATH` when neither the image nor the job sets one (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest value `fsconfig(FSCONFIG_SET_STRING)` accepts (the kernel copies at most 256 bytes).
const FSCONFIG_MAX: usize = 255;

/// Bound on the container setup (namespaces, mounts, user lookup) before the job starts.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

fn report(outcome: Outcome, usage: Usage) -> ExecReport {
    ExecReport::new(outcome, usage)
}

fn fail(reason: OutcomeReason, detail: impl Into<String>, t0: Instant) -> ExecReport {
    report(
        Outcome::with_reason(reason, detail),
        Usage {
            setup: t0.elapsed(),
            ..Usage::default()
        },
    )
}

/// The job's command line, environment and identity, decided from the request and the image
/// config (Docker's rules), validated, as C strings.
#[derive(Debug)]
pub(crate) struct Plan {
    pub argv: Vec<CString>,
    pub exec_candidates: Vec<CString>,
    pub env: Vec<CString>,
    pub home_from_passwd: bool,
    pub user: String,
    pub user_from_job: bool,
    pub workdir: String,
    pub workdir_components: Vec<CString>,
    pub files: Vec<FileSpec>,
    pub hostname: String,
}

fn cstring(s: &str, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

/// Lexically cleans an absolute path into its components (`.` dropped, `..` pops, never above
/// `/`).
fn clean_components(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The host-safe hostname of a job: the first 12 `[A-Za-z0-9-]` characters of its id.
pub(crate) fn hostname_for(job_id: &str) -> String {
    let h: String = job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(12)
        .collect();
    let h = h.trim_matches('-').to_string();
    if h.is_empty() {
        "nekton".to_string()
    } else {
        h
    }
}

pub(crate) fn plan(request: &ExecRequest, config: &ImageConfig) -> Result<Plan, String> {
    let opts = &request.container;
    // argv: entrypoint ++ cmd (Docker's rules).
    let (entrypoint, replaced) = match &opts.entrypoint {
        Some(e) => (e.clone(), true),
        None => (config.entrypoint.clone(), false),
    };
    let cmd = if !request.args.is_empty() {
        request.args.clone()
    } else if !replaced {
        config.cmd.clone()
    } else {
        Vec::new()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() || argv[0].is_empty() {
        return Err("the image has no entrypoint or cmd; give a command".to_string());
    }
    let argv_c = argv
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<Vec<_>, _>>()?;

    // Environment: the image's, overridden by the job's; PATH and HOSTNAME defaults.
    let hostname = hostname_for(&request.job_id);
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in config.env.iter().chain(request.env.iter()) {
        if k.is_empty() || k.contains('=') {
            return Err(format!("invalid environment variable name `{k}`"));
        }
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), hostname.clone()));
    }
    let home_from_passwd = !env.iter().any(|(k, _)| k == "HOME");
    let env_c = env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}"), &format!("environment variable `{k}`")))
        .collect::<Result<Vec<_>, _>>()?;

    // Where execve looks for argv[0]: execvpe's rules, with the container's PATH.
    let argv0 = &argv[0];
    let exec_candidates = if argv0.contains('/') {
        vec![argv_c[0].clone()]
    } else {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                cstring(&format!("{}/{argv0}", dir.trim_end_matches('/')), "PATH")
            })
            .collect::<Result<Vec<_>, _>>()?
    };

    // Working directory: the job's (absolute), else the image's, else `/`.
    let workdir_raw = match &opts.workdir {
        Some(w) => {
            if !w.starts_with('/') {
                return Err(format!("working directory `{w}` must be an absolute path"));
            }
            w.clone()
        }
        None => config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string()),
    };
    let comps = clean_components(&workdir_raw);
    let workdir = format!("/{}", comps.join("/"));
    let workdir_components = comps
        .iter()
        .map(|c| cstring(c, "the working directory"))
        .collect::<Result<Vec<_>, _>>()?;

    // Input files: relative, no `..`, written below the working directory.
    let mut files = Vec::with_capacity(request.files.len());
    for f in &request.files {
        let p = &f.path;
        if p.starts_with('/') {
            return Err(format!("input file `{p}`: the path must be relative"));
        }
        let comps: Vec<&str> = p
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if comps.contains(&"..") {
            return Err(format!("input file `{p}`: the path must not contain `..`"));
        }
        let Some((leaf, parents)) = comps.split_last() else {
            return Err(format!("input file `{p}`: empty path"));
        };
        files.push(FileSpec {
            display: p.clone(),
            parents: parents
                .iter()
                .map(|c| cstring(c, "an input file path"))
                .collect::<Result<_, _>>()?,
            leaf: cstring(leaf, "an input file path")?,
            content: f.content.clone(),
            mode: f.mode.unwrap_or(0o644) & 0o777,
        });
    }

    let (user, user_from_job) = match &opts.user {
        Some(u) => (u.clone(), true),
        None => (config.user.clone().unwrap_or_default(), false),
    };
    Ok(Plan {
        argv: argv_c,
        exec_candidates,
        env: env_c,
        home_from_passwd,
        user,
        user_from_job,
        workdir,
        workdir_components,
        files,
        hostname,
    })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// The lifeline: a close-on-exec stream socket pair (P2's end, the worker's end). P2 says
/// "started" on it, the worker "go" (see `protocol::FD_LIFELINE`).
fn lifeline() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (p2, worker) = std::os::unix::net::UnixStream::pair()?;
    Ok((p2.into(), worker.into()))
}

fn stdin_memfd(data: &[u8]) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::FileExt;
    let fd = nix::sys::memfd::memfd_create(
        c"nekton-stdin",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(std::io::Error::from)?;
    let file = std::fs::File::from(fd);
    // At offset 0 via pwrite: the descriptor's own offset stays at 0 for the job.
    file.write_all_at(data, 0)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file.into())
}

/// A job directory name: `<pid>.<process start time>.<seq>-<sanitised job id>`, so a restarted
/// worker can tell its predecessor's leftovers from a live process's.
fn job_dir_name(tag: &str, seq: u64, job_id: &str) -> String {
    let id: String = job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    format!("{tag}.{seq}-{id}")
}

/// Kills and reaps the container if the job's future is dropped before it finished (the task was
/// aborted): SIGKILL to the container's init ends its pid namespace; a thread then reaps the init
/// and removes the job directory.
struct Guard {
    /// The worker's end of the lifeline, open until the job has ended (P2 reads a hang-up as
    /// "the worker is gone").
    lifeline: Option<OwnedFd>,
    /// The container's init (P2) while it is unreaped: its pid cannot be reused until then.
    init: Option<libc::pid_t>,
    job_dir: Option<PathBuf>,
    cgroup: Option<std::sync::Arc<JobCgroup>>,
    /// The job's host id range: given back only once the init is reaped (no process has its ids).
    range: Option<Range>,
}

impl Guard {
    /// SIGKILL to the container's init: as its pid namespace ends, the kernel kills every other
    /// process of the job.
    fn kill(&mut self) {
        if let Some(pid) = self.init {
            // SAFETY: the init is our unreaped child (`init` is cleared when it is reaped), so its
            // pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    fn disarm(&mut self) {
        self.lifeline = None;
        self.init = None;
        self.job_dir = None;
        self.cgroup = None;
        self.range = None;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
        self.lifeline = None;
        let init = self.init.take();
        let dir = self.job_dir.take();
        let cgroup = self.cgroup.take();
        let range = self.range.take();
        if init.is_none() && dir.is_none() && cgroup.is_none() {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("nekton-reap".into())
            .spawn(move || {
                if let Some(pid) = init {
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                }
                drop(range);
                if let Some(d) = dir {
                    let _ = std::fs::remove_dir(d);
                }
                if let Some(cg) = cgroup
                    && let Err(e) = cg.remove_blocking()
                {
                    tracing::warn!(error = %e, "cannot remove an abandoned job's cgroup");
                }
            });
    }
}

#[derive(Default)]
struct Limit {
    hit: CancellationToken,
    first: Mutex<Option<OutputLimitExceeded>>,
}

async fn pump(mut rx: pipe::Receiver, stream: Stream, sink: &OutputSink, limit: &Limit) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = sink.write(stream, &buf[..n]).await {
                    let mut first = limit.first.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert(e);
                    limit.hit.cancel();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

fn check_fsconfig_path(p: &Path) -> Result<CString, String> {
    let s = p.as_os_str().as_encoded_bytes();
    if s.len() > FSCONFIG_MAX || s.contains(&b',') || s.contains(&b':') {
        return Err(format!(
            "path `{}` cannot be given to overlayfs (longer than {FSCONFIG_MAX} bytes, or it \
             contains `,` or `:`): use a shorter state_dir or image store root",
            p.display()
        ));
    }
    CString::new(s).map_err(|_| format!("path `{}` contains a NUL byte", p.display()))
}

pub(crate) async fn run(shared: &Shared, request: ExecRequest, io: JobIo) -> ExecReport {
    let t0 = Instant::now();
    let reference = match &request.program {
        Program::Image { reference } => reference.clone(),
        other => {
            return fail(
                OutcomeReason::SpecError,
                format!("the container backend runs images, not {other:?}"),
                t0,
            );
        }
    };
    if request.wasm.is_set() {
        return fail(
            OutcomeReason::SpecError,
            "`wasm` options (preopens) apply to Wasm modules and images only; this image runs as a \
             Linux container: drop `wasm`, or run a Wasm image",
            t0,
        );
    }
    // Limits this host cannot enforce refuse the job before anything is pulled.
    if let Some(why) = shared.cgroups.refuse(&request.limits) {
        return fail(OutcomeReason::SpecError, why, t0);
    }
    if request.limits.pids == Some(0) || request.limits.disk_bytes == Some(0) {
        return fail(
            OutcomeReason::SpecError,
            "limits.pids and limits.disk_bytes must be at least 1 when given",
            t0,
        );
    }
    // A run on a base sits on exactly the base's image (its record and layers, leased by the
    // base): nothing is pulled.
    let base = match chain::base_of(&request.chain, &reference) {
        Ok(b) => b,
        Err(e) => return fail(OutcomeReason::SpecError, e, t0),
    };
    let store = shared.images.store();
    let (record, lease) = match base {
        Some(kept) => (kept.record.clone(), None),
        None => {
            let pulled = tokio::select! {
                r = shared.images.pull(&reference, PullPolicy::IfNotPresent, None) => r,
                _ = io.cancel.cancelled() => {
                    return fail(OutcomeReason::Cancelled, "cancelled while the image was resolved", t0);
                }
            };
            let record: ImageRecord = match pulled {
                Ok(o) => o.record,
                Err(e) => return fail(OutcomeReason::ImageError, e.to_string(), t0),
            };
            if record.kind == ImageKind::Wasm {
                return fail(
                    OutcomeReason::SpecError,
                    format!("`{reference}` is a Wasm image: submit it with runtime auto or wasm"),
                    t0,
                );
            }
            match store.lease(&record) {
                Ok(l) => (record, Some(l)),
                Err(e) => return fail(OutcomeReason::ImageError, e.to_string(), t0),
            }
        }
    };
    let plan = match plan(&request, &record.config) {
        Ok(p) => p,
        Err(e) => return fail(OutcomeReason::SpecError, e, t0),
    };
    let workdir = plan.workdir.clone();
    let (mut report, finished) = run_planned(shared, &request, &record, plan, base, &io, t0).await;
    let Some(mut finished) = finished else {
        return report;
    };
    // Every process of the job is gone: its writable layer can no longer change.
    if !request.artifacts.patterns.is_empty() {
        match collect_artifacts(finished.scratch, workdir, request.artifacts.clone()).await {
            Ok((scratch, artifacts)) => {
                finished.scratch = scratch;
                report.artifacts = artifacts;
            }
            Err(e) => {
                report.outcome = Outcome::with_reason(OutcomeReason::InternalError, e);
                return report;
            }
        }
    }
    if request.chain.keep && finished.ran {
        // Only a run whose program ran leaves a layer worth building on (a setup failure may
        // not even have made `upper/`).
        let kept = store
            .lease(&record)
            .map_err(|e| e.to_string())
            .and_then(|lease| chain::keep(finished.scratch, record, lease, finished.ids_start));
        match kept {
            Ok(base) => report.kept = Some(base),
            Err(e) => {
                report.outcome = Outcome::with_reason(
                    OutcomeReason::InternalError,
                    format!("the run's writable layer could not be kept: {e}"),
                );
            }
        }
    }
    drop(lease);
    report
}

/// Collects `artifacts` from the run's writable layer (`upper/` of its scratch tmpfs; relative
/// patterns from the working directory) on a blocking thread; gives the descriptor back.
async fn collect_artifacts(
    scratch: ScratchFd,
    workdir: String,
    artifacts: runtime_core::Artifacts,
) -> Result<(ScratchFd, runtime_core::ArtifactReport), String> {
    let task = tokio::task::spawn_blocking(move || {
        let upper = super::sys::openat2(
            std::os::fd::AsFd::as_fd(&scratch),
            c"upper",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            super::sys::RESOLVE_TARGET,
        );
        let report = match upper {
            Ok(upper) => runtime_core::collect::collect(
                std::os::fd::AsFd::as_fd(&upper),
                workdir.trim_start_matches('/'),
                &artifacts,
            ),
            // The setup failed before the writable layer existed.
            Err(e) => runtime_core::ArtifactReport {
                files: Vec::new(),
                skipped: artifacts
                    .patterns
                    .iter()
                    .map(|p| runtime_core::SkippedArtifact {
                        path: p.clone(),
                        reason: format!("the run left no writable layer ({})", e.desc()),
                    })
                    .collect(),
            },
        };
        (scratch, report)
    });
    // The collector does not panic on job data; a failed task is a bug (or a runtime shutting
    // down), and the descriptor went with it: nothing left to keep.
    task.await
        .map_err(|e| format!("collecting the run's artifacts failed: {e}"))
}

/// What is left of a finished run for the backend: its writable layer.
struct Finished {
    /// The worker's descriptor of the run's scratch tmpfs (`upper/` is the writable layer).
    /// Readable after the job's mount namespace is gone; for a `keep` run, the detached
    /// original (the job attached a clone), still usable as a base.
    scratch: ScratchFd,
    /// Whether the job's program was executed (the container was set up completely).
    ran: bool,
    /// The first host id of the run's user namespace range (what its writable layer's ids are
    /// relative to); `None` without user namespaces.
    ids_start: Option<u32>,
}

/// A started container: its init (P2) started, the worker's ends of its pipes registered with the
/// runtime.
struct Launched {
    /// Kills and reaps the container if the job's future is dropped.
    guard: Guard,
    running: Running,
    /// The status pipe ([`super::protocol::FD_STATUS`]).
    status: pipe::Receiver,
    /// The worker's descriptor of the job's scratch tmpfs, when the run's writable layer is
    /// wanted afterwards (artifacts, `keep`).
    scratch: Option<ScratchFd>,
    cgroup: std::sync::Arc<JobCgroup>,
    attachment: Option<super::net::Attachment>,
    job_dir: PathBuf,
    ids: Option<HostIds>,
}

/// What [`supervise`] watches and consumes.
struct Running {
    init: libc::pid_t,
    /// The init's pidfd: readable once the init has exited, which a pid namespace's init does
    /// only after every other process of the namespace is gone.
    pidfd: AsyncFd<OwnedFd>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    /// The error pipe ([`super::protocol::FD_ERR`] in the children).
    errors: pipe::Receiver,
}

/// What supervising the container observed.
struct Supervised {
    stopped: Option<Stopped>,
    /// The error pipe's content (empty: the job's program was executed).
    error_report: Vec<u8>,
    /// When the error pipe closed without a message (`execve` succeeded).
    exec_at: Option<Instant>,
    /// When the init ended (every process of the job gone).
    end: Instant,
}

/// Runs a planned job: [`launch`], [`supervise`], then the bill and the [`verdict`]. Returns
/// the run's writable layer too, once the job is entirely over, if the run wants it (artifacts,
/// `keep`; `None` otherwise or if it never started).
async fn run_planned(
    shared: &Shared,
    request: &ExecRequest,
    record: &ImageRecord,
    plan: Plan,
    base: Option<&Kept>,
    io: &JobIo,
    t0: Instant,
) -> (ExecReport, Option<Finished>) {
    // A job cancelled before its start does not start. Without this check its program would be
    // started, and `supervise`'s first wait would pick at random between the cancel and the end
    // of the setup when both are ready: a short program could run to its end, output and all.
    if io.cancel.is_cancelled() {
        return (
            fail(OutcomeReason::Cancelled, "cancelled before the start", t0),
            None,
        );
    }
    let Launched {
        mut guard,
        running,
        mut status,
        scratch,
        cgroup,
        attachment,
        job_dir,
        ids,
    } = match launch(shared, request, record, plan, base, &io.cancel, t0).await {
        Ok(l) => l,
        Err(report) => return (report, None),
    };
    let supervised = supervise(shared, request, io, &mut guard, running, &cgroup).await;
    // Every process of the job is gone: its traffic counters, then its veth and address.
    let (net_rx_bytes, net_tx_bytes) = match attachment {
        Some(a) => a.teardown().await,
        None => (None, None),
    };
    let mut status_buf = Vec::new();
    let _ = status.read_to_end(&mut status_buf).await;
    let status = Status::decode(&status_buf);
    // Every process of the job is gone (the init reaped): read the bill, then kill anything that
    // escaped the pid namespace (none should) and remove the cgroup.
    let cg_usage = cgroup.usage();
    guard.disarm();
    // The bill is read: the cgroup's removal (an rmdir per hierarchy, which on v1 can wait for
    // an RCU grace period) runs after the report, in the background; `settle` waits for it, and
    // a worker that exits first leaves the cgroup to its next start's stale-cgroup cleanup.
    // On v1 the cgroup is emptied, reset and kept for a later job instead (`cgroup::recycle`).
    // The job directory (empty: the job's mount namespace, where the scratch tmpfs was attached
    // on it, is gone) is removed there too, off the job's path.
    shared.removals.send_modify(|n| *n += 1);
    let removals = shared.removals.clone();
    let job = request.job_id.clone();
    let recycler = shared.cgroups.recycler();
    let tag = shared.tag.clone();
    tokio::spawn(async move {
        let _ = std::fs::remove_dir(&job_dir);
        if let Err(e) = cgroup.release(recycler, &tag).await {
            tracing::warn!(%job, error = %e, "cannot remove the job's cgroup");
        }
        removals.send_modify(|n| *n = n.saturating_sub(1));
    });

    let exec_at = supervised.exec_at.unwrap_or(supervised.end);
    let mut usage = Usage {
        setup: exec_at.saturating_duration_since(t0),
        wall: supervised.end.saturating_duration_since(exec_at),
        net_rx_bytes,
        net_tx_bytes,
        ..Usage::default()
    };
    if let Ok(s) = &status {
        // Fallback only: the cgroup's figures cover every process of the job. ru_maxrss is
        // never used: it survives execve (the kernel folds the old mm's high-water mark into
        // the process's maxrss), so it would report the RSS of the worker it ran on.
        usage.cpu_user = s.user;
        usage.cpu_system = s.system;
        usage.disk_used_bytes = Some(s.disk_used_bytes);
    }
    if let (Some(u), Some(sy)) = (cg_usage.cpu_user, cg_usage.cpu_system) {
        usage.cpu_user = u;
        usage.cpu_system = sy;
    }
    usage.memory_peak_bytes = cg_usage.memory_peak;
    usage.pids_peak = cg_usage.pids_peak;
    usage.pids_limit_hit = cg_usage.pids_limit_hit;
    let outcome = verdict(&Facts {
        stopped: supervised.stopped,
        error_report: &supervised.error_report,
        status,
        cpu_limit: request.limits.cpu_time,
        memory_limit: request.limits.memory_bytes,
        oom_kills: cg_usage.oom_kills,
        memory_peak: cg_usage.memory_peak,
    });
    let finished = scratch.map(|scratch| Finished {
        scratch,
        ran: supervised.exec_at.is_some(),
        ids_start: ids.map(|i| i.start),
    });
    (report(outcome, usage), finished)
}

/// Prepares everything the children need (paths, pipes, the network namespace, the cgroup, the
/// job directory) and starts the container's init. An error is the job's report.
async fn launch(
    shared: &Shared,
    request: &ExecRequest,
    record: &ImageRecord,
    plan: Plan,
    base: Option<&Kept>,
    cancel: &CancellationToken,
    t0: Instant,
) -> Result<Launched, ExecReport> {
    let internal = |what: String| fail(OutcomeReason::InternalError, what, t0);
    let store = shared.images.store();
    let seq = shared
        .seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir_name = job_dir_name(&shared.tag, seq, &request.job_id);
    let job_dir = shared.jobs_dir.join(&dir_name);
    // Rootless: the job's host id range, held until the init is reaped (waits while every range is
    // in use; a cancel ends the wait).
    let range = match &shared.ranges {
        Some(ranges) => tokio::select! {
            r = ranges.take() => match r {
                Ok(r) => Some(r),
                Err(e) => return Err(internal(e)),
            },
            _ = cancel.cancelled() => {
                return Err(fail(
                    OutcomeReason::Cancelled,
                    "cancelled while waiting for a free user namespace range",
                    t0,
                ));
            }
        },
        None => None,
    };
    let ids = range.as_ref().map(|r| HostIds {
        start: r.start,
        size: r.size,
    });
    let mut lowerdirs = Vec::new();
    let mut idmapped = Vec::new();
    // A base's writable layer is the top lower layer, above the image's.
    if base.is_some() {
        match check_fsconfig_path(&job_dir.join("base/upper")) {
            Ok(c) => lowerdirs.push(c),
            Err(e) => return Err(internal(e)),
        }
    }
    for (i, l) in store.lowerdirs(record).into_iter().enumerate() {
        // Rootless: the overlay names the layer's idmapped mount P2 makes on `<job dir>/l<i>`.
        let (layer, source) = if range.is_some() {
            let name = format!("l{i}");
            let source = match CString::new(l.as_os_str().as_encoded_bytes()) {
                Ok(s) => s,
                Err(_) => return Err(internal(format!("{} contains a NUL byte", l.display()))),
            };
            (job_dir.join(&name), Some((source, name)))
        } else {
            (l, None)
        };
        match check_fsconfig_path(&layer) {
            Ok(c) => lowerdirs.push(c),
            Err(e) => return Err(internal(e)),
        }
        if let Some((source, name)) = source {
            idmapped.push((source, CString::new(name).unwrap_or_default()));
        }
    }
    let (upper, work, empty) = match (
        check_fsconfig_path(&job_dir.join("upper")),
        check_fsconfig_path(&job_dir.join("work")),
        check_fsconfig_path(&job_dir.join("empty")),
    ) {
        (Ok(u), Ok(w), Ok(e)) => (u, w, e),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(internal(e)),
    };
    let empty_lower = lowerdirs.is_empty();
    if empty_lower {
        lowerdirs.push(empty);
    }
    let Ok(job_dir_c) = CString::new(job_dir.as_os_str().as_encoded_bytes()) else {
        return Err(internal("job directory path contains a NUL byte".into()));
    };

    // The scratch tmpfs, made here as a detached mount. When the run's writable layer is wanted
    // after the job (artifacts, keep), the worker keeps a descriptor of it, readable after the
    // job's mount namespace is gone; a kept run's job gets a clone (the original stays
    // detached, usable as a base later: see `chain`), any other job the mount itself. A run
    // that wants nothing afterwards hands its only descriptor to the job: the tmpfs is freed
    // with the job's mount namespace, when its last process exits, as ever.
    let scratch_size = request
        .limits
        .disk_bytes
        .unwrap_or(shared.config.scratch_bytes)
        .to_string();
    let scratch = CString::new(scratch_size)
        .map_err(|e| e.to_string())
        .and_then(|size| super::rootfs::scratch_mount(&size));
    let scratch = match scratch {
        Ok(s) => s,
        Err(e) => return Err(internal(format!("the job's scratch tmpfs: {e}"))),
    };
    let wanted_after = request.chain.keep || !request.artifacts.patterns.is_empty();
    let (scratch, child_scratch) = if request.chain.keep {
        let child = chain::clone_detached(&scratch, "keeping a run's writable layer")
            .map_err(|(reason, e)| fail(reason, e, t0))?;
        (Some(ScratchFd::new(scratch)), child)
    } else if wanted_after {
        let child = scratch
            .try_clone()
            .map_err(|e| internal(format!("duplicating the scratch mount: {e}")))?;
        (Some(ScratchFd::new(scratch)), child)
    } else {
        (None, scratch)
    };
    let child_base = match base {
        Some(kept) => {
            let clone = chain::clone_detached(&kept.scratch, "running on a base")
                .map_err(|(reason, e)| fail(reason, e, t0))?;
            // Rootless, in another range than the build's: the base's ids shown as this range's.
            if let Some(r) = &range {
                chain::map_ids(&clone, kept, r).map_err(internal)?;
            }
            Some(clone)
        }
        None => None,
    };
    let child_userns = match range.as_ref().map(|r| r.userns.try_clone()) {
        Some(Ok(fd)) => Some(fd),
        Some(Err(e)) => return Err(internal(format!("duplicating the user namespace: {e}"))),
        None => None,
    };
    let prepared = (|| -> std::io::Result<_> {
        let (status_r, status_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (errp_r, errp_w) = pipe()?;
        let (life_r, life_w) = lifeline()?;
        // Bigger pipes mean fewer wake-ups for chatty jobs (best effort).
        for fd in [&out_r, &err_r] {
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        }
        let stdin = stdin_memfd(&request.stdin)?;
        Ok((
            (status_r, out_r, err_r, errp_r, life_w),
            ChildFds {
                status_w,
                stdout_w: out_w,
                stderr_w: err_w,
                stdin,
                err_w: errp_w,
                lifeline_r: life_r,
                scratch: child_scratch,
                base: child_base,
                userns: child_userns,
            },
        ))
    })();
    let ((status_r, out_r, err_r, errp_r, life_w), fds) = match prepared {
        Ok(p) => p,
        Err(e) => return Err(internal(format!("creating the job's pipes: {e}"))),
    };
    // `RLIMIT_CPU` is the backstop, per process, one second past the limit the worker watches on
    // the whole cgroup (`watch_cpu`). The kernel checks it against a process's tick-sampled CPU
    // time, which on a busy machine runs ahead of the cgroup's exact count: at the same value it
    // could fire first and stop a job that had used less than its limit (SIGXCPU at 893 ms of
    // exact usage under a 1 s limit was seen).
    let cpu_secs = request
        .limits
        .cpu_time
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .map(|s| s.max(1) + 1);
    // Bridge jobs: a network namespace with eth0 on the bridge, complete before the init starts.
    let allow = request.container.network_allow.as_deref();
    if let Some(allow) = allow {
        if request.container.network != NetworkMode::Bridge {
            return Err(fail(
                OutcomeReason::SpecError,
                "an egress allow-list applies to bridge jobs only; this job has no network",
                t0,
            ));
        }
        if let Some(d) = allow
            .iter()
            .find(|d| !matches!(d.net, runtime_core::egress::IpNet::V4(_)))
        {
            return Err(fail(
                OutcomeReason::SpecError,
                format!("egress destination {d}: bridge jobs have no IPv6; list IPv4 networks"),
                t0,
            ));
        }
    }
    let attachment = match (request.container.network, &shared.network) {
        (NetworkMode::None, _) => None,
        (NetworkMode::Bridge, Err(reason)) => {
            return Err(fail(OutcomeReason::SpecError, reason.clone(), t0));
        }
        (NetworkMode::Bridge, Ok(net)) => {
            let rootless = range.is_some();
            let pool = shared.bridge_pool.as_ref();
            // A prepared attachment (see net::pool) if one is ready, made the job's there;
            // else one made on the path — if that fails (a full subnet), one the pool prepared
            // meanwhile (or is preparing: it may hold the last address) still serves.
            let pooled = match pool {
                Some(p) => p.claim(allow).await,
                None => None,
            };
            let attached = match pooled {
                Some(claimed) => claimed,
                None => match net.prepare(rootless, false).await {
                    Ok(p) => p.claim(allow, false).await,
                    Err(e) => match pool {
                        Some(p) => p.claim_prepared_soon(allow).await.unwrap_or(Err(e)),
                        None => Err(e),
                    },
                },
            };
            match attached {
                Ok(a) => Some((a, net.resolv_conf().to_vec())),
                Err(e) => return Err(internal(format!("bridge network setup: {e}"))),
            }
        }
    };
    let mut hosts = format!(
        "127.0.0.1\tlocalhost {h}\n::1\tlocalhost ip6-localhost ip6-loopback {h}\n",
        h = plan.hostname
    );
    let mut netns = None;
    let mut netns_prepared = false;
    if attachment.is_none()
        && let Some(pool) = &shared.netns_pool
    {
        netns = pool.take();
        netns_prepared = netns.is_some();
    }
    if let Some((a, _)) = &attachment {
        hosts.push_str(&format!("{}\t{}\n", a.addr, plan.hostname));
        // `lo` is up and the rootless sysctl written (Network::prepare).
        netns_prepared = true;
        match a.netns().map(|fd| fd.try_clone()) {
            Some(Ok(fd)) => netns = Some(fd),
            Some(Err(e)) => {
                return Err(internal(format!("duplicating the network namespace: {e}")));
            }
            None => return Err(internal("the job's network namespace is missing".into())),
        }
    }
    let Ok(workdir_c) = CString::new(plan.workdir.clone()) else {
        return Err(fail(
            OutcomeReason::SpecError,
            "working directory contains a NUL byte",
            t0,
        ));
    };
    let mut spec = Box::new(ChildSpec {
        fds,
        job_dir: job_dir_c,
        upper,
        work,
        lowerdirs,
        idmapped,
        ids,
        empty_lower,
        has_base: base.is_some(),
        shm_size: CString::new(shared.config.shm_bytes.to_string()).unwrap_or_default(),
        hostname: format!("{}\n", plan.hostname).into_bytes(),
        hosts: hosts.into_bytes(),
        resolv_conf: attachment.as_ref().map(|(_, r)| r.clone()),
        netns,
        netns_prepared,
        user: plan.user,
        user_from_job: plan.user_from_job,
        workdir: workdir_c,
        workdir_components: plan.workdir_components,
        files: plan.files,
        argv: plan.argv,
        exec_candidates: plan.exec_candidates,
        env: plan.env,
        home_from_passwd: plan.home_from_passwd,
        cpu_secs,
        cap_keep: super::CAP_KEEP,
        cap_last: shared.cap_last,
        seccomp: shared.seccomp.clone(),
        nofile: (
            shared.config.max_open_files.min(1024),
            shared.config.max_open_files,
        ),
        cgroup_procs: Vec::new(),
        cgroup2_mount: false,
        helper: shared.helper.clone(),
    });

    // The job's cgroup (memory with swap off, CPU quota, pids): the spawner puts P2 into it.
    let pids = request.limits.pids.unwrap_or(shared.config.default_pids);
    // Named like the job directory, with a process-wide sequence: several backends of one
    // process share the cgroup parent.
    let cgroup_name = job_dir_name(
        &shared.tag,
        super::cgroup::NEXT_NAME.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        &request.job_id,
    );
    let cgroup = match shared.cgroups.create(&cgroup_name, &request.limits, pids) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => return Err(internal(e)),
    };
    spec.cgroup_procs = cgroup.procs.clone();
    // v2: the job sees its cgroup, read-only.
    spec.cgroup2_mount = cgroup.v2_dir.is_some();
    if let Err(e) = std::fs::DirBuilder::new().mode_0700().create(&job_dir) {
        let _ = cgroup.remove().await;
        return Err(internal(format!("creating {}: {e}", job_dir.display())));
    }
    let mut guard = Guard {
        lifeline: None,
        init: None,
        job_dir: Some(job_dir.clone()),
        cgroup: Some(cgroup.clone()),
        range,
    };
    let spawned: Spawned = match shared.spawner.spawn(spec, life_w).await {
        Ok(s) => s,
        Err(e) => return Err(internal(format!("starting the container: {e}"))),
    };
    guard.init = Some(spawned.pid);
    guard.lifeline = Some(spawned.lifeline);

    let wrap = |fd: OwnedFd| pipe::Receiver::from_owned_fd(fd);
    let (out_rx, err_rx, errp_rx, status_rx) =
        match (wrap(out_r), wrap(err_r), wrap(errp_r), wrap(status_r)) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            _ => {
                guard.kill();
                return Err(internal(
                    "registering the job's pipes with the runtime".into(),
                ));
            }
        };
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open (same description) until the
    // AsyncFd is dropped.
    let registered =
        unsafe { AsyncFd::register_with_interest(spawned.pidfd, tokio::io::Interest::READABLE) };
    let pidfd = match registered {
        Ok(p) => p,
        Err(e) => {
            guard.kill();
            return Err(internal(format!("registering the container pidfd: {e}")));
        }
    };
    Ok(Launched {
        guard,
        running: Running {
            init: spawned.pid,
            pidfd,
            stdout: out_rx,
            stderr: err_rx,
            errors: errp_rx,
        },
        status: status_rx,
        scratch,
        cgroup,
        attachment: attachment.map(|(a, _)| a),
        job_dir,
        ids,
    })
}

/// Pumps the job's output and waits for the container to end, killing it when a limit fires
/// (cancel, setup timeout, wall time, output limit, the cgroup's CPU time); reaps the init.
async fn supervise(
    shared: &Shared,
    request: &ExecRequest,
    io: &JobIo,
    guard: &mut Guard,
    running: Running,
    cgroup: &JobCgroup,
) -> Supervised {
    let Running {
        init,
        pidfd,
        stdout,
        stderr,
        mut errors,
    } = running;
    let limit = Limit::default();
    let readers = async {
        tokio::join!(
            pump(stdout, Stream::Stdout, &io.output, &limit),
            pump(stderr, Stream::Stderr, &io.output, &limit)
        )
    };
    let wall = request.limits.wall_time;
    let control = async {
        let mut stopped: Option<Stopped> = None;
        let mut err_msg = Vec::new();
        let mut exec_at: Option<Instant> = None;
        // Phase 1: setup, until the error pipe closes (execve closed it, or the job died).
        tokio::select! {
            _ = errors.read_to_end(&mut err_msg) => {
                if err_msg.is_empty() {
                    exec_at = Some(Instant::now());
                }
            }
            _ = io.cancel.cancelled() => {
                stopped = Some(Stopped::Cancelled);
            }
            _ = tokio::time::sleep(SETUP_TIMEOUT) => {
                stopped = Some(Stopped::SetupTimeout(SETUP_TIMEOUT));
            }
        }
        // Phase 2: the job runs.
        if stopped.is_none()
            && let Some(start) = exec_at
        {
            let deadline = tokio::time::Instant::from_std(start + wall);
            tokio::select! {
                _ = pidfd.readable() => {}
                _ = io.cancel.cancelled() => {
                    stopped = Some(Stopped::Cancelled);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    stopped = Some(Stopped::WallTimeout(wall));
                }
                _ = limit.hit.cancelled() => {
                    let e = limit.first.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let detail = e.map(|e| e.to_string()).unwrap_or_else(|| "output limit exceeded".into());
                    stopped = Some(Stopped::OutputLimit(detail));
                }
                used = cgroup.watch_cpu(request.limits.cpu_time, shared.config.cpu_millicores) => {
                    stopped = Some(Stopped::CpuLimit {
                        limit: request.limits.cpu_time.unwrap_or_default(),
                        used,
                    });
                }
            }
        }
        if stopped.is_some() {
            guard.kill();
        }
        // Phase 3: the init, as its pid namespace's, exits only after every other process of
        // the job is gone.
        let _ = pidfd.readable().await;
        let end = Instant::now();
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(init), None);
        guard.init = None;
        Supervised {
            stopped,
            error_report: err_msg,
            exec_at,
            end,
        }
    };
    let (((), ()), supervised) = tokio::join!(readers, control);
    supervised
}

trait DirBuilderExt2 {
    fn mode_0700(&mut self) -> &mut Self;
}

impl DirBuilderExt2 for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_core::{ContainerOptions, InputFile, Limits};

    fn request() -> ExecRequest {
        ExecRequest {
            job_id: "job-1".into(),
            program: Program::Image {
                reference: "x".into(),
            },
            args: vec![],
            env: vec![],
            stdin: vec![],
            files: vec![],
            limits: Limits {
                wall_time: Duration::from_secs(1),
                cpu_time: None,
                memory_bytes: 0,
                fuel: None,
                output_bytes: 10,
                pids: None,
                disk_bytes: None,
            },
            container: ContainerOptions::default(),
            chain: Default::default(),
            artifacts: Default::default(),
            wasm: Default::default(),
        }
    }

    fn config() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["a".into(), "b".into()],
            env: vec![("PATH".into(), "/bin".into()), ("A".into(), "1".into())],
            working_dir: Some("/srv/../app".into()),
            ..ImageConfig::default()
        }
    }

    fn argv(p: &Plan) -> Vec<String> {
        p.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn argv_follows_dockers_rules() {
        let mut r = request();
        assert_eq!(argv(&plan(&r, &config()).unwrap()), ["/entry", "a", "b"]);
        r.args = vec!["x".into()];
        assert_eq!(argv(&plan(&r, &config()).unwrap()), ["/entry", "x"]);
        r.args = vec![];
        r.container.entrypoint = Some(vec!["sh".into()]);
        let p = plan(&r, &config()).unwrap();
        assert_eq!(argv(&p), ["sh"]);
        assert_eq!(p.exec_candidates, vec![c"/bin/sh".to_owned()]);
        r.container.entrypoint = Some(vec![]);
        assert!(plan(&r, &config()).unwrap_err().contains("no entrypoint"));
    }

    #[test]
    fn env_workdir_files_are_validated() {
        let mut r = request();
        r.env = vec![("A".into(), "2".into()), ("B".into(), "3".into())];
        let p = plan(&r, &config()).unwrap();
        let env: Vec<_> = p
            .env
            .iter()
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        assert_eq!(env, ["PATH=/bin", "A=2", "B=3", "HOSTNAME=job-1"]);
        assert!(p.home_from_passwd);
        assert_eq!(p.workdir, "/app");
        r.container.workdir = Some("rel".into());
        assert!(plan(&r, &config()).is_err());
        r.container.workdir = None;
        r.files = vec![InputFile {
            path: "a/../../etc/x".into(),
            content: vec![],
            mode: None,
        }];
        assert!(plan(&r, &config()).is_err());
        r.files[0].path = "/etc/x".into();
        assert!(plan(&r, &config()).is_err());
        r.files[0].path = "./d//f".into();
        let p = plan(&r, &config()).unwrap();
        assert_eq!(p.files[0].parents, vec![c"d".to_owned()]);
        assert_eq!(p.files[0].mode, 0o644);
        r.env = vec![("BAD=".into(), "x".into())];
        assert!(plan(&r, &config()).is_err());
    }

    #[test]
    fn hostnames() {
        assert_eq!(hostname_for(""), "nekton");
        assert_eq!(
            hostname_for("0190a3c4-1d2e-7f00-8000-000000000000"),
            "0190a3c4-1d2"
        );
        assert_eq!(hostname_for("../$x"), "x");
    }
}
