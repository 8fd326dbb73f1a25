//! Container limits and accounting against the real kernel's cgroups (this machine: the hybrid
//! layout, memory/cpu/cpuacct/pids on v1): fork bombs, memory bombs, CPU across processes, the
//! usage bill, the cgroup's removal and the cleanup of a crashed predecessor's cgroups. The v2
//! code path is unit-tested against a fake cgroup2 tree (`src/container/cgroup/tests.rs`).
//! Root only; a missing prerequisite (root, gcc for the test program) fails, never skips.

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use container_support::*;
use image_support::TarBuilder;
use runtime_core::OutcomeReason;

/// A static test program: `alloc MIB [HOLD_MS]` allocates and touches MIB MiB, holds it, exits 0.
const ALLOC_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 1;
    long hold = argc > 2 ? atol(argv[2]) : 0;
    for (long i = 0; i < mib; i++) {
        char *p = malloc(1 << 20);
        if (!p) return 3;
        memset(p, 1, 1 << 20);
    }
    if (hold) usleep(hold * 1000);
    return 0;
}
"#;

fn compile_alloc() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("alloc.c");
    std::fs::write(&src, ALLOC_C).unwrap();
    let bin = dir.path().join("alloc");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!("gcc is needed to build the test program (apt-get install gcc): {e}")
        });
    assert!(
        out.status.success(),
        "gcc -static failed (install gcc and libc6-dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(bin).unwrap()
}

async fn image(env: &TestEnv, name: &str) -> String {
    let alloc = compile_alloc();
    let layer = TarBuilder::new().file("bin/alloc", &alloc, 0o755).finish();
    env.busybox(name, &[layer], default_config()).await
}

/// The directories job cgroups are created in (`kind=path` in the preflight).
fn cgroup_parents(env: &TestEnv) -> Vec<PathBuf> {
    env.backend
        .preflight()
        .parents
        .iter()
        .filter_map(|p| p.split_once('=').map(|(_, d)| PathBuf::from(d)))
        .collect()
}

/// Job cgroups left once the backend has settled (a cgroup is removed in the background after
/// the job's report).
async fn cgroups_left(env: &TestEnv, job_id: &str) -> Vec<PathBuf> {
    env.backend.settle().await;
    job_cgroups(env, job_id)
}

/// Job cgroups (in any hierarchy) whose name ends with `-<job id>`.
fn job_cgroups(env: &TestEnv, job_id: &str) -> Vec<PathBuf> {
    let suffix = format!("-{job_id}");
    let mut out = Vec::new();
    for parent in cgroup_parents(env) {
        for e in std::fs::read_dir(&parent).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(&suffix) {
                out.push(e.path());
            }
        }
    }
    out
}

fn with_id(mut r: runtime_core::ExecRequest, id: &str) -> runtime_core::ExecRequest {
    r.job_id = id.to_string();
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_finds_the_controllers() {
    let env = TestEnv::new();
    let p = env.backend.preflight();
    eprintln!("preflight: {p}");
    assert!(p.version.is_some(), "{p}");
    assert!(p.memory && p.pids && p.cpu_accounting && p.cpu_quota, "{p}");
    assert!(p.memory_peak && p.pids_peak, "{p}");
    assert!(p.swap_limit || !p.host_swap, "{p}");
    // Parents are below this process's own cgroup, in `nekton-jobs`.
    assert!(!cgroup_parents(&env).is_empty());
    for d in cgroup_parents(&env) {
        assert!(d.ends_with("nekton-jobs"), "{}", d.display());
        assert!(d.is_dir(), "{}", d.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_stops_at_the_pids_limit_and_others_run() {
    let env = TestEnv::new();
    let img = image(&env, "bomb").await;
    // The sleep is forked before the bomb, the bomb runs in a subshell and `wait` is a builtin:
    // the job's own shell never needs a fork once the bomb has taken every pid (a
    // non-interactive shell that cannot fork exits 2: it did when `sleep` came after the bomb,
    // and could when the bomb's first pipeline took every pid before the shell forked the
    // second member).
    let mut bomb = with_id(
        sh(&img, "sleep 1000 & (b(){ b | b & }; b); wait"),
        "forkbomb",
    );
    bomb.limits.pids = Some(32);
    bomb.limits.wall_time = Duration::from_secs(3);
    let backend = env.backend.clone();
    let t0 = Instant::now();
    let bomb =
        tokio::spawn(async move { run_with(backend.as_ref(), bomb, Default::default()).await });
    // An honest job while the bomb runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let honest = run(&env, sh(&img, "echo honest; alloc 8")).await;
    honest.assert_exited(0);
    assert_eq!(honest.out(), "honest\n");
    let ran = bomb.await.unwrap();
    let took = t0.elapsed();
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::WallTimeout,
        "{ran:?}"
    );
    assert!(
        took < Duration::from_secs(60),
        "a 3 s wall limit did not stop the bomb: took {took:?}"
    );
    assert_eq!(
        ran.report.usage.pids_peak,
        Some(32),
        "{:?}",
        ran.report.usage
    );
    // The record says the limit was hit (pids.events), not only how high the count went.
    assert_eq!(
        ran.report.usage.pids_limit_hit,
        Some(true),
        "{:?}",
        ran.report.usage
    );
    assert!(cgroups_left(&env, "forkbomb").await.is_empty());
    // The backend keeps working; a job that stays below its limit did not hit it.
    let ok = run(&env, sh(&img, "sleep 0 & sleep 0 & wait; true")).await;
    ok.assert_exited(0);
    assert_eq!(
        ok.report.usage.pids_limit_hit,
        Some(false),
        "{:?}",
        ok.report.usage
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pids_limit_makes_fork_fail() {
    let env = TestEnv::new();
    let img = image(&env, "pids").await;
    let mut r = sh(
        &img,
        "n=0; for i in $(seq 1 20); do sleep 5 & if [ $? = 0 ]; then n=$((n+1)); fi; done; \
         echo started; kill $(jobs -p) 2>/dev/null; exit 0",
    );
    r.limits.pids = Some(8);
    let ran = run(&env, r).await;
    assert!(
        ran.err().contains("fork") || ran.err().contains("Resource temporarily unavailable"),
        "{ran:?}\n{}",
        ran.err()
    );
    assert_eq!(
        ran.report.usage.pids_peak,
        Some(8),
        "{:?}",
        ran.report.usage
    );
    assert_eq!(
        ran.report.usage.pids_limit_hit,
        Some(true),
        "{:?}",
        ran.report.usage
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bombs_end_as_memory_limit() {
    let env = TestEnv::new();
    let img = image(&env, "membomb").await;
    // The main process allocates 1 GiB under 64 MiB.
    let mut r = with_id(request(&img, &["1024"]), "membomb-main");
    r.container.entrypoint = Some(vec!["alloc".into()]);
    r.limits.memory_bytes = 64 << 20;
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::MemoryLimit,
        "{ran:?}"
    );
    let detail = ran.report.outcome.detail.clone().unwrap_or_default();
    assert!(detail.contains(&(64u64 << 20).to_string()), "{detail}");
    let peak = ran.report.usage.memory_peak_bytes.unwrap();
    assert!(peak <= 64 << 20 && peak > 48 << 20, "peak {peak}");
    assert!(cgroups_left(&env, "membomb-main").await.is_empty());

    // A child is OOM-killed, the main process carries on and exits 0: still memory_limit.
    let mut r = sh(&img, "alloc 1024; echo child status $?");
    r.limits.memory_bytes = 64 << 20;
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::MemoryLimit,
        "{ran:?}"
    );
    assert_eq!(ran.out(), "child status 137\n");
    assert_eq!(ran.report.outcome.exit_code, Some(0));

    // tmpfs (the writable layer and /dev/shm) is memory too.
    let mut r = sh(&img, "head -c 100000000 /dev/zero > /big; echo wrote $?");
    r.limits.memory_bytes = 32 << 20;
    r.limits.disk_bytes = Some(200 << 20);
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::MemoryLimit,
        "{ran:?}"
    );
}

/// The smallest memory limit the API takes (64 KiB) does not fit a job's start. The container's
/// init and job process start on the worker's memory, in the job's cgroup: an OOM kill of a
/// task takes every process sharing its memory with it, so one of them picked would take the
/// worker. The kernel never picks a vfork child whose parent shares its memory: the job ends as
/// `memory_limit` (OOM-killed after its exec, or its start refused an allocation at the limit),
/// and the worker (this test) runs the next job.
#[tokio::test(flavor = "multi_thread")]
async fn the_smallest_memory_limit_fails_the_job_not_the_worker() {
    let env = TestEnv::new();
    let img = image(&env, "tiny").await;
    for _ in 0..5 {
        let mut r = sh(&img, "echo started");
        r.limits.memory_bytes = 64 << 10;
        let ran = run(&env, r).await;
        assert_eq!(
            ran.report.outcome.reason,
            OutcomeReason::MemoryLimit,
            "{ran:?}"
        );
        assert_eq!(ran.out(), "", "{ran:?}");
    }
    let ran = run(&env, sh(&img, "echo still here")).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "still here\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_peak_is_the_jobs() {
    let env = TestEnv::new();
    let img = image(&env, "peak").await;
    let mut r = request(&img, &["40", "100"]);
    r.container.entrypoint = Some(vec!["alloc".into()]);
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    let peak = ran.report.usage.memory_peak_bytes.unwrap() as f64;
    let want = (40u64 << 20) as f64;
    eprintln!("40 MiB job: peak {:.2} MiB", peak / (1u64 << 20) as f64);
    assert!((peak - want).abs() <= want * 0.10, "peak {peak} vs {want}");
    assert!(
        ran.report.usage.pids_peak.unwrap() >= 2,
        "{:?}",
        ran.report.usage
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_time_counts_every_process() {
    let env = TestEnv::new();
    let img = image(&env, "cpu").await;
    // One busy loop.
    let mut r = sh(&img, "while :; do :; done");
    r.limits.cpu_time = Some(Duration::from_millis(500));
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::CpuTimeout,
        "{ran:?}"
    );
    let cpu = ran.report.usage.cpu_user + ran.report.usage.cpu_system;
    assert!(
        cpu >= Duration::from_millis(400) && cpu <= Duration::from_millis(600),
        "cpu {cpu:?}"
    );
    // Three busy children, none reaching the limit alone (RLIMIT_CPU would not fire).
    let mut r = sh(
        &img,
        "for i in 1 2 3; do (while :; do :; done) & done; wait",
    );
    r.limits.cpu_time = Some(Duration::from_millis(600));
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::CpuTimeout,
        "{ran:?}"
    );
    let cpu = ran.report.usage.cpu_user + ran.report.usage.cpu_system;
    // Three processes on two cores can spend up to a CFS period (100 ms) of quota between two
    // looks of the watcher: a wider upper bound than the single loop's.
    assert!(
        cpu >= Duration::from_millis(600) && cpu <= Duration::from_millis(850),
        "cpu {cpu:?}: {:?}",
        ran.report
    );
    // The CPU quota (one core by default) holds the three loops to one core: the limit took
    // about 600 ms of wall time, not 200 ms.
    assert!(
        ran.report.usage.wall >= Duration::from_millis(450),
        "{:?}",
        ran.report.usage
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wall_timeout_and_daemons_leave_nothing() {
    let env = TestEnv::new();
    let img = image(&env, "wall").await;
    let mut r = with_id(sh(&img, "sleep 1000"), "wall-sleep");
    r.limits.wall_time = Duration::from_millis(1000);
    let t0 = Instant::now();
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::WallTimeout,
        "{ran:?}"
    );
    // Ended by its limit, not by its sleep: the bounds are far apart so that a loaded machine
    // cannot fail this (the time it takes is the benchmark's business).
    assert!(
        ran.report.usage.wall >= Duration::from_millis(1000),
        "{:?}",
        ran.report.usage
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "a 1 s wall limit did not stop `sleep 1000`: {:?}",
        t0.elapsed()
    );
    assert!(cgroups_left(&env, "wall-sleep").await.is_empty());

    // A double-forked daemon: the cgroup is empty and gone when run() returns.
    let ran = run(
        &env,
        with_id(sh(&img, "(setsid sleep 1000 &) ; exit 0"), "daemon-job"),
    )
    .await;
    ran.assert_exited(0);
    assert!(cgroups_left(&env, "daemon-job").await.is_empty());
    assert!(processes_under(&env.state_dir).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn job_sees_its_cgroup_as_root_and_it_is_removed() {
    let env = TestEnv::new();
    let img = image(&env, "cgns").await;
    let backend = env.backend.clone();
    let job = tokio::spawn(async move {
        run_with(
            backend.as_ref(),
            with_id(sh(&img, "cat /proc/self/cgroup; sleep 2"), "cgroup-visible"),
            Default::default(),
        )
        .await
    });
    // While it runs, its cgroup exists in every hierarchy used, with the limits applied.
    let mut found = Vec::new();
    for _ in 0..100 {
        found = job_cgroups(&env, "cgroup-visible");
        if found.len() == cgroup_parents(&env).len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found.len(), cgroup_parents(&env).len(), "{found:?}");
    let file = |name: &str| {
        found
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
    };
    let mem = file("memory.limit_in_bytes").or_else(|| file("memory.max"));
    assert_eq!(mem.as_deref(), Some((256u64 << 20).to_string().as_str()));
    assert_eq!(file("pids.max").as_deref(), Some("256"));
    if let Some(swap) = file("memory.memsw.limit_in_bytes") {
        assert_eq!(swap, (256u64 << 20).to_string());
    }
    let ran = job.await.unwrap();
    ran.assert_exited(0);
    for line in ran.out().lines() {
        assert!(
            line.ends_with(":/"),
            "the job sees a host cgroup path: {line}"
        );
    }
    assert!(cgroups_left(&env, "cgroup-visible").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_bytes_caps_the_writable_layer() {
    let env = TestEnv::new();
    let img = image(&env, "disk").await;
    let mut r = sh(&img, "head -c 3000000 /dev/zero > /big; echo status $?");
    r.limits.disk_bytes = Some(1 << 20);
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "status 1\n", "{}", ran.err());
    // busybox words ENOSPC on stdout as "I/O error".
    assert!(ran.err().contains("head:"), "{}", ran.err());
    let mut r = sh(&img, "head -c 3000000 /dev/zero > /big; echo status $?");
    r.limits.disk_bytes = Some(8 << 20);
    let big = run(&env, r).await;
    big.assert_exited(0);
    // The bill: what the writable layer held at the end (the 3 MB file, the runtime's few
    // small files), against a job that wrote nothing.
    let used = big
        .report
        .usage
        .disk_used_bytes
        .expect("disk_used_bytes in the bill");
    assert!((3_000_000..3_000_000 + (1 << 20)).contains(&used), "{used}");
    let mut r = sh(&img, "true");
    r.limits.disk_bytes = Some(8 << 20);
    let small = run(&env, r).await;
    small.assert_exited(0);
    let idle = small
        .report
        .usage
        .disk_used_bytes
        .expect("disk_used_bytes in the bill");
    assert!(idle < 1 << 20, "{idle}");
}

fn spawn_sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep")
}

#[tokio::test(flavor = "multi_thread")]
async fn new_removes_a_crashed_predecessors_cgroups() {
    let env = TestEnv::new();
    // A predecessor's job cgroup (a dead pid) with a process still in it, in every hierarchy.
    let mut sleeper = spawn_sleeper();
    let name = "999999999.1.0-stale-job";
    let dirs: Vec<PathBuf> = cgroup_parents(&env).iter().map(|p| p.join(name)).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    }
    let _second = container_backend::ContainerBackend::new(
        container_backend::ContainerConfig {
            state_dir: env.state_dir.clone(),
            ..Default::default()
        },
        env.images.clone(),
    )
    .unwrap();
    for d in &dirs {
        assert!(!Path::new(d).exists(), "{} left behind", d.display());
    }
    let status = sleeper.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

/// The inode of each of the job's cgroup directories (by hierarchy parent), waiting until the
/// job's cgroup exists in every hierarchy.
async fn cgroup_inodes(env: &TestEnv, job_id: &str) -> Vec<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for _ in 0..200 {
        found = job_cgroups(env, job_id);
        if found.len() == cgroup_parents(env).len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(found.len(), cgroup_parents(env).len(), "{found:?}");
    found
        .iter()
        .map(|d| {
            let parent = d.parent().unwrap().to_path_buf();
            (parent, std::fs::metadata(d).unwrap().ino())
        })
        .collect()
}

/// The directory in `parent` with this inode, if any.
fn dir_with_inode(parent: &Path, ino: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .find(|e| e.metadata().is_ok_and(|m| m.is_dir() && m.ino() == ino))
        .map(|e| e.path())
}

/// Starts `req` in the background and returns its cgroup directories' inodes while it runs,
/// with the job's handle.
async fn start_and_look(
    env: &TestEnv,
    req: runtime_core::ExecRequest,
) -> (
    Vec<(PathBuf, u64)>,
    tokio::task::JoinHandle<runtime_core::conformance::Finished>,
) {
    let id = req.job_id.clone();
    let backend = env.backend.clone();
    let job =
        tokio::spawn(async move { run_with(backend.as_ref(), req, Default::default()).await });
    (cgroup_inodes(env, &id).await, job)
}

/// Whether `parent` is in the pids hierarchy.
fn is_pids(parent: &Path) -> bool {
    parent.join("pids.max").exists()
}

/// v1 (this host): a job's emptied cgroup is kept, reset, and serves the next job of the same
/// backend — renamed to that job, with that job's limits, and a bill of its own (CPU, memory
/// peak, pids peak) — while the pids directory is made per job; a cgroup whose job was
/// OOM-killed is removed, and the kept ones go with the backend. On v2 nothing is kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_kept_cgroup_serves_the_next_job_with_a_bill_of_its_own() {
    let env = TestEnv::new();
    let img = image(&env, "recycle").await;
    let v1 = env.backend.preflight().version == Some(container_backend::CgroupVersion::V1);

    // A: CPU in two processes, 40 MiB, a few pids; small limits.
    let mut a = with_id(
        sh(
            &img,
            "alloc 40 300 & i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; wait",
        ),
        "recycle-a",
    );
    a.limits.memory_bytes = 96 << 20;
    a.limits.pids = Some(16);
    let (a_dirs, job) = start_and_look(&env, a).await;
    let a_ran = job.await.unwrap();
    a_ran.assert_exited(0);
    let a_usage = &a_ran.report.usage;
    assert!(
        a_usage.cpu_user + a_usage.cpu_system >= Duration::from_millis(100),
        "job A must burn CPU for this test to mean anything: {a_usage:?}"
    );
    assert!(
        a_usage.memory_peak_bytes.unwrap() >= 40 << 20,
        "{a_usage:?}"
    );
    assert!(cgroups_left(&env, "recycle-a").await.is_empty());
    if !v1 {
        for (parent, ino) in &a_dirs {
            assert_eq!(dir_with_inode(parent, *ino), None, "v2 keeps nothing");
        }
        return;
    }
    // Kept: every directory but the pids one, under a `-recycled` name.
    for (parent, ino) in &a_dirs {
        let kept = dir_with_inode(parent, *ino);
        if is_pids(parent) {
            assert_eq!(kept, None, "the pids directory is made per job");
        } else {
            let kept =
                kept.unwrap_or_else(|| panic!("A's cgroup in {} was not kept", parent.display()));
            assert!(
                kept.to_string_lossy().ends_with("-recycled"),
                "{}",
                kept.display()
            );
        }
    }

    // B: larger memory limit (memory+swap must be raised first), other pids limit.
    let mut b = with_id(sh(&img, "sleep 1; echo done"), "recycle-b");
    b.limits.memory_bytes = 200 << 20;
    b.limits.pids = Some(24);
    let (b_dirs, job) = start_and_look(&env, b).await;
    for ((pa, ia), (pb, ib)) in a_dirs.iter().zip(&b_dirs) {
        assert_eq!(pa, pb);
        if is_pids(pa) {
            assert_ne!(ia, ib, "a fresh pids directory");
        } else {
            assert_eq!(ia, ib, "B runs in A's kept cgroup in {}", pa.display());
        }
    }
    let file = |name: &str| {
        job_cgroups(&env, "recycle-b")
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
    };
    assert_eq!(
        file("memory.limit_in_bytes"),
        Some((200u64 << 20).to_string())
    );
    if let Some(memsw) = file("memory.memsw.limit_in_bytes") {
        assert_eq!(memsw, (200u64 << 20).to_string());
    }
    assert_eq!(file("pids.max").as_deref(), Some("24"));
    let b_ran = job.await.unwrap();
    b_ran.assert_exited(0);
    let b_usage = &b_ran.report.usage;
    assert!(
        b_usage.cpu_user + b_usage.cpu_system < Duration::from_millis(100),
        "B's CPU is its own, not A's: {b_usage:?} (A: {a_usage:?})"
    );
    assert!(
        b_usage.memory_peak_bytes.unwrap() < 16 << 20,
        "B's memory peak is its own: {b_usage:?}"
    );
    assert!(b_usage.pids_peak.unwrap() <= 4, "{b_usage:?}");
    assert!(cgroups_left(&env, "recycle-b").await.is_empty());

    // C: OOM-killed in the same kept cgroup, which is then removed, not kept.
    let mut c = with_id(sh(&img, "sleep 0.3; alloc 100"), "recycle-c");
    c.limits.memory_bytes = 32 << 20;
    let (c_dirs, job) = start_and_look(&env, c).await;
    let c_ran = job.await.unwrap();
    assert_eq!(
        c_ran.report.outcome.reason,
        OutcomeReason::MemoryLimit,
        "{:?}",
        c_ran.report
    );
    env.backend.settle().await;
    for (parent, ino) in &c_dirs {
        assert_eq!(
            dir_with_inode(parent, *ino),
            None,
            "an OOM-killed job's cgroup is not kept"
        );
    }

    // D is kept; dropping the backend removes it.
    let (d_dirs, job) = start_and_look(&env, with_id(sh(&img, "sleep 0.2"), "recycle-d")).await;
    job.await.unwrap().assert_exited(0);
    env.backend.settle().await;
    let kept: Vec<PathBuf> = d_dirs
        .iter()
        .filter_map(|(p, i)| dir_with_inode(p, *i))
        .collect();
    assert!(!kept.is_empty(), "D's cgroup was kept");
    drop(env);
    for d in kept {
        assert!(!d.exists(), "{} outlived its backend", d.display());
    }
}
