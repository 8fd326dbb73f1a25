//! The v2 code path against a fake cgroup2 tree laid out like a real one (the machine this
//! project runs on is hybrid: its v1 path is covered by the kernel tests in
//! `container-backend/tests/container_limits.rs`).

use super::*;

/// What the kernel puts in a new v2 cgroup directory (the files this module uses).
fn fake_kernel(dir: &Path) {
    let files: [(&str, &str); 17] = [
        ("cgroup.controllers", "cpu memory pids\n"),
        ("cgroup.subtree_control", ""),
        ("cgroup.procs", ""),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
        ("cgroup.kill", ""),
        ("cgroup.freeze", "0\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("memory.peak", "0\n"),
        ("memory.oom.group", "0\n"),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        ),
        ("cpu.max", "max 100000\n"),
        (
            "cpu.stat",
            "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\n",
        ),
        ("pids.max", "max\n"),
        ("pids.current", "0\n"),
        ("pids.peak", "0\n"),
        ("pids.events", "max 0\n"),
    ];
    for (f, c) in files {
        std::fs::write(dir.join(f), c).unwrap();
    }
}

/// The root of a v2 hierarchy with the worker in `/system.slice/nekton.service`.
fn fake_root(root_controllers: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fake_kernel(t.path());
    std::fs::write(t.path().join("cgroup.controllers"), root_controllers).unwrap();
    for d in ["system.slice", "system.slice/nekton.service"] {
        let p = t.path().join(d);
        std::fs::create_dir(&p).unwrap();
        fake_kernel(&p);
        std::fs::write(p.join("cgroup.controllers"), root_controllers).unwrap();
    }
    std::fs::write(
        t.path().join("system.slice/nekton.service/cgroup.procs"),
        "4242\n",
    )
    .unwrap();
    t
}

fn limits() -> Limits {
    Limits {
        wall_time: Duration::from_secs(1),
        cpu_time: Some(Duration::from_millis(500)),
        memory_bytes: 64 << 20,
        fuel: None,
        output_bytes: 1 << 20,
        pids: Some(32),
        disk_bytes: None,
    }
}

fn text(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn v2_worker_moves_into_a_leaf_and_delegates_controllers() {
    let t = fake_root("cpuset cpu io memory hugetlb pids rdma misc\n");
    let svc = t.path().join("system.slice/nekton.service");
    let cg = Cgroups::setup_v2(
        t.path(),
        "/system.slice/nekton.service",
        None,
        4242,
        Some(fake_kernel),
        1000,
    );
    assert_eq!(cg.version, Some(CgroupVersion::V2));
    assert_eq!(text(svc.join("nekton-worker/cgroup.procs")), "4242");
    assert_eq!(
        text(svc.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    assert_eq!(
        text(svc.join("nekton-jobs/cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    let p = &cg.preflight;
    assert!(p.memory && p.cpu_quota && p.pids && p.cpu_accounting, "{p}");
    assert!(p.swap_limit && p.memory_peak && p.pids_peak, "{p}");
    assert_eq!(p.kill, "cgroup.kill");
    assert!(p.problems.is_empty(), "{p}");
    assert_eq!(cg.refuse(&limits()), None);

    // A second backend in the same (moved) process uses the same parent, not a nested one.
    let again = Cgroups::setup_v2(
        t.path(),
        "/system.slice/nekton.service/nekton-worker",
        None,
        4242,
        Some(fake_kernel),
        1000,
    );
    assert_eq!(again.parents, cg.parents);
    assert!(!svc.join("nekton-worker/nekton-worker").exists());
}

#[test]
fn v2_configured_parent_is_used_as_given() {
    let t = fake_root("cpu memory pids\n");
    let cg = Cgroups::setup_v2(
        t.path(),
        "/system.slice/nekton.service",
        Some("/system.slice"),
        4242,
        Some(fake_kernel),
        1000,
    );
    assert_eq!(cg.parents[0].1, t.path().join("system.slice/nekton-jobs"));
    // The worker was not moved: the operator chose where jobs go.
    assert!(
        !t.path()
            .join("system.slice/nekton.service/nekton-worker")
            .exists()
    );
}

#[test]
fn v2_missing_controller_refuses_jobs_with_the_reason() {
    let t = fake_root("cpu memory\n");
    let cg = Cgroups::setup_v2(
        t.path(),
        "/system.slice/nekton.service",
        None,
        4242,
        Some(fake_kernel),
        1000,
    );
    let p = &cg.preflight;
    assert!(p.memory && !p.pids, "{p}");
    let why = cg.refuse(&limits()).expect("refused");
    assert!(why.contains("pids"), "{why}");
    assert!(p.problems.iter().any(|m| m.contains("pids")), "{p}");
}

#[test]
fn v2_job_cgroup_limits_usage_kill_and_removal() {
    let t = fake_root("cpu memory pids\n");
    let cg = Cgroups::setup_v2(
        t.path(),
        "/system.slice/nekton.service",
        None,
        4242,
        Some(fake_kernel),
        1500,
    );
    let jobs = t.path().join("system.slice/nekton.service/nekton-jobs");
    let job = cg.create("1.2.3-job", &limits(), 32).unwrap();
    let dir = jobs.join("1.2.3-job");
    assert_eq!(text(dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(text(dir.join("memory.swap.max")), "0");
    assert_eq!(text(dir.join("pids.max")), "32");
    assert_eq!(text(dir.join("cpu.max")), "150000 100000");
    // An OOM kill ends the whole job.
    assert_eq!(text(dir.join("memory.oom.group")), "1");
    assert!(cg.preflight.oom_group, "{}", cg.preflight);
    assert_eq!(job.v2_dir, None);
    assert_eq!(
        job.procs,
        vec![CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap()]
    );
    // A second job with the same name is an error, not a shared cgroup.
    assert!(cg.create("1.2.3-job", &limits(), 32).is_err());

    // What the kernel would report after the job.
    std::fs::write(
        dir.join("cpu.stat"),
        "usage_usec 512000\nuser_usec 500000\nsystem_usec 12000\nnr_periods 7\n",
    )
    .unwrap();
    std::fs::write(dir.join("memory.peak"), "41943040\n").unwrap();
    std::fs::write(dir.join("pids.peak"), "32\n").unwrap();
    std::fs::write(dir.join("pids.events"), "max 17\n").unwrap();
    std::fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    )
    .unwrap();
    let (total, user, system) = job.cpu().unwrap();
    assert_eq!(total, Duration::from_millis(512));
    assert_eq!(
        (user, system),
        (Duration::from_millis(500), Duration::from_millis(12))
    );
    let u = job.usage();
    assert_eq!(u.memory_peak, Some(40 << 20));
    assert_eq!(u.pids_peak, Some(32));
    assert_eq!(u.pids_limit_hit, Some(true));
    assert_eq!(u.oom_kills, 1);
    assert_eq!(u.cpu_user, Some(Duration::from_millis(500)));

    job.kill_all();
    assert_eq!(text(dir.join("cgroup.kill")), "1");
    job.remove_blocking().unwrap();
    assert!(!dir.exists());
}

#[test]
fn v2_pids_peak_falls_back_to_sampling() {
    let t = fake_root("cpu memory pids\n");
    let cg = Cgroups::setup_v2(t.path(), "/", Some("/"), 1, Some(fake_kernel), 0);
    let job = cg.create("j", &limits(), 8).unwrap();
    let dir = t.path().join("nekton-jobs/j");
    // No quota configured: cpu.max untouched.
    assert_eq!(text(dir.join("cpu.max")), "max 100000\n");
    std::fs::remove_file(dir.join("pids.peak")).unwrap();
    std::fs::write(dir.join("pids.current"), "5\n").unwrap();
    job.sample_pids();
    std::fs::write(dir.join("pids.current"), "2\n").unwrap();
    job.sample_pids();
    assert_eq!(job.usage().pids_peak, Some(5));
    // No fork refused: `max 0`; a kernel without pids.events: unknown.
    std::fs::write(dir.join("pids.events"), "max 0\n").unwrap();
    assert_eq!(job.usage().pids_limit_hit, Some(false));
    std::fs::remove_file(dir.join("pids.events")).unwrap();
    assert_eq!(job.usage().pids_limit_hit, None);
}

#[test]
fn stale_job_cgroups_are_removed_live_ones_kept() {
    let t = fake_root("cpu memory pids\n");
    let cg = Cgroups::setup_v2(t.path(), "/", Some("/"), 1, Some(fake_kernel), 1000);
    cg.create("dead.1.0-a", &limits(), 8).unwrap();
    cg.create("live.1.0-b", &limits(), 8).unwrap();
    cg.remove_stale(|n| n.starts_with("live."));
    let jobs = t.path().join("nekton-jobs");
    assert!(!jobs.join("dead.1.0-a").exists());
    assert!(jobs.join("live.1.0-b").exists());
    // The kill went to the stale job's cgroup, never to the parent.
    assert_eq!(text(jobs.join("cgroup.kill")), "");
}

#[test]
fn invalid_names_are_refused() {
    let t = fake_root("cpu memory pids\n");
    let cg = Cgroups::setup_v2(t.path(), "/", Some("/"), 1, Some(fake_kernel), 1000);
    for n in ["", "a/b", "..", ".x"] {
        assert!(cg.create(n, &limits(), 8).is_err(), "{n}");
    }
}

#[test]
fn keyed_files_parse() {
    let t = "usage_usec 10\nuser_usec 7\nbad\nsystem_usec x\n";
    assert_eq!(keyed(t, "usage_usec"), Some(10));
    assert_eq!(keyed(t, "user_usec"), Some(7));
    assert_eq!(keyed(t, "system_usec"), None);
    assert_eq!(keyed(t, "missing"), None);
    assert_eq!(
        keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
        Some(2)
    );
}
