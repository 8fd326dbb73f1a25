//! The cgroup v2 path on a real kernel cgroup2 hierarchy. This project's machine is hybrid:
//! memory, cpu and pids are bound to v1 hierarchies, and the kernel's one cgroup2 hierarchy
//! (mounted at /sys/fs/cgroup/unified) has none of them. The test mounts that hierarchy afresh
//! on a temporary directory (a throwaway mount, removed at the end), makes a parent cgroup in it,
//! and points a backend at it (`ContainerConfig::cgroup_root`) with
//! `allow_unenforced_limits`, since memory and pids cannot be enforced there.
//!
//! What runs on the real v2 hierarchy here: jobs whose init the spawner moves into their cgroup
//! before it starts the job (so every process of the job is born there), the job's own cgroup as
//! its read-only `/sys/fs/cgroup` inside its cgroup namespace, CPU accounting from `cpu.stat`
//! (the bill and the `cpu_time` limit across processes), `cgroup.kill`, and the removal of the
//! job cgroups. `memory.*` (limit, swap off, `oom.group`, peak, events) and `pids.*` (limit,
//! peak, events) need controllers this host keeps on v1: they are unit-tested against a fake
//! cgroup2 tree (`src/cgroup/tests.rs`) and, as v1, against the kernel in
//! `container_limits.rs`. Root only; a missing prerequisite fails, never skips.

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use container_backend::CgroupVersion;
use container_support::*;
use runtime_core::OutcomeReason;

/// A fresh mount of the kernel's cgroup2 hierarchy with a parent cgroup for the test's jobs;
/// both go away on drop.
struct V2Mount {
    dir: tempfile::TempDir,
    /// The parent cgroup, relative to the hierarchy's root (`/nekton-v2-test-<pid>-<n>`).
    parent: String,
}

impl V2Mount {
    fn new(n: u32) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nkcg2")
            .tempdir_in("/tmp")
            .unwrap();
        nix::mount::mount(
            Some("none"),
            dir.path(),
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| {
            panic!(
                "mounting cgroup2 on {} failed ({e}): the test needs root and a kernel with \
                 cgroup v2 (CONFIG_CGROUPS)",
                dir.path().display()
            )
        });
        let parent = format!("/nekton-v2-test-{}-{n}", std::process::id());
        std::fs::create_dir(dir.path().join(&parent[1..])).unwrap();
        Self { dir, parent }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<mount>/<parent>/nekton-jobs`.
    fn jobs(&self) -> PathBuf {
        self.path().join(&self.parent[1..]).join("nekton-jobs")
    }

    /// The job cgroups in `nekton-jobs` (the preflight's probe cgroups excluded).
    fn job_cgroups(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.jobs())
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }
}

impl Drop for V2Mount {
    fn drop(&mut self) {
        let parent = self.path().join(&self.parent[1..]);
        let _ = std::fs::remove_dir(parent.join("nekton-jobs"));
        let _ = std::fs::remove_dir(&parent);
        let _ = nix::mount::umount2(self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn env_on(mount: &V2Mount) -> TestEnv {
    let root = mount.path().to_path_buf();
    let parent = mount.parent.clone();
    TestEnv::with_config(move |c| {
        c.cgroup_root = Some(root);
        c.cgroup_parent = Some(parent);
        c.allow_unenforced_limits = true;
    })
}

/// The v2 path of `/proc/<pid>/cgroup` (`0::<path>`).
fn v2_cgroup_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_born_in_their_v2_cgroup_and_see_it_read_only() {
    let mount = V2Mount::new(1);
    let env = env_on(&mount);
    let p = env.backend.preflight();
    assert_eq!(p.version, Some(CgroupVersion::V2), "{p}");
    assert_eq!(
        p.parents,
        vec![format!("unified={}", mount.jobs().display())],
        "{p}"
    );
    // The preflight leaves nothing behind.
    assert!(mount.job_cgroups().is_empty());

    let image = env.busybox("cg2", &[], default_config()).await;
    let script = "grep '^0::' /proc/self/cgroup; \
                  grep ' /sys/fs/cgroup ' /proc/self/mountinfo; \
                  test -f /sys/fs/cgroup/cgroup.procs && echo has-procs; \
                  mkdir /sys/fs/cgroup/sub 2>&1; \
                  (echo 1 > /sys/fs/cgroup/cgroup.kill) 2>&1 || echo kill-refused; \
                  sleep 60 & echo ready; wait";
    let mut running = Running::start(&env, sh(&image, script));
    let out = running.until("ready\n").await;
    // Inside: its cgroup namespace's root, a read-only cgroup2 mount of it.
    assert!(out.lines().any(|l| l == "0::/"), "{out}");
    let mnt = out
        .lines()
        .find(|l| l.contains(" /sys/fs/cgroup "))
        .unwrap_or_else(|| panic!("no /sys/fs/cgroup mount in the job: {out}"));
    assert!(mnt.contains(" - cgroup2 "), "{out}");
    assert!(
        mnt.split(' ').nth(5).unwrap().split(',').any(|o| o == "ro"),
        "{out}"
    );
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(mnt.contains(opt), "{opt}: {out}");
    }
    assert!(out.contains("has-procs\n"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    // Writing `cgroup.kill` would have ended the job before it printed `ready`.
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(out.contains("kill-refused\n"), "{out}");

    // Outside: one job cgroup holding the container's init, the job and its child; the init's
    // parent is the worker (its spawner thread), which stays in its own cgroup.
    let cgs = mount.job_cgroups();
    assert_eq!(cgs.len(), 1, "{cgs:?}");
    let procs = std::fs::read_to_string(cgs[0].join("cgroup.procs")).unwrap();
    let pids: Vec<&str> = procs.lines().collect();
    assert!(pids.len() >= 3, "init, sh and sleep: {procs}");
    let rel = format!(
        "{}/nekton-jobs/{}",
        mount.parent,
        cgs[0].file_name().unwrap().to_string_lossy()
    );
    for pid in &pids {
        assert_eq!(v2_cgroup_of(pid), rel, "pid {pid}");
    }
    let init: i32 = pids
        .iter()
        .map(|p| p.parse::<i32>().unwrap())
        .find(|p| !pids.contains(&ppid_of(*p).to_string().as_str()))
        .unwrap();
    assert_eq!(
        ppid_of(init),
        std::process::id() as i32,
        "the init is the worker's own child"
    );
    assert_ne!(
        v2_cgroup_of(&std::process::id().to_string()),
        rel,
        "the worker is outside the job's cgroup"
    );

    // Cancel: everything in the cgroup is killed and the cgroup removed.
    let report = running.stop().await;
    assert_eq!(
        report.outcome.reason,
        OutcomeReason::Cancelled,
        "{report:?}"
    );
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "process {pid} of the job survived"
        );
    }
    env.backend.settle().await;
    assert!(mount.job_cgroups().is_empty(), "{:?}", mount.job_cgroups());
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_time_counts_every_process_from_cpu_stat_and_the_rest_is_killed() {
    let mount = V2Mount::new(2);
    let env = env_on(&mount);
    let image = env.busybox("cg2cpu", &[], default_config()).await;
    // Two busy children: each stays below the per-process RLIMIT_CPU (1 s) when the cgroup's
    // total (cpu.stat) reaches the limit, so only the cgroup's count can stop them.
    let mut req = sh(
        &image,
        "(while :; do :; done) & (while :; do :; done) & echo started; wait",
    );
    req.limits.cpu_time = Some(Duration::from_millis(600));
    let report = run(&env, req).await.report;
    assert_eq!(
        report.outcome.reason,
        OutcomeReason::CpuTimeout,
        "{report:?}"
    );
    let cpu = report.usage.cpu_user + report.usage.cpu_system;
    assert!(
        cpu >= Duration::from_millis(600),
        "the bill comes from cpu.stat and covers both children: {:?}",
        report.usage
    );
    env.backend.settle().await;
    assert!(mount.job_cgroups().is_empty(), "{:?}", mount.job_cgroups());
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_root_that_is_not_cgroup2_refuses_jobs_with_the_reason() {
    let not_cg = tempfile::tempdir().unwrap();
    let dir = not_cg.path().to_path_buf();
    let env = TestEnv::with_config(move |c| c.cgroup_root = Some(dir));
    let p = env.backend.preflight();
    assert_eq!(p.version, None, "{p}");
    assert!(
        p.problems
            .iter()
            .any(|m| m.contains("is not a cgroup2 mount")),
        "{p}"
    );
    let image = env.busybox("cg2no", &[], default_config()).await;
    let report = run(&env, sh(&image, "true")).await.report;
    assert_eq!(
        report.outcome.reason,
        OutcomeReason::SpecError,
        "{report:?}"
    );
    let detail = report.outcome.detail.unwrap_or_default();
    assert!(detail.contains("no usable cgroup hierarchy"), "{detail}");
}
