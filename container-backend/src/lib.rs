//! The Linux container backend: runs [`Program::Image`] jobs in namespaces, on an overlayfs of
//! the image's layers, as a non-PID-1 process under a tiny init.
//!
//! # Process tree
//!
//! ```text
//! worker process
//!  └─ "nekton-spawner" thread: unshare(pid) for its next child,
//!      │  clone(CLONE_VM|CLONE_VFORK) (waits until P2's execveat), setns back
//!      └──► P2 = PID 1 of a new pid ns, on the worker's memory (PDEATHSIG=SIGKILL,
//!            │  non-dumpable): says "started" on its lifeline;
//!            │  setns(a prepared netns: `netpool`, or a bridge job's);
//!            │  unshare(mnt, uts, ipc, [net]); / rprivate; builds the rootfs
//!            │  (meanwhile the spawner's "nekton-cgmover" thread moves it into
//!            │  the job's cgroup and writes "go" on its lifeline), pivots, starts P3,
//!            │  [rootless: setns(job's userns), root there]
//!            │  then execveat(helper memfd) = "nekton-init"
//!            └─ clone(CLONE_VM|CLONE_VFORK) ──► P3 = the job
//!                        (P2 suspended until P3's execveat;
//!                        setsid, rlimits, [rootless: setns(
//!                        job's userns)], user, caps,
//!                        no_new_privs, seccomp,
//!                        execveat(helper memfd) =
//!                        "nekton-exec": waits for
//!                        nekton-init ── execve ──► job)
//! ```
//! **Rootless jobs** ([`UsernsConfig`], on by default where the host can): the worker hands the
//! children the user namespace of a host id range of the job's own ([`userns`] module); every
//! mount is still made by P2 as the host's root, in namespaces owned by the host's user
//! namespace, and only then do P2 and P3 enter the job's user namespace (`setns`) and become
//! its root (uid 0 there = the range's first host id). So the job's capabilities reach its own
//! processes and files only, never a mount, its network or its hostname, and `/dev` keeps
//! real device nodes. Entering it changes P2's uid, which clears PDEATHSIG: P2 arms it again
//! and checks the lifeline.
//! The helper ([`helper`] module, `src/helper/helper.c`) is a freestanding static program of a
//! few KiB, copied once per backend into a sealed, read-only memfd: no process the job can see
//! is backed by the worker's binary when the job runs (CVE-2019-5736).
//! - Every container is started from **long-lived spawner threads** (`spawn::Spawner`, two per
//!   backend), because `PR_SET_PDEATHSIG` fires when the *thread* that started the child ends: if
//!   the worker dies, P2 gets SIGKILL, and P2 being the pid namespace's init, the kernel kills
//!   every process of the job. The PDEATHSIG race (the worker dying before P2 armed it) is closed
//!   by the lifeline (a socket pair): P2 goes past the root filesystem only on the worker's "go",
//!   and reads EOF (or, rootless, after re-arming PDEATHSIG, POLLHUP) if the worker is gone; P2
//!   cannot `getppid` across the pid namespace. The spawner's `unshare(CLONE_NEWPID)` changes the
//!   pid namespace of *its own* children only (the namespace for children is per thread), and its
//!   `setns` back to the worker's namespace right after the clone readies it for the next job.
//! - **P2 and P3 run on the worker's memory** until their `execve`: P2 is a vfork-style child of
//!   the spawner thread (`clone(CLONE_VM | CLONE_VFORK)` on a stack mapping of that thread's),
//!   P3 one of P2. No copy of the worker's address space is made for a container and none is
//!   torn down at its exec (a fork of the worker and its teardown cost ≈ 0.8 ms of a container's
//!   start: `load-tests/README.md`, "Containers on the worker's memory"). The rules that makes
//!   sound (`protocol`, "Child code on the worker's memory"): the starting thread waits in
//!   `clone`, so the child is the only user of that thread's thread-local state (errno, malloc's
//!   per-thread cache); whatever the child allocates it frees before `execve` or `_exit`, on
//!   every path (tested: `tests/heap.rs`); nobody signals it
//!   before its exec (the worker learns its pid only then), and the OOM killer never picks a
//!   vfork child that shares its parent's memory — which matters because an OOM kill takes every
//!   process sharing the victim's memory with it. The worker's memory is non-dumpable from the
//!   first container on (P2 sets it, and P3's change of ids would), so no process of the job's
//!   uid can ptrace P3 between its `setresuid` and its `execve`. Everything the children need —
//!   argv, env, paths, the input files — is validated and turned into C strings *before* the
//!   clone (`run::plan`); child code never returns or unwinds (every path ends in `_exit`, errors
//!   are written to an error pipe), and first moves its descriptors to fixed numbers and closes
//!   all others (`close_range`), so no worker socket — and no pipe of another job being spawned
//!   concurrently — reaches a container.
//! - **The worker supervises P2 itself**: it polls a pidfd of P2, kills it with `SIGKILL` (its
//!   own unreaped child: the pid cannot have been recycled) and reaps it. Because a pid
//!   namespace's init finishes exiting only after every other process of the namespace is gone,
//!   **P2 reaped ⇒ no process of the job remains** and the mount namespace (tmpfs, overlay,
//!   proc, …) is released. Earlier versions had a supervisor process P1 between the worker and
//!   P2 (it made the pid namespace by `unshare` and forked P2): a second fork of the worker's
//!   whole address space, and its teardown, per job (`load-tests/README.md`, "A container job
//!   without P1"); later ones forked P2 (a full copy of the worker's address space).
//! - **P2**, PID 1 of the job, blocks SIGCHLD and the forwarded signals (TERM, INT, HUP, QUIT,
//!   USR1, USR2), starts P3, and `execveat`s the helper as `nekton-init` (the mask, its child and
//!   the status pipe survive the exec). P3 is a vfork-style child (`clone(CLONE_VM |
//!   CLONE_VFORK)` on a stack of its own, `spawn::spawn_p3`): it shares P2's memory — the
//!   worker's — and P2 is suspended, until P3 `execveat`s the helper (`load-tests/README.md`, "A
//!   container job's processes"); P3 has its own descriptor table, signal handlers, credentials
//!   and filesystem context. The helper's init is non-dumpable
//!   from its first instruction, writes "ready" to P3's `nekton-exec`, forwards those signals
//!   to P3, reaps every child with `wait4(-1, WNOHANG)` (orphans too), and when P3 has exited
//!   writes its status and `getrusage(RUSAGE_CHILDREN)` to the status pipe and exits — so no
//!   daemon outlives the job.
//! - **P3** resets signal dispositions (the worker ignores SIGPIPE; ignored signals survive
//!   exec), `setsid`, puts the stdin memfd (sealed, offset 0: a job reading stdin sees EOF, never
//!   blocks) and the stdout/stderr pipes on 0/1/2, `chdir`s to the working directory (after
//!   `pivot_root`: it cannot resolve outside the root, and no host descriptor is open —
//!   CVE-2024-21626), sets `RLIMIT_CPU`, `RLIMIT_CORE` 0 and `RLIMIT_NOFILE`, drops
//!   capabilities, sets groups/gid/uid, sets `no_new_privs`, marks every fd ≥ 3 close-on-exec,
//!   installs the seccomp filters (last) and `execveat`s the helper as `nekton-exec`, which
//!   waits for the init's "ready" byte (EOF: P2 failed and reported it; exit 127), then
//!   `execve`s `argv[0]` looked up in the container's `PATH` and reports a failure itself: the
//!   job's program never runs beside an init that is still on the worker's memory. The
//!   error pipe is close-on-exec: the worker reads EOF
//!   with no message ⇒ the job's program is running (the start of its wall time).
//!
//! # Mount sequence (in P2, inside the job's private mount namespace)
//!
//! 1. The scratch tmpfs (`size` = `limits.disk_bytes` or `scratch_bytes`, 0700, nosuid, nodev)
//!    is made by the *worker* before the fork, as a detached mount (`fsopen`/`fsconfig`/
//!    `fsmount`), and handed to the children at a fixed descriptor
//!    ([`protocol::FD_SCRATCH`]); P2 attaches it with `move_mount` on `<state_dir>/jobs/<dir>` —
//!    an empty directory the worker created — in the job's namespace only: a crash cannot leak a
//!    host mount (the detached mount dies with the last descriptor); the worker `rmdir`s the
//!    directory afterwards. Inside: `upper/`, `work/`, `rootfs/`. When the run's writable layer
//!    is wanted after the job (artifacts, `chain.keep`), the worker keeps its own descriptor of
//!    the mount: once the job's namespace is gone the mount is detached (lazily unmounted) but
//!    still readable through it. A run with `chain.keep` hands the job a *clone* of the mount
//!    instead and keeps the original detached, so it can become a base ([`chain`] module). A
//!    run that wants nothing afterwards hands the job its only descriptor: the tmpfs is freed
//!    with the job's mount namespace, when its last process exits.
//!    A run on a base (`chain.base`) also gets a read-only clone of the base's mount
//!    ([`protocol::FD_BASE`]), attached by P2 on `<dir>/base`.
//! 2. overlayfs on `rootfs/` with the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`),
//!    one `lowerdir+` per layer (top first: a base's `<dir>/base/upper`, then
//!    [`ImageStore::lowerdirs`](image_store::ImageStore); rootless, each image layer is first
//!    cloned with `open_tree(OPEN_TREE_CLONE)`, made idmapped with the job's user namespace by
//!    `mount_setattr(MOUNT_ATTR_IDMAP)` and attached on `<dir>/l<i>`, which the overlay names
//!    instead: a layer file owned by 0 on disk is the job's root's, and nothing on disk is
//!    chowned or copied; `upper/` is chowned to the job's root, so the job's writes land as its
//!    host ids; a base made in another range is cloned idmapped from the build's range to the
//!    job's),
//!    so the page-sized `mount(2)` data limit never applies (each `fsconfig` string is ≤ 255
//!    bytes, checked by the worker). An image without layers (and no base) gets an empty lower
//!    dir. A base's whiteouts and opaque directories act as in any lower layer: a file the build
//!    deleted stays deleted.
//! 3. With the overlay root open as a descriptor, *before anything is mounted inside it*: the
//!    user is resolved from the image's `/etc/passwd` and `/etc/group` (read with
//!    `RESOLVE_IN_ROOT`, needed now to own the input files), `/etc/hostname` and `/etc/hosts` are
//!    written (an image symlink there is replaced, not followed), the working directory is
//!    created (owned by the job user) and the input files are written below it. A symlink such
//!    as `/etc/hosts -> /proc/sys/kernel/core_pattern` therefore can only reach image files.
//! 4. Kernel filesystems, each attached with `move_mount` to a descriptor of its target opened
//!    with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (created if
//!    missing; a symlink there is an `image_error`): fresh `proc` (nosuid, nodev, noexec),
//!    `sysfs` read-only, `/dev` a 64 KiB tmpfs (nosuid, noexec) with `null zero full random
//!    urandom tty` made by `mknodat` (0666), `devpts` (newinstance, ptmxmode=0666, mode=0620) on
//!    `/dev/pts`, `/dev/ptmx -> pts/ptmx`, `/dev/shm` (tmpfs, `size=shm_bytes`, nosuid, nodev,
//!    noexec), `fd stdin stdout stderr` links. Rootless, `/dev` and `/dev/shm` are owned by
//!    the job's root and devpts' tty group is the job's gid 5 (host ids of its range); the
//!    device nodes stay the host's root's (0666). Then Docker's masked paths (files get a bind of
//!    `/dev/null` made with `open_tree(OPEN_TREE_CLONE)`, directories an empty read-only tmpfs;
//!    absent ones skipped) and read-only paths (a recursive `open_tree` clone of the path, made
//!    read-only/nosuid/nodev/noexec with `mount_setattr` while detached, attached onto itself).
//! 5. `fchdir(root)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`, `chdir("/")`,
//!    `sethostname` (the first 12 `[A-Za-z0-9-]` characters of the job id, else `nekton`).
//!
//! # Invariants
//!
//! - `run()` returns only after the init (P2) has been reaped: no process of the job is left,
//!   whatever the outcome (exit, signal, timeout, output limit, cancel, setup failure). If the
//!   `run` future is dropped mid-job, a guard kills the init (and with it the job) and a thread
//!   reaps it.
//! - The job's scratch tmpfs outlives the job only through the worker's descriptor of it, never
//!   as a host mount: dropped at the end of `run()` (after its artifacts are read), or, for a
//!   kept run, held by the returned [`Base`](runtime_core::Base) (read-only) until its last
//!   clone is dropped. That last close frees the tmpfs, so it happens on a blocking thread
//!   (`chain::ScratchFd`), never on an async runtime's worker. Its pages stay charged to the
//!   memory cgroup of the job that wrote them.
//! - Artifacts (`request.artifacts`) are collected after the init was reaped — the layer can no
//!   longer change — from the run's writable layer only (`upper/` of the worker's descriptor of
//!   the scratch tmpfs; relative patterns from the working directory), by
//!   [`runtime_core::collect`] on a blocking thread: `openat2` beneath that directory, no
//!   symlinks, no magic links, no mount crossing; regular files with one link only (an image
//!   file the job hard-linked is copied up with two); whiteouts skipped; capped per file, per
//!   run and in count, so a huge sparse file costs one capped read. Files the job did not write
//!   (the image's, a base's) are not its artifacts.
//! - A run on a base never writes to it: the base is a read-only lower layer of the run's
//!   overlay, the run's writes go to its own scratch tmpfs; any number of runs may share a
//!   base at once. A base of another backend or another image reference is a `spec_error`;
//!   a run on a base cannot itself be kept (one level). Chains need Linux 6.15+ (the clone of a
//!   detached mount); elsewhere a `keep` or `base` run is a `spec_error` saying so.
//! - No host path is ever built from image or job data: host paths are the state dir (the job
//!   directory name keeps only `[A-Za-z0-9_-]` of the job id) and the store's digest-named layer
//!   dirs; everything inside the container is resolved from descriptors with `openat2`.
//! - Job directories (and job cgroups) are named `<owner>.<seq>-<job id>`, `<owner>` being the
//!   worker's [`Owner`](runtime_core::owner::Owner) `<pid>.<process start time>` — the names
//!   earlier versions wrote, so their leftovers are read the same way. [`ContainerBackend::new`]
//!   removes those whose owner is not alive (a crashed predecessor, also one whose pid a live
//!   process now has; it must not share its `state_dir` with another live worker of a different
//!   pid namespace), skipping any that is a mount point in our namespace.
//! - Output goes through the job's [`OutputSink`](runtime_core::OutputSink) live; past the cap the job
//!   is killed with `output_limit`; bytes are bytes.
//! - Verdicts: the kill reason if the worker killed the job (cancel, wall time, output limit);
//!   else a setup failure reported on the error pipe (`spec_error` for the job's fault — command
//!   not found, unknown user, input file through a symlink; `image_error` for the image's —
//!   symlinked mount points; `internal_error` otherwise); else P3's exit status (`SIGXCPU`, or
//!   `SIGKILL` after the CPU limit was used, is `cpu_timeout`).
//!
//! # Security decisions
//!
//! - Namespaces: mount, UTS, IPC, network (only `lo`), cgroup, pid — always; and, rootless (the
//!   default where the host has idmapped mounts on the image store's filesystem; [`userns`]
//!   module), a **user namespace** mapping the job's ids `0..size` to a range of unprivileged
//!   host ids (default 65,536 ids per range from `0x7000_0000`, the block systemd leaves
//!   unused) that no other running container has. Its root is root in that namespace only:
//!   the other namespaces are owned by the host's, so its capabilities act on its own
//!   processes and on files its ids own, nothing else; if every other wall failed it would be
//!   an unprivileged host uid, not root. The namespace is entered by P2 and P3 *after* the
//!   mounts (so `/dev` has real device nodes, `sysfs` and the masks work as before, and bridge
//!   netns stay the worker's to manage). Ports below 1024 are opened to every uid of the job's
//!   own network namespace (`ip_unprivileged_port_start=0`, Docker's default) because the root
//!   of the job's user namespace has no `NET_BIND_SERVICE` in a network namespace the host's
//!   owns. A job user whose uid/gid the range does not map is a spec (or image) error.
//!   The fallback — `UsernsMode::Off` (`--userns off`), or automatically where the probe at
//!   start fails (logged as a warning and in the preflight) — is the job's root being the
//!   host's root, confined by the rest.
//! - Capabilities: the bounding set keeps Docker's default set minus `NET_RAW` and `MKNOD`
//!   (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
//!   SYS_CHROOT, AUDIT_WRITE, SETFCAP); effective = permitted = that set for uid 0, empty for
//!   any other uid; inheritable and ambient always empty (the fix of CVE-2022-24769: a non-empty
//!   inheritable set lets file capabilities of the image grant privileges). `no_new_privs` makes
//!   setuid/setgid files and file capabilities inert.
//! - P2 is non-dumpable, on the worker's memory and again as the helper's init (it keeps every
//!   capability and no seccomp filter): the job cannot ptrace it or read `/proc/1/mem`. Its
//!   parent, the worker, is outside the job's pid namespace.
//! - The worker's binary is out of reach (CVE-2019-5736 family): when the job's program starts,
//!   the container's init is the sealed helper memfd (`/proc/1/exe`, `/proc/1/map_files`), and
//!   so was the job's process at its `execve` — a job running `/proc/self/exe`, a
//!   `#!/proc/self/exe` script or an ELF with that `PT_INTERP` runs the helper, which refuses
//!   (exit 127) with the job's own privileges. The memfd is sealed against writes and size
//!   changes and open read-only. Tested by `tests/self_exe.rs`.
//! - Only descriptors 0–2 survive the job's `execve`.
//! - **seccomp** ([`seccomp`] module): an allowlist kept as the reviewed data file
//!   `seccomp/profile.json` (versioned; a comment on every group; a `deny` list with the reason
//!   for each deliberate omission), in the spirit of Docker's default, tighter: `io_uring_*`,
//!   `keyctl`/`add_key`/`request_key`, `bpf`, `userfaultfd`, `perf_event_open`, the mount family
//!   (`mount`, `umount2`, `fsopen`, `fsmount`, `move_mount`, `open_tree`, `pivot_root`, …),
//!   `open_by_handle_at`, `kexec_*`, module calls, `ptrace` and `process_vm_*`, `setns`, swap,
//!   `reboot`, `acct`, clock setting fail with `EPERM`; `clone` and `unshare` only without
//!   namespace flags (masked argument check: no `unshare -U`); `socket` without `AF_VSOCK`;
//!   `clone3` and syscalls newer than the profile fail with `ENOSYS` (libc falls back to the
//!   checked `clone`); another ABI (i386 `int 0x80`) kills the process (`SIGSYS`), x32
//!   numbers fail with `EPERM`. Parsed and checked with `seccompiler` once per backend (x86_64
//!   and aarch64 tables are checked by unit tests; another architecture refuses to start the
//!   backend) and generated as one BPF program with a binary search on the syscall number,
//!   checked by the tests to decide exactly as seccompiler's three linear filters; installed by
//!   P3 after `no_new_privs` and the capability drop, as the last step before `execve`
//!   (≈ 60–70 µs, was ≈ 0.9–1 ms with seccompiler's filters). Not Docker's:
//!   `ptrace` (the init keeps every capability, outside the filter), 32-bit syscalls, `unshare` of namespaces.
//! - rlimits: `RLIMIT_CORE` 0, `RLIMIT_NOFILE` `min(1024, max_open_files)` /
//!   `max_open_files` (default 4096). `RLIMIT_NPROC` is not used: it counts per uid across the
//!   host (with user namespaces off the job's root is the host's root; rootless, sequential
//!   jobs of a range share its uids); the pids cgroup bounds processes.
//! - The writable layer and `/dev/shm` tmpfs have `nr_inodes` = size / 4 KiB (at least 1024),
//!   `/dev` 64: an inode flood ends in `ENOSPC`.
//! - **cgroups** ([`cgroup`] module): one per job, `<parent>/nekton-jobs/<name>` in each hierarchy
//!   (v2, or v1 memory/cpu/cpuacct/pids/freezer on hybrid hosts). The spawner's mover thread writes the pid
//!   of P2 — which waits for "go" on the lifeline before its cgroup matters — into each
//!   `cgroup.procs`, so every process of the job is born inside; P2 then unshares the cgroup
//!   namespace (the job sees `/`). Limits: memory (`memory_bytes`; swap 0 / memsw = memory), pids
//!   (`Limits::pids` or `default_pids`; P2 counts), CPU quota (`cpu_millicores`). `cpu_time` is
//!   enforced on the whole cgroup by the worker polling its CPU usage (`cpu_timeout` at the limit);
//!   `RLIMIT_CPU` per process stays as a backstop one second past the limit (the kernel checks it
//!   against tick-sampled CPU time, which can run ahead of the cgroup's exact count: at the same
//!   value it could stop a job short of its limit). An OOM kill of any process of the job makes the
//!   verdict `memory_limit` (unless cancelled), and so does a start that failed with the memory
//!   peak at the limit (an allocation refused there: the init and job process are not OOM-killed
//!   while on the worker's memory). The bill (CPU user/system, `memory.peak` /
//!   `max_usage_in_bytes`, `pids.peak`) is read after the init is reaped, then the cgroup is
//!   emptied (`cgroup.kill`, or freeze + SIGKILL + thaw on v1) and removed. The writable layer
//!   (tmpfs) and /dev/shm are charged to the job's memory. A job whose limits this host cannot
//!   enforce (see [`Preflight`]) is refused with `spec_error`.

mod cgroup;
mod chain;
mod helper;
mod netpool;
mod protocol;
mod rootfs;
mod run;
mod seccomp;
mod spawn;
mod sys;
mod userns;
mod users;
mod verdict;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

pub use cgroup::{CgroupVersion, Preflight};
pub use userns::{UsernsConfig, UsernsMode};

use image_store::ImageService;
use runtime_core::owner::Owner;
use runtime_core::{Backend, ExecReport, ExecRequest, JobIo, Program};

/// Configuration of a [`ContainerBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Root for per-job dirs (`<state_dir>/jobs/<job_id>/`), created 0700 if missing.
    pub state_dir: PathBuf,
    /// Size cap of each job's writable layer (a tmpfs holding upper/work dirs). Default 1 GiB.
    pub scratch_bytes: u64,
    /// Size of /dev/shm. Default 64 MiB.
    pub shm_bytes: u64,
    /// `RLIMIT_NOFILE` hard limit of each job (the soft limit is this, at most 1024, so
    /// `select()` users keep working). Default 4096.
    pub max_open_files: u64,
    /// Where job cgroups are created: a path from the root of each cgroup hierarchy (jobs go
    /// to `<parent>/nekton-jobs/<job>`). `None` (default): below the worker's own cgroup.
    pub cgroup_parent: Option<String>,
    /// A cgroup2 mount to create the job cgroups in, for a host whose controllers are on a
    /// unified hierarchy mounted elsewhere than `/sys/fs/cgroup` (the hybrid layout's
    /// `/sys/fs/cgroup/unified`, once the operator has moved memory, cpu and pids there).
    /// `None` (default): `/sys/fs/cgroup` when it is cgroup2, else the v1 hierarchies.
    pub cgroup_root: Option<PathBuf>,
    /// Run jobs even when this host cannot enforce a limit they have (a missing memory or pids
    /// controller), instead of refusing them. Default `false`; only for tests of the v2 path
    /// on a host whose memory and pids controllers are bound to v1. The preflight still lists
    /// what is not enforced.
    #[doc(hidden)]
    pub allow_unenforced_limits: bool,
    /// CPU quota of each job in thousandths of a core (1000 = one core, the default); 0 = none.
    pub cpu_millicores: u64,
    /// Most processes/threads of a job when its `Limits::pids` is `None`. Default 256.
    pub default_pids: u64,
    /// Per-job cgroups (default `true`). `false` is for measurements only (the benchmark's
    /// "without limits" runtime): jobs then run with no memory, pids or CPU-quota enforcement
    /// and no cgroup bill.
    pub cgroups: bool,
    /// User namespaces of the jobs (rootless containers): on where the host supports them,
    /// with the host id ranges they map. See [`UsernsConfig`] and "Security decisions".
    pub userns: UsernsConfig,
    /// How many fresh network namespaces (`lo` up) to keep ready for `network: none` jobs, so
    /// that making one is off the job's path (see `netpool`); 0 = each job's P2 makes its own.
    /// Default 4.
    pub netns_pool: usize,
    /// v1 (and hybrid) hosts: how many emptied job cgroups to keep, reset, for later jobs
    /// instead of removing them and making new ones (see `cgroup::recycle`); 0 = a new cgroup
    /// per job. Nothing on v2. Default 16.
    pub recycled_cgroups: usize,
    /// How many bridge attachments (a network namespace with `eth0` on the bridge, its address
    /// leased and configured) to keep ready for `network: bridge` jobs once bridge networking is
    /// enabled, so that making one is off the job's path (see `net::pool`); each holds an
    /// address of the job subnet while it waits. 0 = each job attaches on its path. Default 2.
    pub bridge_pool: usize,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/nekton/containers"),
            scratch_bytes: 1 << 30,
            shm_bytes: 64 << 20,
            max_open_files: 4096,
            cgroup_parent: None,
            cgroup_root: None,
            allow_unenforced_limits: false,
            cpu_millicores: 1000,
            default_pids: 256,
            cgroups: true,
            userns: UsernsConfig::default(),
            netns_pool: 4,
            recycled_cgroups: 16,
            bridge_pool: 2,
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
    /// Bridge networking, or why a `bridge` job cannot have it.
    pub network: Result<std::sync::Arc<net::Network>, String>,
    pub config: ContainerConfig,
    pub images: ImageService,
    pub spawner: spawn::Spawner,
    pub jobs_dir: PathBuf,
    /// `<pid>.<start time>` of this process: the prefix of its job directories.
    pub tag: String,
    pub seq: AtomicU64,
    pub cap_last: u32,
    /// The compiled seccomp profile (shared by every job of this backend).
    pub seccomp: std::sync::Arc<seccomp::Filters>,
    pub cgroups: cgroup::Cgroups,
    /// The container helper in a sealed memfd, made once per backend ([`helper`]).
    pub helper: std::sync::Arc<helper::SealedHelper>,
    /// The host id ranges of the jobs' user namespaces; `None`: user namespaces are off.
    pub ranges: Option<std::sync::Arc<userns::Ranges>>,
    /// Network namespaces ready for `network: none` jobs; `None`: P2 makes each.
    pub netns_pool: Option<netpool::NetnsPool>,
    /// Bridge attachments ready for `network: bridge` jobs; `None`: each job attaches on its
    /// path (also while bridge networking is off).
    pub bridge_pool: Option<net::pool::BridgePool>,
    /// Job cgroups whose removal (after the job's report) has not finished.
    pub removals: tokio::sync::watch::Sender<usize>,
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
/// Whether the process that named a job directory or cgroup `<owner>.…` still runs, `<owner>`
/// being [`Owner`]'s text form `<pid>.<start time>` (the same names the previous version wrote,
/// so its leftovers are judged the same way). Names without an owner are nobody's: stale.
fn owner_alive(name: &str) -> bool {
    Owner::parse_prefix(name).is_some_and(|(owner, _)| owner.is_alive())
}

fn remove_stale_job_dirs(jobs_dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent_dev = std::fs::metadata(jobs_dir)?.dev();
    for entry in std::fs::read_dir(jobs_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if owner_alive(&name) {
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

#[cfg(test)]
mod stale_job_dir_tests {
    use super::*;

    #[test]
    fn job_dirs_of_dead_or_recycled_owners_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = tmp.path();
        let me = Owner::current().expect("procfs");
        let live = format!("{me}.7-live");
        // This pid with another start time: a predecessor whose pid this process was given.
        let recycled = format!("{}.{}.8-recycled", me.pid(), me.start_time() + 1);
        for name in [
            live.as_str(),
            &recycled,
            "999999999.1.0-dead",
            "0.1.0-pid0",
            "junk",
        ] {
            std::fs::create_dir_all(jobs.join(name).join("upper/x")).unwrap();
        }
        std::fs::write(
            jobs.join(format!("{}.{}.9-file", me.pid(), me.start_time() + 1)),
            b"",
        )
        .unwrap();
        remove_stale_job_dirs(jobs).unwrap();
        let left: Vec<String> = std::fs::read_dir(jobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [live]);
    }
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
        // Before any cleanup: without procfs every owner would look dead.
        let me = Owner::current().map_err(|e| prerequisite(e.to_string()))?;
        if config.max_open_files < 64 {
            return Err(prerequisite(
                "max_open_files must be at least 64 (a job needs descriptors to run at all)",
            ));
        }
        seccomp::Filters::kernel_support().map_err(prerequisite)?;
        let seccomp = seccomp::Filters::compile().map_err(prerequisite)?;
        tracing::info!(
            profile = %seccomp.name,
            version = seccomp.version,
            instructions = seccomp.instructions(),
            "container seccomp profile compiled"
        );
        remove_stale_job_dirs(&jobs_dir).map_err(state_err(&jobs_dir))?;
        let (ranges, userns_line) = setup_userns(&config.userns, images.store().root())?;
        // The host preflight: what can be enforced here (jobs needing the rest are refused).
        let mut cgroups = if config.cgroups {
            let mut cg = cgroup::Cgroups::detect(
                config.cgroup_parent.as_deref(),
                config.cpu_millicores,
                config.cgroup_root.as_deref(),
            );
            cg.allow_unenforced = config.allow_unenforced_limits;
            cg.enable_recycling(config.recycled_cgroups);
            cg
        } else {
            cgroup::Cgroups::disabled()
        };
        cgroups.preflight.userns = userns_line;
        if cgroups.preflight.problems.is_empty() {
            tracing::info!(preflight = %cgroups.preflight, "container host preflight");
        } else {
            tracing::warn!(preflight = %cgroups.preflight, "container host preflight: some limits cannot be enforced");
        }
        cgroups.remove_stale(owner_alive);
        let helper = helper::SealedHelper::create().map_err(prerequisite)?;
        let spawner = spawn::Spawner::start().map_err(ContainerError::Spawner)?;
        let netns_pool =
            netpool::NetnsPool::start(config.netns_pool, ranges.is_some()).map_err(prerequisite)?;
        Ok(Self {
            shared: Shared {
                network: Err("bridge networking is not enabled on this worker".into()),
                config,
                images,
                spawner,
                jobs_dir,
                tag: me.to_string(),
                seq: AtomicU64::new(0),
                cap_last,
                seccomp: std::sync::Arc::new(seccomp),
                cgroups,
                helper: std::sync::Arc::new(helper),
                ranges,
                netns_pool,
                bridge_pool: None,
                removals: tokio::sync::watch::channel(0).0,
            },
        })
    }
}

/// Probes user namespaces and idmapped mounts on the image store's filesystem (once, at
/// start) per `config.mode`: the ranges when on, and the preflight's `userns` text. `On` on a
/// host that cannot is an error; `Auto` falls back to off with a warning saying why.
fn setup_userns(
    config: &UsernsConfig,
    store_root: &std::path::Path,
) -> Result<(Option<std::sync::Arc<userns::Ranges>>, String), ContainerError> {
    if config.mode == UsernsMode::Off {
        tracing::info!(
            "container user namespaces are off (--userns off): a job's root is the host's root, \
             confined by the other walls"
        );
        return Ok((None, "off (--userns off)".into()));
    }
    config
        .check()
        .map_err(|e| prerequisite(format!("user namespaces: {e}")))?;
    let probe = userns::make_userns(&[(0, config.base, config.size)])
        .and_then(|ns| userns::probe_idmap(store_root, &ns).map(|()| ns));
    match probe {
        Ok(first) => {
            let line = format!(
                "on (host ids {}..{}: {} ranges of {})",
                config.base,
                u64::from(config.base) + u64::from(config.size) * u64::from(config.ranges),
                config.ranges,
                config.size
            );
            tracing::info!(
                base = config.base,
                size = config.size,
                ranges = config.ranges,
                "container jobs run in user namespaces (rootless): a job's root is host id {}+",
                config.base
            );
            Ok((
                Some(std::sync::Arc::new(userns::Ranges::new(*config, first))),
                line,
            ))
        }
        Err(reason) if config.mode == UsernsMode::On => Err(prerequisite(format!(
            "user namespaces (--userns on): {reason}; use a kernel and image-store filesystem \
             with idmapped mounts (ext4, xfs, btrfs, tmpfs on Linux 6.3+) or --userns off"
        ))),
        Err(reason) => {
            tracing::warn!(
                reason,
                "container user namespaces are OFF (automatic fallback): a job's root is the \
                 host's root, confined by the other walls; put the state dir on a filesystem \
                 with idmapped mounts (ext4, xfs, btrfs) or pass --userns off to choose this"
            );
            Ok((None, format!("OFF (unsupported here: {reason})")))
        }
    }
}

impl ContainerBackend {
    /// What this host can enforce (cgroup version, controllers, swap, seccomp), found by
    /// [`new`](Self::new).
    pub fn preflight(&self) -> &Preflight {
        &self.shared.cgroups.preflight
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

/// The writable layer a kept run (`chain.keep`) left in `base`: a descriptor of its read-only
/// scratch tmpfs (`upper/` is the layer), for inspecting it from the host — its files' owners
/// are host ids (the run's user namespace range when rootless). `None` for a base this backend
/// did not make.
pub fn kept_layer(base: &runtime_core::Base) -> Option<std::os::fd::OwnedFd> {
    let kept = base.get::<chain::Kept>()?;
    kept.scratch.as_fd().try_clone_to_owned().ok()
}

// Bridge networking (`NetworkMode::Bridge`): see the `net` module docs.
mod net;

pub use net::{Allowed, BridgeConfig, CleanupReport, Ipv4Net, cleanup as cleanup_network};

impl ContainerBackend {
    /// Enables `network: bridge` jobs: prepares the host's bridge, nftables table and address
    /// leases (see [`BridgeConfig`]) and cleans what a crashed worker left. On failure, bridge
    /// jobs end with `spec_error` and the returned reason; other jobs are unaffected.
    pub fn enable_bridge(&mut self, config: BridgeConfig) -> Result<(), String> {
        let network = Owner::current()
            .map_err(|e| e.to_string())
            .and_then(|owner| net::Network::new(config, owner));
        // A pool of an earlier network goes first (its attachments are released).
        self.shared.bridge_pool = None;
        match network {
            Ok(n) => {
                self.shared.bridge_pool = net::pool::BridgePool::start(
                    &n,
                    self.shared.config.bridge_pool,
                    self.shared.ranges.is_some(),
                );
                self.shared.network = Ok(n);
                Ok(())
            }
            Err(e) => {
                let reason = format!("bridge networking is unavailable on this worker: {e}");
                self.shared.network = Err(reason.clone());
                Err(reason)
            }
        }
    }

    /// Waits until the addresses of finished bridge jobs are free again (their conntrack entries
    /// flushed and leases removed: the last step of a job's network teardown runs in the
    /// background so it does not delay the job's report).
    pub async fn settle_network(&self) {
        if let Ok(n) = &self.shared.network {
            n.settle().await;
        }
    }

    /// Waits until the pool of prepared bridge attachments is full and idle, and returns their
    /// addresses: a settled network ([`settle_network`](Self::settle_network)) holds these
    /// leases, veths and namespaces besides those of running jobs. Empty without a pool.
    #[doc(hidden)]
    pub async fn prepared_network(&self) -> Vec<std::net::Ipv4Addr> {
        match &self.shared.bridge_pool {
            Some(p) => p.settled().await,
            None => Vec::new(),
        }
    }

    /// Waits until everything finished jobs left to the background is done: their cgroups and job
    /// directories removed (after the bill is read, off the job's path) and, for bridge jobs, their
    /// addresses free again ([`settle_network`](Self::settle_network)).
    pub async fn settle(&self) {
        let mut rx = self.shared.removals.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        self.settle_network().await;
    }
}
