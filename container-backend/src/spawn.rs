//! The spawner threads and the code of the container's two processes (P2 = the container's init,
//! started by a spawner thread into a new pid namespace; P3 = the job). See the module docs of
//! [`super`] for the process tree (P1, the supervisor of earlier versions, is gone: the worker
//! supervises P2 itself).
//!
//! Child code rules: it never returns (every path ends in `_exit` or `execve`), never unwinds
//! (no `panic!`, no `unwrap` — errors are values written to the error pipe), never runs
//! destructors of the parent's objects, and takes no lock it could need another worker thread
//! to make progress for (no `std::env`, no stdout/stderr printing, no tracing). P2 and P3 run
//! on the worker's memory (`CLONE_VM | CLONE_VFORK`: P2 as a child of the waiting spawner
//! thread, P3 of the waiting P2) and may allocate there, under the rules of "Child code on the
//! worker's memory" in [`super::protocol`]: everything allocated is freed before `execve` or
//! `_exit`, so a function that ends the process holds nothing allocated when it does.
//! What crosses a process boundary (descriptor numbers, pipe bytes, the error report, the status
//! record) is defined in [`super::protocol`].
//! Every `prctl` and `setrlimit` result is checked: a failure is a [`ChildError`] naming the
//! step, reported on the error pipe.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;

use nix::errno::Errno;

use super::helper;
use super::protocol::{
    self, ChildError, ErrorKind, FD_BASE, FD_ERR, FD_FIRST_FREE, FD_HELPER, FD_LIFELINE,
    FD_SCRATCH, FD_STATUS, FD_STDERR, FD_STDIN, FD_STDOUT, FD_USERNS, LIFELINE_GO,
    LIFELINE_STARTED, os,
};
use super::rootfs;
use super::sys;
use super::users::ResolvedUser;

/// Signals the init forwards to the job (everything else it receives is SIGCHLD). P2 blocks
/// them before starting P3; the helper's init (`helper/helper.c`) keeps the same set.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The descriptors the children need; the worker keeps the other ends.
pub(crate) struct ChildFds {
    pub status_w: OwnedFd,
    pub stdout_w: OwnedFd,
    pub stderr_w: OwnedFd,
    pub stdin: OwnedFd,
    pub err_w: OwnedFd,
    /// P2's end of the lifeline ([`FD_LIFELINE`]); the worker's end goes with the request.
    pub lifeline_r: OwnedFd,
    /// The job's scratch tmpfs, a detached mount ([`FD_SCRATCH`]).
    pub scratch: OwnedFd,
    /// A chained run's base, a detached read-only mount ([`FD_BASE`]).
    pub base: Option<OwnedFd>,
    /// The job's user namespace ([`FD_USERNS`]); `None`: user namespaces are off.
    pub userns: Option<OwnedFd>,
}

/// The host ids of a rootless job: the job's ids `0..size` are host ids `start..start + size`
/// (its user namespace is at [`FD_USERNS`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostIds {
    pub start: u32,
    pub size: u32,
}

impl HostIds {
    /// The host id of the job's id `id`, `None` if the job's namespace does not map it.
    pub fn host(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.start + id)
    }
}

/// One input file, its path already split into validated components (no `..`, no `/`).
#[derive(Debug)]
pub(crate) struct FileSpec {
    pub display: String,
    pub parents: Vec<CString>,
    pub leaf: CString,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Everything the children need, built by the worker before the fork.
pub(crate) struct ChildSpec {
    pub fds: ChildFds,
    /// Host path of the job's directory (created by the worker; the tmpfs is mounted on it).
    pub job_dir: CString,
    pub upper: CString,
    pub work: CString,
    /// Overlay lower dirs, top-most first; an empty image gets `<job_dir>/empty`. With user
    /// namespaces, the image layers' entries are `<job_dir>/<name>` of [`Self::idmapped`].
    pub lowerdirs: Vec<CString>,
    /// Rootless jobs: the image layers P2 mounts idmapped (the job's namespace) on
    /// `<job_dir>/<name>` of the scratch tmpfs: (layer directory in the store, name).
    pub idmapped: Vec<(CString, CString)>,
    /// Rootless jobs: the host ids of the job's user namespace. `None`: user namespaces off
    /// (ids are the host's).
    pub ids: Option<HostIds>,
    pub empty_lower: bool,
    /// A chained run: the base's mount is at [`FD_BASE`] and `lowerdirs[0]` is its `upper/`.
    pub has_base: bool,
    pub shm_size: CString,
    /// `/etc/hostname` content: the hostname and a newline.
    pub hostname: Vec<u8>,
    pub hosts: Vec<u8>,
    /// `/etc/resolv.conf` content (bridge jobs); `None` leaves the image's file.
    pub resolv_conf: Option<Vec<u8>>,
    /// A network namespace prepared by the worker (bridge jobs: `eth0` configured); P2 joins it
    /// instead of creating an empty one.
    pub netns: Option<OwnedFd>,
    /// `netns` came from the backend's pool ([`netpool`](super::netpool)): `lo` is up and the
    /// rootless sysctl written already.
    pub netns_prepared: bool,
    /// `uid[:gid]` or `name[:group]`; empty = root.
    pub user: String,
    /// Whether `user` came from the job (a lookup failure is then the job's spec error) or from
    /// the image config (an image error).
    pub user_from_job: bool,
    /// Absolute, lexically clean path of the working directory inside the container.
    pub workdir: CString,
    pub workdir_components: Vec<CString>,
    pub files: Vec<FileSpec>,
    pub argv: Vec<CString>,
    /// Where `execve` looks for argv[0] (argv[0] itself if it has a `/`, else `PATH` entries).
    pub exec_candidates: Vec<CString>,
    /// The job's environment without `HOME` when it must come from passwd (`home_from_passwd`).
    pub env: Vec<CString>,
    pub home_from_passwd: bool,
    pub cpu_secs: Option<u64>,
    /// Capabilities kept in the bounding set (and effective/permitted for uid 0), as a bit mask.
    pub cap_keep: u64,
    pub cap_last: u32,
    /// The seccomp profile, compiled once per backend; P3 installs it last before `execve`.
    pub seccomp: std::sync::Arc<super::seccomp::Filters>,
    /// `RLIMIT_NOFILE` of the job: (soft, hard).
    pub nofile: (u64, u64),
    /// `cgroup.procs` of each directory of the job's cgroup: the spawner's mover thread (which
    /// takes them out of the spec) writes P2's pid into each before P2 may go on, so every
    /// process of the job is born in the cgroup.
    pub cgroup_procs: Vec<CString>,
    /// v2: the container's `/sys/fs/cgroup` is a read-only cgroup2 mount of the job's cgroup
    /// namespace (its root is the job's cgroup).
    pub cgroup2_mount: bool,
    /// The sealed memfd of the container helper (one per backend): P2 becomes the container's
    /// init by exec'ing it, P3 execs the job's program through it (see [`super::helper`]).
    pub helper: std::sync::Arc<helper::SealedHelper>,
}

/// What the spawner hands back: the init's (P2's) pid, a pidfd for it, and the worker's end of
/// the lifeline, which must stay open until the job has ended (P2 reads EOF or a hang-up on it
/// as "the worker is gone").
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    pub lifeline: OwnedFd,
}

struct Request {
    spec: Box<ChildSpec>,
    /// The worker's end of the lifeline ([`ChildFds::lifeline_r`] is P2's).
    lifeline: OwnedFd,
    reply: tokio::sync::oneshot::Sender<Result<Spawned, String>>,
}

/// What a spawner thread asks its mover thread to do for one P2 (see [`spawn_p2`]).
struct Move {
    /// The worker's end of the lifeline: the mover reads P2's [`LIFELINE_STARTED`] on it and
    /// writes [`LIFELINE_GO`]; dropping it (on a failure) is "no go".
    lifeline: OwnedFd,
    /// Where the kernel stores P2's pid in the worker's pid namespace (`CLONE_PARENT_SETTID`),
    /// before P2 runs.
    pid: std::sync::Arc<std::sync::atomic::AtomicI32>,
    procs: Vec<CString>,
    reply: mpsc::SyncSender<Result<(OwnedFd, OwnedFd), String>>,
}

/// Long-lived threads every container is started from: [`THREADS`] spawner threads, each with a
/// mover thread. `PR_SET_PDEATHSIG` is tied to the thread that started the child: a short-lived
/// thread would kill its containers when it ends.
pub(crate) struct Spawner {
    tx: Option<mpsc::Sender<Request>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Spawner threads per backend: a spawner thread is busy for the whole of a P2's setup (it waits
/// in `clone` until P2 has exec'd), so concurrent container starts need more than one.
const THREADS: usize = 2;

/// P2's stack, above P3's ([`P3_STACK`]) in one mapping per spawner thread, reused by every job:
/// P2 runs on it from `clone` to its `execve`, P3 from P2's `clone` to its own, never at once.
const P2_STACK: usize = 2 << 20;
/// Stack of P3 until its `execve` (see [`spawn_p3`]).
const P3_STACK: usize = 1 << 20;
const PAGE: usize = 4096;

/// The spawner thread's mapping for P2's and P3's stacks: `[guard][P3][guard][P2]`, each guard
/// page inaccessible, so an overflow faults instead of writing into the worker's memory below.
struct Stacks {
    base: *mut libc::c_void,
}

impl Stacks {
    const LEN: usize = PAGE + P3_STACK + PAGE + P2_STACK;

    fn new() -> std::io::Result<Self> {
        // SAFETY: a private anonymous mapping, unmapped in `drop`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stacks = Self { base };
        for guard in [0, PAGE + P3_STACK] {
            // SAFETY: a page of the mapping made above.
            if unsafe { libc::mprotect(stacks.at(guard), PAGE, libc::PROT_NONE) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(stacks)
    }

    fn at(&self, offset: usize) -> *mut libc::c_void {
        // SAFETY: callers pass offsets within the mapping (or its end).
        unsafe { self.base.cast::<u8>().add(offset).cast() }
    }

    /// The (16-byte aligned) top of P3's stack.
    fn p3_top(&self) -> *mut libc::c_void {
        self.at(PAGE + P3_STACK)
    }

    /// The (16-byte aligned) top of P2's stack.
    fn p2_top(&self) -> *mut libc::c_void {
        self.at(Self::LEN)
    }
}

// SAFETY: the mapping is plain memory, used only by the one spawner thread it is moved to (and
// by the P2 and P3 that thread starts while it waits).
unsafe impl Send for Stacks {}

impl Drop for Stacks {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no P2 or P3 runs on it any more (the spawner thread
        // that owns it waits in `clone` until they have exec'd or exited).
        unsafe { libc::munmap(self.base, Self::LEN) };
    }
}

impl Spawner {
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let mut threads = Vec::with_capacity(2 * THREADS);
        for _ in 0..THREADS {
            let (mtx, mrx) = mpsc::channel::<Move>();
            threads.push(
                std::thread::Builder::new()
                    .name("nekton-cgmover".into())
                    .spawn(move || {
                        while let Ok(Move {
                            lifeline,
                            pid,
                            procs,
                            reply,
                        }) = mrx.recv()
                        {
                            let _ = reply.send(move_p2(lifeline, &pid, &procs));
                        }
                    })?,
            );
            // The worker's own pid namespace: the spawner thread goes back to it after each clone.
            let own_pidns: OwnedFd = std::fs::File::open("/proc/self/ns/pid")
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "opening /proc/self/ns/pid, the worker's pid namespace ({e}): is \
                             /proc mounted?"
                        ),
                    )
                })?
                .into();
            let stacks = Stacks::new().map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("mapping the containers' setup stacks ({e})"),
                )
            })?;
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("nekton-spawner".into())
                    .spawn(move || {
                        loop {
                            // The lock is held while waiting only: the next request goes to
                            // whichever spawner thread is free.
                            let req = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => break,
                            };
                            let Ok(req) = req else { break };
                            let result =
                                spawn_p2(req.spec, &own_pidns, req.lifeline, &stacks, &mtx);
                            if let Err(Ok(spawned)) = req.reply.send(result) {
                                // The job's task is gone: kill and reap so nothing is left behind.
                                kill_and_reap(spawned);
                            }
                        }
                    })?,
            );
        }
        Ok(Self {
            tx: Some(tx),
            threads,
        })
    }

    /// Starts P2 for `spec` on a spawner thread, in the job's cgroup; `lifeline` is the worker's
    /// end of the lifeline (returned in [`Spawned`]). The error says which step failed.
    pub async fn spawn(&self, spec: Box<ChildSpec>, lifeline: OwnedFd) -> Result<Spawned, String> {
        const GONE: &str = "the container spawner thread has ended";
        let (reply, rx) = tokio::sync::oneshot::channel();
        let tx = self.tx.as_ref().ok_or(GONE)?;
        tx.send(Request {
            spec,
            lifeline,
            reply,
        })
        .map_err(|_| GONE)?;
        rx.await.map_err(|_| GONE.to_string())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Kills the container and reaps its init (blocking; used when no task is left to do it).
pub(crate) fn kill_and_reap(spawned: Spawned) {
    kill_and_reap_pid(spawned.pid);
}

/// SIGKILL to the init `pid` — the end of its pid namespace: the kernel kills every other process
/// of the job — then reaps it.
fn kill_and_reap_pid(pid: libc::pid_t) {
    // SAFETY: the init is our unreaped child, so its pid cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

/// What P2 starts from: pointers into the worker's memory, which P2 shares until its `execve`
/// (the spawner thread that owns them waits in `clone` meanwhile).
struct P2Start<'a> {
    spec: &'a ChildSpec,
    p3_stack: *mut libc::c_void,
}

/// Starts P2, the container's init, as the first process of a new pid namespace: a vfork-style
/// child of this spawner thread (`CLONE_VM | CLONE_VFORK`) that runs on the worker's memory and
/// this thread's stack mapping until it has exec'd the helper. No copy of the worker's address
/// space is made for it and none torn down at its `execve` (the fork it replaces cost about a
/// millisecond of a container's start). This thread waits in `clone` meanwhile; its mover thread
/// ([`move_p2`]) puts P2 into the job's cgroup while P2 builds the root filesystem. The rules
/// P2's code follows on the worker's memory are the module docs'.
fn spawn_p2(
    mut spec: Box<ChildSpec>,
    own_pidns: &OwnedFd,
    lifeline: OwnedFd,
    stacks: &Stacks,
    mover: &mpsc::Sender<Move>,
) -> Result<Spawned, String> {
    use std::sync::atomic::AtomicI32;
    let pid_slot = std::sync::Arc::new(AtomicI32::new(0));
    let (reply, moved) = mpsc::sync_channel(1);
    mover
        .send(Move {
            lifeline,
            pid: pid_slot.clone(),
            // The mover's alone: P2 does not read them.
            procs: std::mem::take(&mut spec.cgroup_procs),
            reply,
        })
        .map_err(|_| "the container's cgroup mover thread has ended".to_string())?;
    // This thread's next child becomes the init of a new pid namespace. Only this thread's
    // children are affected (the namespace for children is per thread), and only until the
    // `setns` below, which the next job's `unshare` needs as well.
    // SAFETY: unshare with a namespace flag; it changes this thread's namespace for children.
    let pid = if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        Err(format!(
            "unshare(CLONE_NEWPID) on the spawner thread: {}",
            Errno::last().desc()
        ))
    } else {
        let start = P2Start {
            spec: &spec,
            p3_stack: stacks.p3_top(),
        };
        extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
            // SAFETY: `arg` is the `P2Start` on the spawner thread's stack, alive while that
            // thread waits in `clone`.
            let start = unsafe { &*(arg as *const P2Start<'_>) };
            p2_main(start.spec, start.p3_stack)
        }
        // SAFETY: P2's stack is P2_STACK bytes of this thread's mapping, unused by anyone else,
        // growing down from its (16-byte aligned) top; `entry` never returns (p2_main ends in
        // execve or _exit); this thread waits in `clone` until then (CLONE_VFORK), so the two
        // never run at once on its stack-independent state (errno, thread-locals, malloc's
        // per-thread cache); the kernel writes the pid to `pid_slot` before P2 runs.
        let pid = unsafe {
            libc::clone(
                entry,
                stacks.p2_top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PARENT_SETTID | libc::SIGCHLD,
                (&start as *const P2Start<'_>).cast_mut().cast(),
                pid_slot.as_ptr(),
            )
        };
        let forked = if pid < 0 { Err(Errno::last()) } else { Ok(pid) };
        // SAFETY: setns with a descriptor this process holds, of its own pid namespace.
        if unsafe { libc::setns(own_pidns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
            // This thread's next `unshare` would fail: its children's namespace is not the
            // worker's.
            let e = Errno::last();
            if let Ok(pid) = forked {
                kill_and_reap_pid(pid);
            }
            return Err(format!(
                "setns back to the worker's pid namespace after a clone: {}",
                e.desc()
            ));
        }
        forked.map_err(|e| format!("clone of the container's init: {}", e.desc()))
    };
    // P2 has exec'd or exited. The worker's copies of the child-side descriptors close here: if
    // P2 never said "started", the mover reads EOF instead.
    drop(spec);
    let moved = moved
        .recv()
        .unwrap_or_else(|_| Err("the container's cgroup mover thread has ended".into()));
    let pid = pid?;
    match moved {
        Ok((pidfd, lifeline)) => Ok(Spawned {
            pid,
            pidfd,
            lifeline,
        }),
        Err(e) => {
            // P2 read "no go" (EOF) and exited: reaped here.
            kill_and_reap_pid(pid);
            Err(e)
        }
    }
}

/// The mover's part of a start: waits for P2's [`LIFELINE_STARTED`], writes P2's pid into each
/// `cgroup.procs` of the job's cgroup while P2 builds the root filesystem, then "go". Returns a
/// pidfd of P2 and the lifeline, or the failed step (the lifeline is dropped then: P2 reads EOF
/// where it waits for "go" and exits).
fn move_p2(
    lifeline: OwnedFd,
    pid: &std::sync::atomic::AtomicI32,
    procs: &[CString],
) -> Result<(OwnedFd, OwnedFd), String> {
    let mut b = 0u8;
    let started = loop {
        // SAFETY: reading one byte into a local.
        let r = unsafe { libc::read(lifeline.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        if r < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        break r == 1 && b == LIFELINE_STARTED;
    };
    let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
    if !started || pid <= 0 {
        return Err("the container's init ended before it started".into());
    }
    let pidfd = sys::pidfd_open(pid)
        .map_err(|e| format!("pidfd_open of the container's init: {}", e.desc()))?;
    // P2 is unreaped (only the job's task reaps it, after this), so its pid is still its own.
    if let Err(e) = join_cgroup(procs, pid) {
        if exited(&pidfd) {
            // P2 failed first (its report is on the error pipe, for the worker to read): that
            // error, not the move's, is the job's.
            return Ok((pidfd, lifeline));
        }
        return Err(e);
    }
    // SAFETY: one byte from a local; MSG_NOSIGNAL: a gone P2 is an error value, not SIGPIPE.
    let sent = unsafe {
        libc::send(
            lifeline.as_raw_fd(),
            (&LIFELINE_GO as *const u8).cast(),
            1,
            libc::MSG_NOSIGNAL,
        )
    };
    if sent != 1 {
        let e = Errno::last();
        // EPIPE: P2's end is closed, and the spawner thread holds a copy of it until P2 has
        // exec'd or exited — P2 has exited (it cannot exec without "go"), its pidfd perhaps not
        // readable yet. Its report on the error pipe is the job's.
        if e != Errno::EPIPE && !exited(&pidfd) {
            return Err(format!(
                "writing \"go\" on the container's lifeline: {}",
                e.desc()
            ));
        }
    }
    Ok((pidfd, lifeline))
}

/// Whether the process of `pidfd` has exited (its pidfd is readable), without waiting.
fn exited(pidfd: &OwnedFd) -> bool {
    poll_now(pidfd.as_raw_fd()) == 1
}

/// `poll` of `fd` for input without waiting: 1 if it is readable or hung up, 0 if not, -1 on an
/// error (a system call only: usable in child code).
fn poll_now(fd: RawFd) -> libc::c_int {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut pfd, 1, 0) }
}

/// Writes `pid` into each `cgroup.procs` file of the job's cgroup (`procs`; v1: one per
/// hierarchy). The process is blocked on its lifeline meanwhile (or still building the root
/// filesystem), never running the job: moving a task that is not the writer costs ≈ 0.1 ms per
/// hierarchy, where a task moving itself into a fresh v1 `cpu` cgroup waited for a tick.
fn join_cgroup(procs: &[CString], pid: libc::pid_t) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    let text = pid.to_string();
    for path in procs {
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()));
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("joining the job's cgroup: write {}: {e}", path.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Child side.

fn exit(code: libc::c_int) -> ! {
    // SAFETY: `_exit` ends the process without running the parent's atexit handlers or
    // destructors, which is what a forked child must do.
    unsafe { libc::_exit(code) }
}

fn write_all_raw(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// Reports `err` on the error pipe and exits with 127.
fn fail(err: ChildError) -> ! {
    report_and_exit(FD_ERR, err)
}

/// Writes `err` to `fd` and exits with 127, freeing the report first: P2 and P3 allocate on the
/// worker's heap, and what they do not free before `_exit` or `execve` stays allocated there.
fn report_and_exit(fd: RawFd, err: ChildError) -> ! {
    let bytes = protocol::encode_error(&err);
    write_all_raw(fd, &bytes);
    drop(bytes);
    drop(err);
    exit(127)
}

fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this child owns and no longer uses.
    unsafe { libc::close(fd) };
}

fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition; invalid numbers just fail with EINVAL.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty set is valid; the old mask is not wanted.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// `prctl(option, arg2, 0, 0, 0)`, its failure an internal error naming `step` (child code).
fn prctl(option: libc::c_int, arg2: libc::c_ulong, step: &'static str) -> Result<(), ChildError> {
    // SAFETY: prctl with integer arguments (the options used here take no pointer in arg2
    // except PR_SET_NAME, whose callers pass a pointer to a NUL-terminated static string).
    if unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    } != 0
    {
        return Err(os(ErrorKind::Internal, step)(Errno::last()));
    }
    Ok(())
}

/// SIGKILL when the parent (P2's: the spawner thread) ends.
fn set_pdeathsig(step: &'static str) -> Result<(), ChildError> {
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, step)
}

/// Moves the descriptors of `spec.fds` to their fixed numbers and closes everything else: the
/// worker's sockets, its epoll fd, and the pipes of *other* jobs (forked from the same process)
/// must never reach a container.
fn rearrange_fds(spec: &ChildSpec) -> Result<(), Errno> {
    let f = &spec.fds;
    let moves = [
        (f.status_w.as_raw_fd(), FD_STATUS),
        (f.stdout_w.as_raw_fd(), FD_STDOUT),
        (f.stderr_w.as_raw_fd(), FD_STDERR),
        (f.stdin.as_raw_fd(), FD_STDIN),
        (f.err_w.as_raw_fd(), FD_ERR),
        (f.lifeline_r.as_raw_fd(), FD_LIFELINE),
        (spec.helper.fd().as_raw_fd(), FD_HELPER),
        (f.scratch.as_raw_fd(), FD_SCRATCH),
        // Without a base, FD_BASE stays closed (close_range below): the number is "no base".
        (f.base.as_ref().map_or(-1, |b| b.as_raw_fd()), FD_BASE),
        (f.userns.as_ref().map_or(-1, |u| u.as_raw_fd()), FD_USERNS),
    ];
    let mut tmp = [-1 as RawFd; 10];
    for (i, (src, _)) in moves.iter().enumerate() {
        if *src < 0 {
            continue;
        }
        // Above every target number, so no later dup3 overwrites a source not yet moved.
        // SAFETY: F_DUPFD_CLOEXEC on an open descriptor.
        let r = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64) };
        if r < 0 {
            return Err(Errno::last());
        }
        tmp[i] = r;
    }
    for (i, (_, dst)) in moves.iter().enumerate() {
        if tmp[i] < 0 {
            // No such descriptor: make sure the number is not some other inherited one.
            close(*dst);
            continue;
        }
        // SAFETY: both are valid descriptor numbers; dst is replaced atomically.
        if unsafe { libc::dup3(tmp[i], *dst, libc::O_CLOEXEC) } < 0 {
            return Err(Errno::last());
        }
    }
    sys::close_range_from(FD_FIRST_FREE as libc::c_uint, 0)
}

/// A close-on-exec pipe whose two ends are numbered from [`FD_FIRST_FREE`] up: never one of the
/// fixed numbers, which the children close by number (an absent base or user namespace leaves
/// [`FD_BASE`] or [`FD_USERNS`] free, and `pipe2` takes the lowest free numbers).
fn pipe_above_fixed() -> Result<[RawFd; 2], Errno> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: `p` has room for the two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Errno::last());
    }
    for end in &mut p {
        if *end < FD_FIRST_FREE {
            // SAFETY: duplicating a descriptor this process owns.
            let high = unsafe { libc::fcntl(*end, libc::F_DUPFD_CLOEXEC, FD_FIRST_FREE) };
            if high < 0 {
                return Err(Errno::last());
            }
            close(*end);
            *end = high;
        }
    }
    Ok(p)
}

/// Writes `data` to the existing file `path` (child code: no allocation, no locks).
pub(crate) fn write_file(path: &std::ffi::CStr, data: &[u8]) -> Result<(), Errno> {
    // SAFETY: `path` is a valid C string; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `data` is valid for its length.
    let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let err = Errno::last();
    close(fd);
    if r != data.len() as isize {
        return Err(err);
    }
    Ok(())
}

/// Enters the job's user namespace ([`FD_USERNS`]) as its root (uid and gid 0 there, no
/// supplementary groups): from here on the process's capabilities are the namespace's only.
fn enter_userns(step: &'static str) -> Result<(), ChildError> {
    // SAFETY: setns with a descriptor this (single-threaded) process holds.
    if unsafe { libc::setns(FD_USERNS, libc::CLONE_NEWUSER) } != 0 {
        return Err(os(ErrorKind::Internal, step)(Errno::last()));
    }
    // SAFETY: plain integer arguments / an empty list.
    let r = unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setresgid(0, 0, 0) != 0 {
            -1
        } else {
            libc::setresuid(0, 0, 0)
        }
    };
    if r != 0 {
        return Err(os(ErrorKind::Internal, step)(Errno::last()));
    }
    Ok(())
}

/// Reports a P2 failure that happens before the descriptors are at their fixed numbers.
fn fail_early(spec: &ChildSpec, err: ChildError) -> ! {
    // The error pipe is still at its original number here.
    report_and_exit(spec.fds.err_w.as_raw_fd(), err)
}

/// `ip link set lo up` in the current network namespace (child code: one socket, two ioctls).
pub(crate) fn loopback_up() -> Result<(), Errno> {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a zeroed ifreq is valid; the name fits (with its NUL) in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    let r = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = Errno::last();
    close(fd);
    if r != 0 { Err(err) } else { Ok(()) }
}

/// P2 waits until the worker has put it into the job's cgroup ([`LIFELINE_GO`]; EOF means "no
/// go": the move failed, or the worker is gone and nobody supervises it), then makes a cgroup
/// namespace rooted there (the job sees its cgroup as `/`). An error, not an exit, so the root
/// filesystem's builder returns and frees what it holds.
fn enter_job_cgroup(lifeline: RawFd) -> Result<(), ChildError> {
    loop {
        let mut b = 0u8;
        // SAFETY: reading one byte into a local.
        let r = unsafe { libc::read(lifeline, (&mut b as *mut u8).cast(), 1) };
        if r == 1 && b == LIFELINE_GO {
            break;
        }
        if r < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        return Err(ChildError::new(
            ErrorKind::Internal,
            "the worker did not put the container into its cgroup (no \"go\" on the lifeline)"
                .to_string(),
        ));
    }
    // SAFETY: unshare with a namespace flag only affects this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
        return Err(os(ErrorKind::Internal, "unshare(cgroup namespace)")(
            Errno::last(),
        ));
    }
    Ok(())
}

/// P2, the first process of the job's pid namespace: makes the other namespaces, builds the
/// root filesystem inside the new mount namespace, starts P3, then is the job's init. It runs on
/// the worker's memory until its `execve` (see [`spawn_p2`]): what it allocates it frees before
/// (the setup is [`p2_setup`], whose locals are gone when it returns, and every failure report
/// frees itself, see [`report_and_exit`]).
fn p2_main(spec: &ChildSpec, p3_stack: *mut libc::c_void) -> ! {
    reset_signals();
    // The worker's cgroup mover reads P2's pid once it has this byte.
    // SAFETY: one byte from a constant; MSG_NOSIGNAL: a worker that is gone is seen at "go".
    unsafe {
        libc::send(
            spec.fds.lifeline_r.as_raw_fd(),
            (&LIFELINE_STARTED as *const u8).cast(),
            1,
            libc::MSG_NOSIGNAL,
        )
    };
    // The descriptors are not rearranged yet: the error goes to the error pipe's original
    // number. No `getppid` check closes the race with the worker's death (P2's parent is outside
    // its pid namespace: `getppid` is 0): the lifeline does — P2 goes past the root filesystem
    // only on the worker's "go", and reads EOF if the worker is gone.
    if let Err(e) = set_pdeathsig("prctl(PR_SET_PDEATHSIG) of the container's init") {
        fail_early(spec, e);
    }
    // No process may ptrace this task or read its memory — the worker's, which it shares until
    // its `execve` (the flag is the address space's: the worker is non-dumpable from its first
    // container on, as it would be anyway once P3 changes its ids on the same memory).
    if let Err(e) = prctl(
        libc::PR_SET_DUMPABLE,
        0,
        "prctl(PR_SET_DUMPABLE, 0) of the container's init",
    ) {
        fail_early(spec, e);
    }
    // Before the descriptors are rearranged (that closes the namespace's descriptor).
    if let Some(ns) = &spec.netns {
        // SAFETY: setns with a descriptor this process holds.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            fail_early(
                spec,
                os(ErrorKind::Internal, "joining the job's network namespace")(Errno::last()),
            );
        }
    }
    if let Err(e) = rearrange_fds(spec) {
        fail(os(
            ErrorKind::Internal,
            "container setup: moving descriptors",
        )(e));
    }
    let (p3, ready_w) = match p2_setup(spec, p3_stack) {
        Ok(started) => started,
        Err(e) => fail(e),
    };
    // From here on nothing is allocated: P2 holds no heap memory of the worker's.
    // Rootless: the init is the namespace's root too (host id `start`, capabilities over the
    // job's processes only), never the host's root.
    if spec.ids.is_some() {
        if let Err(e) = enter_userns("entering the job's user namespace (the container's init)") {
            fail(e);
        }
        close(FD_USERNS);
        // A change of the effective uid clears the parent-death signal: armed again, then the
        // lifeline closes the race (the worker gone in between: POLLHUP).
        if let Err(e) = set_pdeathsig("prctl(PR_SET_PDEATHSIG) of the container's init, again") {
            fail(e);
        }
        if poll_now(FD_LIFELINE) != 0 {
            exit(1);
        }
    }
    for fd in [FD_STDOUT, FD_STDERR, FD_STDIN, FD_SCRATCH, FD_BASE] {
        close(fd);
    }
    become_init(p3, ready_w)
}

/// P2's setup after its descriptors are in place: the namespaces, the root filesystem, P3
/// (started, waiting for the init's "ready"). Returns P3's pid and the write end of its "ready"
/// pipe; everything it allocated is freed by then.
fn p2_setup(
    spec: &ChildSpec,
    p3_stack: *mut libc::c_void,
) -> Result<(libc::pid_t, RawFd), ChildError> {
    // The pid namespace is this process's already (the spawner started it in a new one); the
    // cgroup namespace is made once it is in the job's cgroup.
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET;
    // A prepared network namespace was joined above.
    let flags = if spec.netns.is_some() {
        flags & !libc::CLONE_NEWNET
    } else {
        flags
    };
    // SAFETY: unshare with namespace flags only affects this process (it shares no `fs` or
    // descriptor table with the worker: no CLONE_FS, no CLONE_FILES).
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(os(
            ErrorKind::Internal,
            "unshare(mount, uts, ipc, net namespaces)",
        )(Errno::last()));
    }
    if !spec.netns_prepared {
        loopback_up().map_err(os(
            ErrorKind::Internal,
            "bringing up the job's loopback interface",
        ))?;
    }
    // Rootless: the job's network namespace is owned by the host's user namespace, so its root
    // has no CAP_NET_BIND_SERVICE there; ports below 1024 are opened to every uid of this
    // namespace instead (Docker's default since 20.10). The file is the current netns's.
    if spec.ids.is_some() && !spec.netns_prepared {
        write_file(c"/proc/sys/net/ipv4/ip_unprivileged_port_start", b"0").map_err(os(
            ErrorKind::Internal,
            "setting net.ipv4.ip_unprivileged_port_start=0 in the job's network namespace",
        ))?;
    }
    sys::make_rprivate().map_err(os(
        ErrorKind::Internal,
        "making / private in the job's mount namespace",
    ))?;
    prctl(
        libc::PR_SET_NAME,
        c"nekton-init".as_ptr() as libc::c_ulong,
        "prctl(PR_SET_NAME) of the container's init",
    )?;
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };
    // The job's cgroup: the worker's mover thread moves this process there while it builds the
    // root filesystem — the move's write may wait for an RCU grace period, which would otherwise
    // be on the job's path — and says so on the lifeline ("g"). The builder waits for it where
    // the cgroup first matters (before the cgroup2 mount of a job that sees its hierarchy, else
    // at its end); the cgroup namespace is made right after, and nothing forks before it.
    let prepared = rootfs::build(spec, || enter_job_cgroup(FD_LIFELINE))?;

    // Blocked before P3 exists, kept across the exec into the helper: no SIGCHLD or forwarded
    // signal is lost in between (they stay pending). P3 unblocks them for the job.
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // The job's launcher (the helper's `nekton-exec`, which P3 becomes) waits on this pipe until
    // this process has become the helper's init: the job never runs beside a task on the
    // worker's memory.
    let ready =
        pipe_above_fixed().map_err(os(ErrorKind::Internal, "pipe (the job's start signal)"))?;
    // P3's `execveat` arguments, built here and freed once P3 has exec'd (P3 allocates nothing it
    // would leave behind on the worker's heap).
    let strings = helper::exec_argv(FD_ERR, ready[0], &spec.exec_candidates, &spec.argv);
    let plan = ExecPlan {
        argv: nul_terminated(&strings),
        envp: nul_terminated(&prepared.env),
    };
    let p3 = spawn_p3(spec, &prepared, &plan, ready[0], p3_stack)
        .map_err(os(ErrorKind::Internal, "clone of the job process"))?;
    close(ready[0]);
    Ok((p3, ready[1]))
}

/// The NULL-terminated array of `v`'s pointers, for `execve` (valid while `v` is).
fn nul_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// NULL-terminated `argv` and `envp` arrays for an `execveat` of the helper.
struct ExecPlan {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

/// P2 leaves the worker's binary: `execveat` of the helper as `nekton-init` (the blocked
/// signals, the children and the two descriptors it needs stay; everything else is
/// close-on-exec). Its arguments are on the stack: nothing allocated is left on the worker's
/// heap. Only returns on failure, reported on the error pipe (still open here).
fn become_init(p3: libc::pid_t, ready_w: RawFd) -> ! {
    let step = "exec of the container's init helper (a sealed memfd)";
    let mut buf = [0u8; helper::INIT_ARGV_BYTES];
    let Some(argv) = helper::init_argv(&mut buf, p3, FD_STATUS, ready_w) else {
        fail(ChildError::new(
            ErrorKind::Internal,
            format!("{step}: its arguments do not fit"),
        ))
    };
    if let Err(e) = sys::close_range_from(3, sys::CLOSE_RANGE_CLOEXEC) {
        fail(os(ErrorKind::Internal, step)(e));
    }
    for fd in [FD_STATUS, ready_w] {
        // SAFETY: clearing close-on-exec on a descriptor this process owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            fail(os(ErrorKind::Internal, step)(Errno::last()));
        }
    }
    exec_helper(&argv, &[std::ptr::null()], step)
}

/// `execveat` of the sealed helper at [`FD_HELPER`] with the NULL-terminated `argv` and `envp`;
/// only returns on failure, which it reports on the error pipe as `step`.
fn exec_helper(
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    step: &'static str,
) -> ! {
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that outlive the call;
    // on success this process image is replaced.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            FD_HELPER,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    fail(os(ErrorKind::Internal, step)(Errno::last()))
}

/// What P2 resolved for P3 (inside the container's root, before `pivot_root`).
pub(crate) struct Prepared {
    pub user: ResolvedUser,
    pub env: Vec<CString>,
}

/// What P3 starts from: pointers into P2's memory, which P3 shares (P2 is suspended meanwhile).
struct P3Start<'a> {
    spec: &'a ChildSpec,
    prepared: &'a Prepared,
    plan: &'a ExecPlan,
    ready: RawFd,
}

/// Starts P3 as a vfork-style child of P2 (`CLONE_VM | CLONE_VFORK`) on `stack` (the top of
/// [`P3_STACK`] bytes the spawner thread mapped): like P2, it runs on the worker's memory until
/// its `execve`. P2 is suspended until P3 has exec'd the helper (or exited), so the two never
/// run at once; P3 has its own descriptor table, signal handlers, credentials and filesystem
/// context (no `CLONE_FILES`, `CLONE_SIGHAND`, `CLONE_FS`), so nothing it changes in those
/// reaches P2. Its pid, or the error of `clone`.
fn spawn_p3(
    spec: &ChildSpec,
    prepared: &Prepared,
    plan: &ExecPlan,
    ready: RawFd,
    stack: *mut libc::c_void,
) -> Result<libc::pid_t, Errno> {
    let start = P3Start {
        spec,
        prepared,
        plan,
        ready,
    };
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `P3Start` on P2's stack, alive while P2 waits in `clone`.
        let start = unsafe { &*(arg as *const P3Start<'_>) };
        p3_main(start.spec, start.prepared, start.plan, start.ready)
    }
    // SAFETY: the stack is P3_STACK bytes of writable memory nobody else uses while P3 runs,
    // growing down from its (16-byte aligned) top; `entry` never returns (p3_main ends in execve
    // or _exit); P2 is single-threaded and waits in `clone` until P3 has exec'd (CLONE_VFORK).
    let pid = unsafe {
        libc::clone(
            entry,
            stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&start as *const P3Start<'_>).cast_mut().cast(),
        )
    };
    if pid < 0 { Err(Errno::last()) } else { Ok(pid) }
}

/// P3: the job. Never returns: `execve` of the helper (which runs the job's program once the init
/// is ready) or `_exit(127)` with a message on the error pipe.
fn p3_main(spec: &ChildSpec, prepared: &Prepared, plan: &ExecPlan, ready: RawFd) -> ! {
    match p3_setup(spec, prepared) {
        Ok(()) => exec(plan, ready),
        Err(e) => fail(e),
    }
}

fn p3_setup(spec: &ChildSpec, prepared: &Prepared) -> Result<(), ChildError> {
    let internal = |what: &'static str| os(ErrorKind::Internal, what);
    reset_signals();
    nix::unistd::setsid().map_err(internal("setsid"))?;
    for (from, to) in [(FD_STDIN, 0), (FD_STDOUT, 1), (FD_STDERR, 2)] {
        // SAFETY: both descriptor numbers are valid; dup2 clears CLOEXEC on the new one.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(internal("dup2 of the standard streams")(Errno::last()));
        }
    }
    // SAFETY: seeking the stdin memfd to its start; umask is always successful.
    unsafe {
        libc::lseek(0, 0, libc::SEEK_SET);
        libc::umask(0o022);
    }
    nix::unistd::chdir(spec.workdir.as_c_str()).map_err(os(
        ErrorKind::Spec,
        format!("working directory `{}`", spec.workdir.to_string_lossy()),
    ))?;
    if let Some(secs) = spec.cpu_secs {
        let lim = libc::rlimit {
            rlim_cur: secs,
            rlim_max: secs.saturating_add(1),
        };
        // SAFETY: `lim` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_CPU, &lim) } != 0 {
            return Err(internal("setrlimit(RLIMIT_CPU)")(Errno::last()));
        }
    }
    // Memory limit: enforced by the job's cgroup (see `apply_memory_limit` in the worker), not
    // here; an rlimit on address space would break ordinary programs.

    // No core dumps (a core of a setuid-less job is harmless, but it costs disk and time, and
    // `core_pattern` is the host's); a bounded descriptor table. Set while still root: raising
    // the hard NOFILE limit above the worker's needs CAP_SYS_RESOURCE.
    for (resource, what, (cur, max)) in [
        (libc::RLIMIT_CORE, "setrlimit(RLIMIT_CORE)", (0, 0)),
        (libc::RLIMIT_NOFILE, "setrlimit(RLIMIT_NOFILE)", spec.nofile),
    ] {
        let lim = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: `lim` is a valid rlimit.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(internal(what)(Errno::last()));
        }
    }

    // Rootless: into the job's user namespace (after the rlimits: raising RLIMIT_NOFILE's hard
    // limit needs CAP_SYS_RESOURCE in the host's namespace). Every capability below, and the
    // ids, are then the namespace's.
    if spec.ids.is_some() {
        enter_userns("entering the job's user namespace")?;
    }
    // Capabilities: bounding set first (needs CAP_SETPCAP, which we still have as root).
    for cap in 0..=spec.cap_last {
        if spec.cap_keep & (1u64 << cap) == 0 {
            prctl(
                libc::PR_CAPBSET_DROP,
                cap as libc::c_ulong,
                "dropping a capability from the bounding set",
            )?;
        }
    }
    // Ambient capabilities would survive the uid change; PR_CAP_AMBIENT_CLEAR_ALL takes its
    // sub-command in arg2.
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
    )?;
    let u = &prepared.user;
    // SAFETY: `u.groups` is valid for its length.
    if unsafe { libc::setgroups(u.groups.len(), u.groups.as_ptr()) } != 0 {
        return Err(internal("setgroups")(Errno::last()));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(u.gid, u.gid, u.gid) } != 0 {
        return Err(internal("setresgid")(Errno::last()));
    }
    // SAFETY: plain integer arguments. A non-zero uid clears the permitted and effective sets.
    if unsafe { libc::setresuid(u.uid, u.uid, u.uid) } != 0 {
        return Err(internal("setresuid")(Errno::last()));
    }
    let caps = if u.uid == 0 { spec.cap_keep } else { 0 };
    sys::capset_self(caps).map_err(internal("capset"))?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")?;
    // Every descriptor but 0-2 is closed at exec (the error pipe must stay open until then).
    sys::close_range_from(3, sys::CLOSE_RANGE_CLOEXEC).map_err(internal("close_range"))?;
    // Last: the seccomp filters (after no_new_privs, which unprivileged seccomp requires, and
    // after every setup call the profile denies). From here on only `execve`, the `lstat` of a
    // failed candidate, `write` to the error pipe and `_exit` run — all allowed.
    spec.seccomp
        .install()
        .map_err(internal("installing the seccomp filters"))?;
    Ok(())
}

/// The last step of P3: `execveat` of the helper as `nekton-exec`, which `execve`s the first
/// candidate that runs and reports a failure on the error pipe itself (see
/// [`super::helper`]); at the job's `execve`, `/proc/self/exe` is the sealed memfd, never the
/// worker's binary.
fn exec(plan: &ExecPlan, ready: RawFd) -> ! {
    let step = "exec of the job's launcher (the container helper's sealed memfd)";
    // The helper makes the error pipe close-on-exec again before it execs the job's program, and
    // closes the ready pipe once it has read the init's byte.
    for fd in [FD_ERR, ready] {
        // SAFETY: clearing close-on-exec on a descriptor this process owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            fail(os(ErrorKind::Internal, step)(Errno::last()));
        }
    }
    exec_helper(&plan.argv, &plan.envp, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The children's pipes never take a fixed descriptor number, even when those are the
    /// lowest free ones (a run without a base leaves FD_BASE free, and the children close it
    /// by number).
    #[test]
    fn pipes_of_the_children_are_above_the_fixed_numbers() {
        let p = pipe_above_fixed().unwrap();
        assert!(p.iter().all(|fd| *fd >= FD_FIRST_FREE), "{p:?}");
        let mut b = [0u8; 1];
        // SAFETY: both ends are this test's descriptors; one byte through the pipe.
        unsafe {
            assert_eq!(libc::write(p[1], b"x".as_ptr().cast(), 1), 1);
            assert_eq!(libc::read(p[0], b.as_mut_ptr().cast(), 1), 1);
            // Close-on-exec, like pipe2(O_CLOEXEC).
            assert_eq!(libc::fcntl(p[0], libc::F_GETFD), libc::FD_CLOEXEC);
            assert_eq!(libc::fcntl(p[1], libc::F_GETFD), libc::FD_CLOEXEC);
        }
        assert_eq!(&b, b"x");
        p.into_iter().for_each(close);
    }

    /// A failing `prctl` is an internal `ChildError` naming the step and the kernel's reason
    /// (in the children it is then reported on the error pipe: see `fail`).
    #[test]
    fn a_failed_prctl_is_an_internal_error_naming_the_step() {
        // 65 is no signal: the kernel answers EINVAL and changes nothing.
        let e = prctl(
            libc::PR_SET_PDEATHSIG,
            65,
            "prctl(PR_SET_PDEATHSIG) of the test",
        )
        .expect_err("an invalid signal must fail");
        assert_eq!(e.kind, ErrorKind::Internal);
        assert_eq!(
            e.msg,
            format!(
                "prctl(PR_SET_PDEATHSIG) of the test: {}",
                Errno::EINVAL.desc()
            )
        );
        // A valid call succeeds (the test thread's own death signal is "none" already).
        prctl(libc::PR_SET_PDEATHSIG, 0, "clearing the death signal").unwrap();
        // PR_SET_NAME through the same helper: the pointer reaches the kernel intact.
        let name = c"nekton-test";
        prctl(
            libc::PR_SET_NAME,
            name.as_ptr() as libc::c_ulong,
            "prctl(PR_SET_NAME)",
        )
        .unwrap();
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        assert_eq!(comm.trim_end(), "nekton-test");
    }
}
