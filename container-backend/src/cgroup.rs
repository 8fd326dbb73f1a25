//! One cgroup per container job: limits (memory with swap off, CPU quota, pids), the usage bill
//! (CPU user/system, peak memory, peak pids, OOM kills), killing everything at the end, removal,
//! and the host preflight. cgroup v2 and v1 (the hybrid layout: memory, cpu, cpuacct, pids on v1)
//! go through the same code: a [`Hierarchy`] of this module ([`Dirs`]) hands `cgroups-rs` the
//! directories of the job's cgroup — one per v1 controller hierarchy, or the single v2 directory
//! for every controller — and `cgroups-rs`' controllers set the limits and read the statistics.
//!
//! # Layout
//!
//! Job cgroups are created in `<parent>/nekton-jobs/<job dir name>` of each hierarchy used
//! (v1: memory, cpu, cpuacct, pids, freezer; v2: the unified one), where `<parent>` is the
//! operator's [`ContainerConfig::cgroup_parent`](super::ContainerConfig) (a path from the root of
//! each hierarchy) or, by default, the worker's own cgroup (from `/proc/self/cgroup`). On v2 the
//! "no internal processes" rule forbids enabling controllers for children of a cgroup that holds
//! processes: with the default parent, the worker first moves itself into the leaf
//! `<own>/nekton-worker` (and a backend created later in the same process recognises that leaf
//! and uses its parent again).
//!
//! # Joining without a race, cheaply
//!
//! The job's processes are *born* in the cgroup: the worker's spawner thread starts P2 — the
//! job's init, in a new pid namespace — which sets up its namespaces and builds the root
//! filesystem meanwhile; the spawner's mover thread writes P2's pid into each precomputed
//! `cgroup.procs` path and only then writes "go" on P2's lifeline. P2 waits for it before anything the cgroup matters for
//! (before its cgroup namespace and the job's cgroup2 mount, and before it starts the job), then
//! unshares its cgroup namespace, so the job sees its own cgroup as `/`. Everything the job's
//! processes do (the job's process and all its descendants, their writes to the writable layer)
//! is charged to the job; what P2 wrote while it built the root filesystem before the move (the
//! input files, `/etc/hosts`) may be charged to the worker's cgroup.
//! Measured on this project's machine (Linux 6.18, hybrid): a task moving *itself* into a fresh
//! v1 `cpu` cgroup waited ≈ 3 ms in 40 % of the tries (the running task is rescheduled into the
//! new group and waits for a tick behind other runnable tasks); moving a task from another
//! process cost ≈ 0.1 ms per hierarchy. Earlier versions forked P2 from a supervisor process P1,
//! on v2 with `clone3(CLONE_INTO_CGROUP)`; the supervisor is gone (one fork of the worker less
//! per job, see `load-tests/README.md`), and v2 moves P2 like v1. (P2 now shares the worker's
//! memory, so a `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)` could start it in the
//! cgroup on v2; `clone3` has no entry function, so it needs a few lines of assembly, and the
//! input files P2 writes would be charged to the job: not done.)
//!
//! # What v2 adds
//!
//! - `memory.oom.group = 1`: an OOM kill takes the whole job (every process of the cgroup, the
//!   init included), not one process the job's init could survive and report as an ordinary
//!   exit; the verdict is `memory_limit` either way (`memory.events` `oom_kill`).
//! - `memory.swap.max = 0` where swap accounting exists, `memory.peak`, `pids.peak`,
//!   `pids.events` (the pids-limit verdict) and `cgroup.kill` for killing what is left.
//! - The job's own cgroup, read-only: the container's `/sys/fs/cgroup` is a cgroup2 mount made
//!   inside the job's cgroup namespace (its root is the job's cgroup), `ro,nosuid,nodev,noexec`,
//!   so the job reads its limits and usage but changes nothing. (v1 jobs get no cgroup mount.)
//!
//! # Where cgroups-rs is bypassed (files read or written directly)
//!
//! - Creating a v2 cgroup and enabling controllers (`cgroup.subtree_control`): the crate reads
//!   the controller list from `/sys/fs/cgroup` itself, which is wrong on a hybrid host and for a
//!   non-default mount; the worker's move into its leaf.
//! - OOM kills: `memory.events` (v2; the crate reports 0) and `memory.oom_control` (v1; the
//!   crate's parser panics on unexpected text).
//! - CPU on v2 (`cpu.stat` `usage_usec`/`user_usec`/`system_usec`), `memory.peak` and
//!   `pids.peak`: small keyed files parsed here.
//! - The `cgroup.procs` writes of the spawner thread (precomputed paths).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Controller, Hierarchy, MaxValue, Subsystem};

use runtime_core::Limits;

/// The directory below the parent that holds the job cgroups.
pub const JOBS_DIR: &str = "nekton-jobs";
/// The leaf a v2 worker moves itself into (no-internal-processes rule).
pub const WORKER_LEAF: &str = "nekton-worker";
/// Sequence of job cgroup names in this process (several backends share the parents).
pub(crate) static NEXT_NAME: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// CFS period for the CPU quota.
const CFS_PERIOD_US: u64 = 100_000;

/// Which cgroup version the jobs' controllers are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Cpu,
    CpuAcct,
    Pids,
    Freezer,
}

/// What this host can enforce and measure, found when the backend starts (logged by the
/// worker). A job whose limits need something missing here is refused with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// `None`: no usable cgroup hierarchy was found (every job is refused).
    pub version: Option<CgroupVersion>,
    /// Where job cgroups are created, one entry per hierarchy (`controller=directory`).
    pub parents: Vec<String>,
    pub memory: bool,
    /// Swap accounting is available (`memory.memsw.*` on v1, `memory.swap.max` on v2), so the
    /// jobs' swap can be set to 0.
    pub swap_limit: bool,
    /// The host has swap enabled (`/proc/swaps`).
    pub host_swap: bool,
    pub cpu_quota: bool,
    pub cpu_accounting: bool,
    pub pids: bool,
    pub pids_peak: bool,
    pub memory_peak: bool,
    /// How the remaining processes of a job cgroup are killed: `cgroup.kill`, `freezer` (freeze,
    /// SIGKILL each, thaw) or `signals` (SIGKILL each).
    pub kill: &'static str,
    /// v2: `memory.oom.group` is set, so an OOM kill ends the whole job.
    pub oom_group: bool,
    /// seccomp filters are available (`Seccomp_filters` in /proc/self/status).
    pub seccomp: bool,
    /// User namespaces of the jobs: `on (…)`, or `off (…)` with the reason (set by the
    /// backend after its probe, see [`crate::UsernsMode`]).
    pub userns: String,
    /// What went wrong while preparing the hierarchies (each with its fix).
    pub problems: Vec<String>,
}

impl std::fmt::Display for Preflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yn = |b: bool| if b { "yes" } else { "NO" };
        let version = match self.version {
            Some(CgroupVersion::V1) => "v1 (hybrid or legacy layout)",
            Some(CgroupVersion::V2) => "v2",
            None => "none usable",
        };
        write!(
            f,
            "cgroups {version}; memory limit {}; swap off {}{}; cpu quota {}; cpu accounting {}; \
             pids limit {}; pids peak {}; memory peak {}; OOM kills the whole job {}; kill via {}; \
             seccomp {}; userns {}; parents [{}]",
            yn(self.memory),
            yn(self.swap_limit || !self.host_swap),
            if self.host_swap {
                ""
            } else {
                " (host has no swap)"
            },
            yn(self.cpu_quota),
            yn(self.cpu_accounting),
            yn(self.pids),
            yn(self.pids_peak),
            yn(self.memory_peak),
            yn(self.oom_group),
            self.kill,
            yn(self.seccomp),
            if self.userns.is_empty() {
                "not probed"
            } else {
                &self.userns
            },
            self.parents.join(", "),
        )?;
        if !self.problems.is_empty() {
            write!(f, "; problems: {}", self.problems.join("; "))?;
        }
        Ok(())
    }
}

/// A `cgroups-rs` hierarchy made of fixed directories: the job cgroup's directory for each
/// controller (v1: one per hierarchy; v2: the same directory for every controller).
#[derive(Debug, Clone)]
struct Dirs {
    v2: bool,
    /// v2: the parent directory (so `cgroup.kill`/removal resolve `root/<name>`).
    root: PathBuf,
    dirs: Vec<(Kind, PathBuf)>,
}

impl Hierarchy for Dirs {
    fn subsystems(&self) -> Vec<Subsystem> {
        self.dirs
            .iter()
            .map(|(kind, p)| {
                let (p, b, v2) = (p.clone(), PathBuf::new(), self.v2);
                match kind {
                    Kind::Memory => Subsystem::Mem(MemController::new(p, b, v2)),
                    Kind::Cpu => Subsystem::Cpu(CpuController::new(p, b, v2)),
                    Kind::CpuAcct => Subsystem::CpuAcct(CpuAcctController::new(p, b)),
                    Kind::Pids => Subsystem::Pid(PidController::new(p, b, v2)),
                    Kind::Freezer => Subsystem::Freezer(FreezerController::new(p, b, v2)),
                }
            })
            .collect()
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, _path: &str) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn v2(&self) -> bool {
        self.v2
    }
}

/// The host's cgroup setup for this backend: where job cgroups go and what can be enforced.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    version: Option<CgroupVersion>,
    /// The `nekton-jobs` directory of each hierarchy used.
    parents: Vec<(Kind, PathBuf)>,
    pub preflight: Preflight,
    /// CPU quota per job in thousandths of a core; 0 = no quota.
    cpu_millicores: u64,
    /// Test hook: populates a freshly created directory like the kernel would (fake v2 tree).
    fake_kernel: Option<fn(&Path)>,
    /// `ContainerConfig::cgroups == false`: no job cgroups at all (measurements only).
    disabled: bool,
    /// `ContainerConfig::allow_unenforced_limits`: jobs run even where a limit cannot be
    /// enforced (tests of the v2 path on a host whose controllers are bound to v1).
    pub allow_unenforced: bool,
    /// v1: emptied job cgroups kept for later jobs ([`recycle`]); `None` on v2, when disabled
    /// and when the layout does not allow it.
    recycler: Option<std::sync::Arc<recycle::Recycler>>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Value of `key` in a flat keyed file (`key value` lines).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

fn seccomp_available() -> bool {
    read(Path::new("/proc/self/status")).is_some_and(|s| s.contains("Seccomp_filters:"))
}

fn host_has_swap() -> bool {
    read(Path::new("/proc/swaps")).is_some_and(|s| s.lines().count() > 1)
}

/// `/proc/self/cgroup`'s path for the v2 hierarchy (`0::<path>`).
fn own_v2_path() -> Option<String> {
    read(Path::new("/proc/self/cgroup"))?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

fn rel(p: &str) -> &str {
    p.trim_start_matches('/')
}

impl Cgroups {
    /// Finds the hierarchies, prepares `<parent>/nekton-jobs` in each, and records what can be
    /// enforced. Never fails: what is missing is in [`Preflight::problems`] and makes the jobs
    /// that need it be refused.
    ///
    /// `v2_root`: a cgroup2 mount to use (`ContainerConfig::cgroup_root`); by default
    /// `/sys/fs/cgroup` if it is cgroup2, else the v1 hierarchies.
    pub fn detect(parent: Option<&str>, cpu_millicores: u64, v2_root: Option<&Path>) -> Self {
        let is_cgroup2 = |p: &Path| {
            nix::sys::statfs::statfs(p)
                .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
                .unwrap_or(false)
        };
        let root = v2_root.unwrap_or(Path::new("/sys/fs/cgroup"));
        if v2_root.is_some() && !is_cgroup2(root) {
            let mut cg = Self::unusable(
                &format!(
                    "the configured cgroup root {} is not a cgroup2 mount: mount one there \
                     (mount -t cgroup2 none {0}) or leave the setting out",
                    root.display()
                ),
                cpu_millicores,
            );
            cg.preflight.seccomp = seccomp_available();
            return cg;
        }
        let mut cg = if is_cgroup2(root) {
            match own_v2_path() {
                Some(own) => {
                    Self::setup_v2(root, &own, parent, std::process::id(), None, cpu_millicores)
                }
                None => Self::unusable(
                    "cgroup v2 is mounted on /sys/fs/cgroup but /proc/self/cgroup has no `0::` \
                     line: mount /proc",
                    cpu_millicores,
                ),
            }
        } else {
            Self::setup_v1(parent, cpu_millicores)
        };
        cg.preflight.seccomp = seccomp_available();
        cg.preflight.host_swap = host_has_swap();
        cg
    }

    fn unusable(problem: &str, cpu_millicores: u64) -> Self {
        Self {
            version: None,
            parents: Vec::new(),
            preflight: Preflight {
                kill: "signals",
                problems: vec![problem.to_string()],
                ..Preflight::default()
            },
            cpu_millicores,
            fake_kernel: None,
            disabled: false,
            allow_unenforced: false,
            recycler: None,
        }
    }

    /// No job cgroups: nothing is enforced through them and nothing is refused (for
    /// measurements; see `ContainerConfig::cgroups`).
    pub fn disabled() -> Self {
        let mut cg = Self::unusable(
            "per-job cgroups are disabled in the configuration: memory, pids and CPU quota are \
             NOT enforced",
            0,
        );
        cg.disabled = true;
        cg
    }

    /// v1: keep up to `cap` emptied job cgroups for later jobs instead of removing them (see
    /// [`recycle`]). Nothing on v2, where a job gets a fresh cgroup: its `cpu.stat` and peaks
    /// cannot be reset.
    pub fn enable_recycling(&mut self, cap: usize) {
        self.recycler = (self.version == Some(CgroupVersion::V1) && !self.disabled)
            .then(|| recycle::Recycler::new(&self.parents, cap))
            .flatten()
            .map(std::sync::Arc::new);
    }

    /// The pool of kept cgroups, if this host recycles them.
    pub fn recycler(&self) -> Option<std::sync::Arc<recycle::Recycler>> {
        self.recycler.clone()
    }

    fn mkdir(&self, dir: &Path) -> std::io::Result<()> {
        match std::fs::create_dir(dir) {
            Ok(()) => {
                if let Some(f) = self.fake_kernel {
                    f(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The v2 layout below `root` (normally `/sys/fs/cgroup`; a fake tree in unit tests).
    pub(crate) fn setup_v2(
        root: &Path,
        own: &str,
        parent: Option<&str>,
        self_pid: u32,
        fake_kernel: Option<fn(&Path)>,
        cpu_millicores: u64,
    ) -> Self {
        let mut cg = Self::unusable("", cpu_millicores);
        cg.preflight.problems.clear();
        cg.fake_kernel = fake_kernel;
        cg.version = Some(CgroupVersion::V2);
        let problems = &mut Vec::new();
        let base = match parent {
            Some(p) => rel(p).to_string(),
            None => {
                let own = rel(own);
                let own = own
                    .strip_suffix(WORKER_LEAF)
                    .map(|o| o.trim_end_matches('/'))
                    .unwrap_or(own);
                own.to_string()
            }
        };
        let base_dir = root.join(&base);
        if parent.is_none() && !base.is_empty() {
            // No internal processes: move the worker into a leaf of its own cgroup first.
            let occupied =
                read(&base_dir.join("cgroup.procs")).is_some_and(|s| !s.trim().is_empty());
            if occupied {
                let leaf = base_dir.join(WORKER_LEAF);
                let r = cg
                    .mkdir(&leaf)
                    .and_then(|()| std::fs::write(leaf.join("cgroup.procs"), self_pid.to_string()));
                if let Err(e) = r {
                    problems.push(format!(
                        "cannot move the worker into {} ({e}): on cgroup v2 a cgroup with \
                         processes cannot delegate controllers; give the worker a cgroup it may \
                         manage (systemd: Delegate=yes) or set --cgroup-parent",
                        leaf.display()
                    ));
                }
            }
        }
        let available = read(&base_dir.join("cgroup.controllers")).unwrap_or_default();
        let jobs = base_dir.join(JOBS_DIR);
        // One write for all of them (the kernel applies a space-separated list at once); only
        // controllers the parent has are asked for.
        let wanted: Vec<String> = ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .map(|c| format!("+{c}"))
            .collect();
        let enable = |dir: &Path, problems: &mut Vec<String>| {
            if wanted.is_empty() {
                return;
            }
            let file = dir.join("cgroup.subtree_control");
            if let Err(e) = std::fs::write(&file, wanted.join(" ")) {
                problems.push(format!(
                    "cannot enable `{}` in {} ({e})",
                    wanted.join(" "),
                    file.display()
                ));
            }
        };
        enable(&base_dir, problems);
        if let Err(e) = cg.mkdir(&jobs) {
            problems.push(format!(
                "cannot create {} ({e}): run the worker as root with /sys/fs/cgroup writable, or \
                 set --cgroup-parent to a cgroup it may manage",
                jobs.display()
            ));
        }
        enable(&jobs, problems);
        let enabled = read(&jobs.join("cgroup.subtree_control")).unwrap_or_default();
        let on = |c: &str| {
            enabled
                .split_whitespace()
                .any(|e| e.trim_start_matches('+') == c)
        };
        let p = &mut cg.preflight;
        p.version = Some(CgroupVersion::V2);
        p.memory = on("memory");
        p.cpu_quota = on("cpu");
        p.pids = on("pids");
        // cpu.stat (usage_usec) exists in every v2 cgroup, with or without the cpu controller.
        p.cpu_accounting = jobs.join("cpu.stat").exists();
        p.swap_limit = p.memory && jobs.join("memory.swap.max").exists();
        p.memory_peak = p.memory && jobs.join("memory.peak").exists();
        p.pids_peak = p.pids && jobs.join("pids.peak").exists();
        p.kill = if jobs.join("cgroup.kill").exists() {
            "cgroup.kill"
        } else {
            "signals"
        };
        p.oom_group = p.memory && jobs.join("memory.oom.group").exists();
        for (c, ok) in [("memory", p.memory), ("pids", p.pids), ("cpu", p.cpu_quota)] {
            if !ok {
                problems.push(format!(
                    "the {c} controller is not enabled in {} (available in the parent: `{}`): \
                     delegate it to the worker's cgroup",
                    jobs.display(),
                    available.trim()
                ));
            }
        }
        p.parents = vec![format!("unified={}", jobs.display())];
        p.problems = std::mem::take(problems);
        cg.parents = [Kind::Memory, Kind::Cpu, Kind::CpuAcct, Kind::Pids]
            .into_iter()
            .map(|k| (k, jobs.clone()))
            .collect();
        cg
    }

    fn setup_v1(parent: Option<&str>, cpu_millicores: u64) -> Self {
        use cgroups_rs::fs::Controllers;
        let mut cg = Self::unusable("", cpu_millicores);
        cg.preflight.problems.clear();
        let v1 = cgroups_rs::fs::hierarchies::V1::new();
        let own = cgroups_rs::fs::cgroup::get_cgroups_relative_paths().unwrap_or_default();
        let mut problems = Vec::new();
        for (kind, ctl, name) in [
            (Kind::Memory, Controllers::Mem, "memory"),
            (Kind::Cpu, Controllers::Cpu, "cpu"),
            (Kind::CpuAcct, Controllers::CpuAcct, "cpuacct"),
            (Kind::Pids, Controllers::Pids, "pids"),
            (Kind::Freezer, Controllers::Freezer, "freezer"),
        ] {
            let Some((mount, mount_root)) = v1.get_mount_point(ctl) else {
                continue;
            };
            let base = match parent {
                Some(p) => rel(p).to_string(),
                None => {
                    let own = own.get(name).map(String::as_str).unwrap_or("/");
                    let mr = mount_root.to_string_lossy();
                    let own = if mr == "/" {
                        own
                    } else {
                        own.strip_prefix(mr.as_ref()).unwrap_or(own)
                    };
                    rel(own).to_string()
                }
            };
            let jobs = mount.join(base).join(JOBS_DIR);
            match std::fs::create_dir_all(&jobs) {
                Ok(()) => cg.parents.push((kind, jobs)),
                Err(e) => problems.push(format!(
                    "cannot create {} ({e}): run the worker as root with the {name} hierarchy \
                     writable, or set --cgroup-parent",
                    jobs.display()
                )),
            }
        }
        let dir = |k: Kind| {
            cg.parents
                .iter()
                .find(|(x, _)| *x == k)
                .map(|(_, d)| d.clone())
        };
        let has = |k: Kind, f: &str| dir(k).is_some_and(|d| d.join(f).exists());
        let p = &mut cg.preflight;
        p.memory = has(Kind::Memory, "memory.limit_in_bytes");
        p.swap_limit = has(Kind::Memory, "memory.memsw.limit_in_bytes");
        p.memory_peak = has(Kind::Memory, "memory.max_usage_in_bytes");
        p.cpu_quota = has(Kind::Cpu, "cpu.cfs_quota_us");
        p.cpu_accounting = has(Kind::CpuAcct, "cpuacct.usage");
        p.pids = has(Kind::Pids, "pids.max");
        p.pids_peak = has(Kind::Pids, "pids.peak");
        p.kill = if has(Kind::Freezer, "freezer.state") {
            "freezer"
        } else {
            "signals"
        };
        for (what, ok, fix) in [
            (
                "memory",
                p.memory,
                "mount the v1 memory controller or use cgroup v2",
            ),
            (
                "pids",
                p.pids,
                "mount the v1 pids controller or use cgroup v2",
            ),
            (
                "cpu",
                p.cpu_quota,
                "mount the v1 cpu controller (CPU quota is not applied)",
            ),
            (
                "cpuacct",
                p.cpu_accounting,
                "mount the v1 cpuacct controller",
            ),
        ] {
            if !ok {
                problems.push(format!("the {what} controller is not usable: {fix}"));
            }
        }
        p.version = (!cg.parents.is_empty()).then_some(CgroupVersion::V1);
        cg.version = p.version;
        p.parents = cg
            .parents
            .iter()
            .map(|(k, d)| format!("{k:?}={}", d.display()).to_lowercase())
            .collect();
        p.problems = problems;
        cg
    }

    /// Why this host cannot run a job with these limits, if it cannot.
    pub fn refuse(&self, limits: &Limits) -> Option<String> {
        if self.disabled || (self.allow_unenforced && self.version.is_some()) {
            return None;
        }
        let p = &self.preflight;
        let why = |what: &str| {
            let mut s = format!(
                "this worker cannot enforce {what}: the job is refused rather than run \
                 unconfined (host preflight: {p})"
            );
            s.truncate(2000);
            Some(s)
        };
        if self.version.is_none() {
            return why("any limit (no usable cgroup hierarchy)");
        }
        if !p.memory {
            return why("the memory limit (no memory cgroup controller)");
        }
        if !p.pids {
            return why("the pids limit (no pids cgroup controller)");
        }
        if limits.cpu_time.is_some() && !p.cpu_accounting {
            return why("cpu_time (no cgroup CPU accounting)");
        }
        None
    }

    /// A handle on the job cgroup `<parents>/<name>` (created or not).
    fn job(&self, name: &str) -> JobCgroup {
        let v2 = self.version == Some(CgroupVersion::V2);
        let hier = Dirs {
            v2,
            root: self
                .parents
                .first()
                .map(|(_, d)| d.clone())
                .unwrap_or_default(),
            dirs: self.parents.clone(),
        };
        let mut dirs: Vec<PathBuf> = self.parents.iter().map(|(_, d)| d.join(name)).collect();
        dirs.dedup();
        let v2_dir = (v2 && self.fake_kernel.is_none())
            .then(|| dirs.first())
            .flatten()
            .map(|d| CString::new(d.as_os_str().as_encoded_bytes()).unwrap_or_default());
        let procs = dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes())
                    .unwrap_or_default()
            })
            .collect();
        JobCgroup {
            name: name.to_string(),
            cg: Cgroup::load(Box::new(hier), name),
            v2,
            dirs,
            procs,
            v2_dir,
            pids_seen: std::sync::atomic::AtomicU64::new(0),
            fake: self.fake_kernel.is_some(),
        }
    }

    /// Creates the job's cgroup `<parents>/<name>` with its limits applied.
    pub fn create(&self, name: &str, limits: &Limits, pids: u64) -> Result<JobCgroup, String> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!("invalid job cgroup name `{name}`"));
        }
        let mut job = self.job(name);
        if self.disabled {
            job.dirs.clear();
            job.procs.clear();
            job.v2_dir = None;
            return Ok(job);
        }
        let recycled = match self.recycler.as_ref().map(|r| r.take(name)) {
            Some(Ok(taken)) => taken,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "a kept job cgroup could not be used; making a new one");
                false
            }
            None => false,
        };
        for (i, d) in job.dirs.iter().enumerate() {
            if recycled {
                break;
            }
            if let Err(e) = std::fs::create_dir(d) {
                for u in &job.dirs[..i] {
                    let _ = std::fs::remove_dir(u);
                }
                return Err(format!("creating the job's cgroup {}: {e}", d.display()));
            }
            if let Some(f) = self.fake_kernel {
                f(d);
            }
        }
        if let Err(e) = job.apply(limits, pids, self.cpu_millicores, &self.preflight) {
            let _ = job.remove_now();
            return Err(e);
        }
        Ok(job)
    }

    /// Removes job cgroups left by dead processes (`is_live(name)` false): kills what is left
    /// in them and removes them.
    pub fn remove_stale(&self, is_live: impl Fn(&str) -> bool) {
        let mut names: Vec<String> = Vec::new();
        for (_, parent) in &self.parents {
            let Ok(rd) = std::fs::read_dir(parent) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let n = e.file_name().to_string_lossy().into_owned();
                    // A probe of an earlier version's worker (its `clone3(CLONE_INTO_CGROUP)`
                    // check, made and removed at its start), not a job.
                    if n.starts_with(".probe-") {
                        continue;
                    }
                    if !is_live(&n) && !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
        }
        for name in names {
            let mut job = self.job(&name);
            job.dirs.retain(|d| d.is_dir());
            job.kill_all();
            match job.remove_blocking() {
                Ok(()) => tracing::info!(cgroup = %name, "removed a stale job cgroup"),
                Err(e) => {
                    tracing::warn!(cgroup = %name, error = %e, "cannot remove a stale job cgroup")
                }
            }
        }
    }
}

/// What the job's cgroup measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CgroupUsage {
    pub cpu_user: Option<Duration>,
    pub cpu_system: Option<Duration>,
    pub memory_peak: Option<u64>,
    pub pids_peak: Option<u64>,
    /// Whether a fork or clone of the job was refused at its pids limit: the `max` counter of
    /// `pids.events` (v1 and v2) is not 0. `None` without that file.
    pub pids_limit_hit: Option<bool>,
    pub oom_kills: u64,
}

/// One job's cgroup.
pub(crate) struct JobCgroup {
    /// The directory name in each hierarchy (`<owner>.<seq>-<job id>`).
    name: String,
    cg: Cgroup,
    v2: bool,
    /// The job cgroup's directories (one on v2; one per hierarchy on v1).
    dirs: Vec<PathBuf>,
    /// `<dir>/cgroup.procs` of each directory: the spawner writes P2's pid into each.
    pub procs: Vec<CString>,
    /// v2: the job cgroup's directory (the job sees it, read-only, as its `/sys/fs/cgroup`).
    /// `None` on v1 and in a fake tree.
    pub v2_dir: Option<CString>,
    /// Highest `pids.current` sampled (for kernels without `pids.peak`).
    pids_seen: std::sync::atomic::AtomicU64,
    /// A fake tree of the unit tests: its directories hold regular files, removed recursively.
    fake: bool,
}

impl std::fmt::Debug for JobCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCgroup")
            .field("dirs", &self.dirs)
            .finish()
    }
}

impl JobCgroup {
    fn mem(&self) -> Option<&MemController> {
        self.cg.subsystems().iter().find_map(|s| match s {
            Subsystem::Mem(c) => Some(c),
            _ => None,
        })
    }

    fn pid(&self) -> Option<&PidController> {
        self.cg.subsystems().iter().find_map(|s| match s {
            Subsystem::Pid(c) => Some(c),
            _ => None,
        })
    }

    fn file(&self, kind_dir: Option<&Path>, name: &str) -> Option<String> {
        read(&kind_dir?.join(name))
    }

    fn dir_of(&self, pick: impl Fn(&Subsystem) -> bool) -> Option<&Path> {
        self.cg
            .subsystems()
            .iter()
            .find(|s| pick(s))
            .map(|s| s.to_controller().path())
    }

    /// Sets the job's limits. A controller the preflight found missing is skipped: `refuse`
    /// has already refused jobs needing it, unless `allow_unenforced_limits` is set.
    fn apply(
        &self,
        limits: &Limits,
        pids: u64,
        cpu_millicores: u64,
        host: &Preflight,
    ) -> Result<(), String> {
        fn err(what: &'static str) -> impl FnOnce(cgroups_rs::fs::error::Error) -> String {
            move |e| format!("setting {what}: {e}")
        }
        if host.memory {
            self.apply_memory(limits)?;
        }
        if host.pids {
            let pid = self.pid().ok_or("the job cgroup has no pids controller")?;
            pid.set_pid_max(MaxValue::Value(i64::try_from(pids).unwrap_or(i64::MAX)))
                .map_err(err("the pids limit"))?;
        }
        if cpu_millicores > 0 && host.cpu_quota {
            let cpu = self.cg.subsystems().iter().find_map(|s| match s {
                Subsystem::Cpu(c) => Some(c),
                _ => None,
            });
            let usable = cpu.filter(|c| {
                let p = c.path();
                p.join(if self.v2 {
                    "cpu.max"
                } else {
                    "cpu.cfs_quota_us"
                })
                .exists()
            });
            if let Some(c) = usable {
                let quota = (cpu_millicores * CFS_PERIOD_US / 1000).max(1000);
                c.set_cfs_quota_and_period(Some(quota as i64), Some(CFS_PERIOD_US))
                    .map_err(err("the CPU quota"))?;
            }
        }
        Ok(())
    }

    /// The memory limit, swap off, and (v2) the whole job as the OOM unit.
    fn apply_memory(&self, limits: &Limits) -> Result<(), String> {
        fn err(what: &'static str) -> impl FnOnce(cgroups_rs::fs::error::Error) -> String {
            move |e| format!("setting {what}: {e}")
        }
        let mem = self
            .mem()
            .ok_or("the job cgroup has no memory controller")?;
        let bytes = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
        let mp = mem.path();
        if let Err(e) = mem.set_limit(bytes) {
            // v1: the memory limit may not exceed memory+swap, and a kept cgroup (`recycle`)
            // still has its last job's: raise memory+swap first, then try again.
            if self.v2 || !mp.join("memory.memsw.limit_in_bytes").exists() {
                return Err(err("the memory limit")(e));
            }
            mem.set_memswap_limit(bytes)
                .map_err(err("memory.memsw.limit_in_bytes"))?;
            mem.set_limit(bytes).map_err(err("the memory limit"))?;
        }
        // Swap off: memory+swap = memory on v1, swap.max = 0 on v2 (where swap accounting exists).
        if self.v2 {
            if mp.join("memory.swap.max").exists() {
                mem.set_memswap_limit(0).map_err(err("memory.swap.max"))?;
            }
        } else if mp.join("memory.memsw.limit_in_bytes").exists() {
            mem.set_memswap_limit(bytes)
                .map_err(err("memory.memsw.limit_in_bytes"))?;
        }
        // One OOM kill ends the whole job (its init included): no process is left to carry on
        // with part of the job gone.
        let oom_group = mp.join("memory.oom.group");
        if self.v2 && oom_group.exists() {
            std::fs::write(&oom_group, "1")
                .map_err(|e| format!("setting memory.oom.group: {e}"))?;
        }
        Ok(())
    }

    /// CPU used by the whole cgroup so far: (total, user, system).
    pub fn cpu(&self) -> Option<(Duration, Duration, Duration)> {
        if self.v2 {
            let stat = self.file(self.dirs.first().map(PathBuf::as_path), "cpu.stat")?;
            let us = |k: &str| keyed(&stat, k).map(Duration::from_micros);
            return Some((us("usage_usec")?, us("user_usec")?, us("system_usec")?));
        }
        // Three files, read here: the crate's `cpuacct()` reads eight (per-CPU tables included).
        let total = self.cpuacct_ns("cpuacct.usage")?;
        let user = self.cpuacct_ns("cpuacct.usage_user").unwrap_or_default();
        let split = user + self.cpuacct_ns("cpuacct.usage_sys").unwrap_or_default();
        // `cpuacct.usage` is exact; the user/system split is sampled at timer ticks and may
        // fall short of it (591.98 ms of user + system against 600.08 ms in all, seen). The
        // bill splits the exact total in the sampled proportion, as the kernel does for a
        // process's times in /proc, so that user + system is the total the CPU limit saw.
        let user = if split.is_zero() {
            total
        } else {
            total.mul_f64(user.as_secs_f64() / split.as_secs_f64())
        };
        Some((total, user, total.saturating_sub(user)))
    }

    /// Total CPU used by the whole cgroup so far (one file read on v1).
    fn cpu_total(&self) -> Option<Duration> {
        if self.v2 {
            return self.cpu().map(|c| c.0);
        }
        self.cpuacct_ns("cpuacct.usage")
    }

    /// A v1 `cpuacct` file holding nanoseconds.
    fn cpuacct_ns(&self, file: &str) -> Option<Duration> {
        let dir = self.dir_of(|s| matches!(s, Subsystem::CpuAcct(_)))?;
        read(&dir.join(file))
            .and_then(|t| t.trim().parse().ok())
            .map(Duration::from_nanos)
    }

    /// Samples `pids.current` (the fallback for `pids.peak`).
    pub fn sample_pids(&self) {
        if let Some(n) = self.pid().and_then(|p| p.get_pid_current().ok()) {
            self.pids_seen
                .fetch_max(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// OOM kills in the cgroup (any of its processes).
    pub fn oom_kills(&self) -> u64 {
        let dir = self.dir_of(|s| matches!(s, Subsystem::Mem(_)));
        if self.v2 {
            self.file(dir, "memory.events")
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0)
        } else {
            self.file(dir, "memory.oom_control")
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0)
        }
    }

    /// The usage bill (read after the job's processes are gone).
    pub fn usage(&self) -> CgroupUsage {
        let cpu = self.cpu();
        let mem_dir = self.dir_of(|s| matches!(s, Subsystem::Mem(_)));
        let memory_peak = if self.v2 {
            self.file(mem_dir, "memory.peak")
                .and_then(|t| t.trim().parse().ok())
        } else {
            self.file(mem_dir, "memory.max_usage_in_bytes")
                .and_then(|t| t.trim().parse().ok())
        };
        let pids_dir = self.dir_of(|s| matches!(s, Subsystem::Pid(_)));
        let sampled = self.pids_seen.load(std::sync::atomic::Ordering::Relaxed);
        let pids_peak = self
            .file(pids_dir, "pids.peak")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .or((sampled > 0).then_some(sampled));
        let pids_limit_hit = self
            .file(pids_dir, "pids.events")
            .map(|t| keyed(&t, "max").is_some_and(|n| n > 0));
        CgroupUsage {
            cpu_user: cpu.map(|c| c.1),
            cpu_system: cpu.map(|c| c.2),
            memory_peak,
            pids_peak,
            pids_limit_hit,
            oom_kills: self.oom_kills(),
        }
    }

    /// The processes still in the cgroup (host pids).
    pub fn procs(&self) -> Vec<u64> {
        self.cg.procs().into_iter().map(|p| p.pid).collect()
    }

    /// Kills every process in the cgroup: `cgroup.kill` on v2; on v1 freeze, SIGKILL each,
    /// thaw (a frozen process cannot fork a replacement between the listing and the kill).
    pub fn kill_all(&self) {
        if self.v2 && self.cg.kill().is_ok() {
            return;
        }
        let freezer = self.cg.subsystems().iter().find_map(|s| match s {
            Subsystem::Freezer(c) if c.path().join("freezer.state").exists() => Some(c),
            _ => None,
        });
        let frozen = freezer.is_some_and(|f| f.freeze().is_ok());
        for pid in self.procs() {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill with a pid read from the job's cgroup; at worst it names a
                // process that already exited (then a no-op or ESRCH).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if frozen && let Some(f) = freezer {
            let _ = f.thaw();
        }
    }

    fn remove_now(&self) -> Result<(), String> {
        let mut first_err = None;
        for d in &self.dirs {
            let r = if self.fake {
                std::fs::remove_dir_all(d)
            } else {
                std::fs::remove_dir(d)
            };
            if let Err(e) = r
                && e.kind() != std::io::ErrorKind::NotFound
            {
                first_err.get_or_insert(format!("removing {}: {e}", d.display()));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Kills what is left and waits (bounded) until the cgroup has no process. Blocking.
    fn empty_blocking(&self) -> Result<(), String> {
        let mut delay = Duration::from_millis(1);
        let mut waited = Duration::ZERO;
        while !self.procs().is_empty() {
            if waited > Duration::from_secs(5) {
                return Err(format!(
                    "the job cgroup {} still has processes {:?} after SIGKILL",
                    self.dirs
                        .first()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                    self.procs()
                ));
            }
            self.kill_all();
            std::thread::sleep(delay);
            waited += delay;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills what is left, waits (bounded) until the cgroup is empty, removes it. Blocking.
    pub fn remove_blocking(&self) -> Result<(), String> {
        self.empty_blocking()?;
        if self.fake {
            return self.remove_now();
        }
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = recycle::remove_dir_retrying(d) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// After the job (its bill read): keeps the cgroup for a later job when `recycler` is set
    /// and the cgroup can be reset ([`recycle`]), else removes it — as
    /// [`remove`](Self::remove), off the async runtime. `tag`: the backend's owner tag (the
    /// kept cgroup's name starts with it).
    pub async fn release(
        self: std::sync::Arc<Self>,
        recycler: Option<std::sync::Arc<recycle::Recycler>>,
        tag: &str,
    ) -> Result<(), String> {
        let Some(recycler) = recycler else {
            return self.remove().await;
        };
        let idle = format!(
            "{tag}.{}-recycled",
            NEXT_NAME.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        tokio::task::spawn_blocking(move || recycler.recycle_blocking(&self, &idle))
            .await
            .unwrap_or_else(|e| Err(format!("cgroup recycling task failed: {e}")))
    }

    /// [`remove_blocking`](Self::remove_blocking) without blocking the async runtime when the
    /// cgroup does not empty at once.
    pub async fn remove(self: std::sync::Arc<Self>) -> Result<(), String> {
        if self.procs().is_empty() && self.remove_now().is_ok() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || self.remove_blocking())
            .await
            .unwrap_or_else(|e| Err(format!("cgroup removal task failed: {e}")))
    }

    /// Resolves when the cgroup's CPU usage reaches `limit` (never without a limit), with the
    /// usage. It polls `cpuacct.usage`/`cpu.stat`, sooner as the limit nears: the job cannot burn
    /// CPU faster than its quota (`millicores`; the host's cores without one), so the next look
    /// is at `remaining / rate`, between 2 and 100 ms. Also samples `pids.current` for kernels
    /// without `pids.peak`.
    pub async fn watch_cpu(&self, limit: Option<Duration>, millicores: u64) -> Duration {
        let sample_pids = self
            .dir_of(|s| matches!(s, Subsystem::Pid(_)))
            .is_some_and(|d| !d.join("pids.peak").exists());
        if limit.is_none() && !sample_pids {
            return std::future::pending().await;
        }
        let rate = if millicores > 0 {
            millicores as f64 / 1000.0
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
        };
        loop {
            if sample_pids {
                self.sample_pids();
            }
            let mut next = Duration::from_millis(100);
            if let Some(limit) = limit {
                let used = self.cpu_total().unwrap_or_default();
                if used >= limit {
                    return used;
                }
                next = (limit - used)
                    .div_f64(rate)
                    .clamp(Duration::from_millis(2), Duration::from_millis(100));
            }
            tokio::time::sleep(next).await;
        }
    }
}

mod recycle;
#[cfg(test)]
mod tests;
