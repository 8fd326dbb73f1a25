//! The Linux container backend against the real kernel: namespaces, overlayfs, mounts, users,
//! limits, leftovers. Root only; a missing prerequisite fails (never skips).

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::path::Path;
use std::time::{Duration, Instant};

use container_support::*;
use image_support::TarBuilder;
use runtime_core::{CancellationToken, OutcomeReason};

#[tokio::test(flavor = "multi_thread")]
async fn image_entrypoint_cmd_and_overrides() {
    let env = TestEnv::new();
    let img = env
        .busybox(
            "entry",
            &[],
            config(&["echo", "entry"], &["from-cmd"], &["PATH=/bin"], "/", ""),
        )
        .await;
    // Image entrypoint ++ image cmd.
    let ran = run(&env, request(&img, &[])).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "entry from-cmd\n");
    // Job args replace the cmd only.
    let ran = run(&env, request(&img, &["job-args"])).await;
    assert_eq!(ran.out(), "entry job-args\n");
    // A job entrypoint drops the image cmd.
    let mut r = request(&img, &[]);
    r.container.entrypoint = Some(vec!["echo".into(), "own".into()]);
    assert_eq!(run(&env, r).await.out(), "own\n");

    // Cmd only.
    let img2 = env
        .busybox("cmdonly", &[], config(&[], &["echo", "cmd"], &[], "", ""))
        .await;
    let ran = run(&env, request(&img2, &[])).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "cmd\n");

    // Neither: spec error.
    let img3 = env
        .busybox("nothing", &[], config(&[], &[], &[], "", ""))
        .await;
    let ran = run(&env, request(&img3, &[])).await;
    assert_eq!(ran.report.outcome.reason, OutcomeReason::SpecError);
    assert!(
        ran.report
            .outcome
            .detail
            .as_deref()
            .unwrap()
            .contains("no entrypoint or cmd"),
        "{ran:?}"
    );

    // A command that is not in the image.
    let ran = run(&env, request(&img3, &["no-such-cmd", "x"])).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );
    assert_eq!(
        ran.report.outcome.detail.as_deref(),
        Some("`no-such-cmd`: no such file in the image")
    );
    let ran = run(&env, request(&img3, &["/bin/nope"])).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );

    // A missing image is an image error.
    let ran = run(&env, request("example.com/test/absent:1", &["sh"])).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::ImageError,
        "{ran:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn env_workdir_and_user() {
    let env = TestEnv::new();
    let img = env
        .busybox(
            "users",
            &[users_layer()],
            config(
                &[],
                &["sh"],
                &["PATH=/bin", "FROM_IMAGE=1", "OVER=image"],
                "/srv/app",
                "",
            ),
        )
        .await;
    let mut r = sh(
        &img,
        "echo $FROM_IMAGE $OVER $JOB $HOME $HOSTNAME; pwd; id -u; id -g",
    );
    r.env = vec![("OVER".into(), "job".into()), ("JOB".into(), "x y".into())];
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "1 job x y /root 0190a3c4-tes\n/srv/app\n0\n0\n");

    // Job workdir, created if missing, owned by the job user.
    let mut r = sh(
        &img,
        "pwd; stat -c '%u %g' .; id -u; id -g; id -G; echo $HOME",
    );
    r.container.workdir = Some("/work/deep".into());
    r.container.user = Some("1000:1000".into());
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "/work/deep\n1000 1000\n1000\n1000\n1000\n/\n");

    // A named user from the image's /etc/passwd, with supplementary groups from /etc/group.
    let mut r = sh(
        &img,
        "id -u; id -g; id -G; echo $HOME; grep CapEff /proc/self/status",
    );
    r.container.user = Some("app".into());
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    assert_eq!(
        ran.out(),
        "1234\n1300\n1300 1400\n/home/app\nCapEff:\t0000000000000000\n"
    );

    // Unknown user: spec error.
    let mut r = sh(&img, "true");
    r.container.user = Some("ghost".into());
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );
    assert!(ran.report.outcome.detail.unwrap().contains("ghost"));
}

#[tokio::test(flavor = "multi_thread")]
async fn input_files_modes_and_owner() {
    // Stdin, and input files' content, are the conformance suite's (tests/conformance.rs).
    let env = TestEnv::new();
    let img = env
        .busybox("files", &[users_layer()], default_config())
        .await;
    let mut r = sh(
        &img,
        "cat in.txt; stat -c '%a %u %g' in.txt sub/dir/x.sh sub; ./sub/dir/x.sh",
    );
    r.container.workdir = Some("/job".into());
    r.container.user = Some("app".into());
    r.files = vec![
        file("in.txt", b"input!\n", None),
        file("sub/dir/x.sh", b"#!/bin/sh\necho script ran\n", Some(0o750)),
    ];
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    assert_eq!(
        ran.out(),
        "input!\n644 1234 1300\n750 1234 1300\n755 1234 1300\nscript ran\n"
    );
}

fn cap_mask() -> u64 {
    [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31]
        .iter()
        .fold(0, |m, b| m | (1u64 << b))
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation() {
    let env = TestEnv::new();
    let img = env.busybox("iso", &[], default_config()).await;

    // The job's descriptors: 0-2, plus the directory `ls` itself opened to list them.
    let mut r = request(&img, &["-l", "/proc/self/fd/"]);
    r.container.entrypoint = Some(vec!["ls".into()]);
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    let fds: Vec<(String, String)> = ran
        .out()
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            Some((
                left.split_whitespace().last()?.to_string(),
                target.to_string(),
            ))
        })
        .filter(|(_, target)| !(target.starts_with("/proc/") && target.ends_with("/fd")))
        .collect();
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0", "1", "2"], "{}", ran.out());
    assert!(fds[0].1.contains("memfd:nekton-stdin"), "{fds:?}");

    let ran = run(
        &env,
        sh(&img, "hostname; cat /etc/hostname; cat /etc/hosts"),
    )
    .await;
    ran.assert_exited(0);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let out = ran.out();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0190a3c4-tes"));
    assert_ne!(host, "0190a3c4-tes");
    assert_eq!(lines.next(), Some("0190a3c4-tes"));
    assert!(out.contains("127.0.0.1\tlocalhost 0190a3c4-tes"), "{out}");

    // Only the job's processes; PID 1 is the init, the job is not PID 1.
    let ran = run(&env, sh(&img, "echo $$; ps -o pid,comm; true")).await;
    ran.assert_exited(0);
    let out = ran.out();
    let procs: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(out.lines().next(), Some("2"), "{out}");
    assert_eq!(procs.len(), 3, "{out}");
    assert_eq!(procs[0], ["1", "nekton-init"], "{out}");
    assert_eq!(procs[1], ["2", "sh"], "{out}");
    assert_eq!(procs[2][1], "ps", "{out}");

    let script = r#"
        echo x > /sys/kernel/uevent_helper 2>/dev/null && echo sys-writable
        touch /sys/x 2>/dev/null && echo sys-touch
        [ -e /proc/sysrq-trigger ] && { echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; }
        echo core > /proc/sys/kernel/core_pattern 2>/dev/null && echo core-pattern-writable
        [ -e /proc/kcore ] && echo kcore=$(wc -c < /proc/kcore)
        echo timer_list=$(wc -c < /proc/timer_list)
        echo firmware=$(ls /sys/firmware | wc -l) acpi=$(stat -f -c %T /proc/acpi)
        awk '$5 ~ /^\/proc\/(sys|fs|irq|bus|sysrq-trigger)$/ {print $5, substr($6, 1, 2)}' /proc/self/mountinfo | sort
        echo net=$(ls /sys/class/net)
        ip link | grep -c '^[0-9]'
        grep -E 'CapEff|CapBnd|CapPrm|CapInh|NoNewPrivs' /proc/self/status
        mknod /tmp/null c 1 3 2>/dev/null && echo mknod-worked
        mount -t tmpfs x /mnt 2>/dev/null && echo mount-worked
        ls /dev | tr '\n' ' '; echo
        echo shm=$(stat -c %a /dev/shm)
        echo root=$(stat -c %a /)
    "#;
    let ran = run(&env, sh(&img, script)).await;
    ran.assert_exited(0);
    // What the masks hide must exist on the host, or the test proves nothing.
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty());
    assert!(std::fs::read_dir("/sys/firmware").unwrap().count() > 0);
    let kcore = if Path::new("/proc/kcore").exists() {
        "kcore=0\n"
    } else {
        ""
    };
    let mut ro = String::new();
    for p in ["bus", "fs", "irq", "sys", "sysrq-trigger"] {
        if Path::new("/proc").join(p).exists() {
            ro.push_str(&format!("/proc/{p} ro\n"));
        }
    }
    let caps = format!("{:016x}", cap_mask());
    assert_eq!(
        ran.out(),
        format!(
            "{kcore}timer_list=0\nfirmware=0 acpi=tmpfs\n{ro}net=lo\n1\n\
             CapInh:\t0000000000000000\nCapPrm:\t{caps}\n\
             CapEff:\t{caps}\nCapBnd:\t{caps}\nNoNewPrivs:\t1\n\
             fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \n\
             shm=1777\nroot=755\n"
        ),
        "stderr: {}",
        ran.err()
    );
}

/// The spawner thread's pid namespace for children, `pid:[inode]` (`/proc/self/task/<tid>/ns/`), of
/// every `nekton-spawner` thread of this process (two per backend: other tests' too).
fn spawner_pid_namespaces() -> Vec<String> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "nekton-spawner"
            && let Ok(ns) = std::fs::read_link(task.path().join("ns/pid_for_children"))
        {
            found.push(ns.to_string_lossy().into_owned());
        }
    }
    found
}

/// Each job's init is the first process of a pid namespace of its own, started by one of the
/// worker's spawner threads, whose namespace for children is the worker's own again after each.
///
/// A namespace's inode number identifies it only while it lives: the kernel hands a freed one to
/// the next namespace (CI saw a third job get the first one's number). So the jobs run at once,
/// and each shows what only a namespace of its own can: its pid 1 is its init, and the only
/// processes it can see are that init and its own shell.
#[tokio::test(flavor = "multi_thread")]
async fn each_job_gets_a_pid_namespace_and_the_spawner_returns_to_the_workers() {
    let env = TestEnv::new();
    let img = env.busybox("pidns", &[], default_config()).await;
    let own = std::fs::read_link("/proc/self/ns/pid")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // `echo` and the glob are the shell's own: no process of the script's is alive but `sh`.
    let script = "readlink /proc/self/ns/pid; cat /proc/1/comm; sleep 0.3; echo /proc/[0-9]*";
    let (a, b, c) = tokio::join!(
        run(&env, sh(&img, script)),
        run(&env, sh(&img, script)),
        run(&env, sh(&img, script))
    );
    for ran in [a, b, c] {
        ran.assert_exited(0);
        let out = ran.out();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("pid:["), "{out}");
        assert_ne!(lines[0], own, "the job runs in the worker's pid namespace");
        assert_eq!(lines[1], "nekton-init", "{out}");
        assert_eq!(
            lines[2], "/proc/1 /proc/2",
            "another job's processes are visible: {out}"
        );
    }
    // Every spawner thread's children go into the worker's namespace between containers. Another
    // test's spawner may be between its `unshare` and its `setns` (microseconds) when looked at:
    // look again then; one that never went back fails.
    let mut last = Vec::new();
    for _ in 0..100 {
        last = spawner_pid_namespaces();
        if !last.is_empty() && last.iter().all(|ns| *ns == own) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("spawner threads' pid namespaces for children {last:?}, the worker's {own}");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_never_see_each_others_writes() {
    let env = TestEnv::new();
    let img = env.busybox("private", &[], default_config()).await;
    let ran = run(
        &env,
        sh(
            &img,
            "echo planted > /planted; echo x > /tmp/x; ls /planted",
        ),
    )
    .await;
    ran.assert_exited(0);
    let ran = run(&env, sh(&img, "ls /planted /tmp/x 2>&1; true")).await;
    assert!(ran.out().contains("No such file"), "{}", ran.out());
    assert!(!ran.out().contains("/planted\n"));

    // Two concurrent jobs: each writes its marker, waits, and looks for the other's.
    let a = run(
        &env,
        sh(
            &img,
            "touch /a-was-here; sleep 0.5; ls /b-was-here 2>/dev/null; echo done",
        ),
    );
    let b = run(
        &env,
        sh(
            &img,
            "touch /b-was-here; sleep 0.5; ls /a-was-here 2>/dev/null; echo done",
        ),
    );
    let (a, b) = tokio::join!(a, b);
    assert_eq!(a.out(), "done\n");
    assert_eq!(b.out(), "done\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_delete_lower_files() {
    let env = TestEnv::new();
    let lower = TarBuilder::new()
        .dir("data/", 0o755)
        .file("data/keep", b"k", 0o644)
        .file("data/gone", b"g", 0o644)
        .dir("data/opq/", 0o755)
        .file("data/opq/old1", b"1", 0o644)
        .file("data/opq/old2", b"2", 0o644)
        .finish();
    let upper = TarBuilder::new()
        .dir("data/", 0o755)
        .file("data/.wh.gone", b"", 0o644)
        .dir("data/opq/", 0o755)
        .file("data/opq/.wh..wh..opq", b"", 0o644)
        .file("data/opq/new", b"n", 0o644)
        .finish();
    let img = env.busybox("wh", &[lower, upper], default_config()).await;
    let ran = run(&env, sh(&img, "cd /data && echo * && cd opq && echo *")).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "keep opq\nnew\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_and_job_symlink_tricks_stay_inside() {
    let env = TestEnv::new();
    let sentinel = env.tmp.path().join("host-sentinel");
    std::fs::write(&sentinel, b"untouched").unwrap();
    let core_before = std::fs::read("/proc/sys/kernel/core_pattern").unwrap();
    let evil = TarBuilder::new()
        .dir("etc/", 0o755)
        .symlink("etc/hosts", "/proc/sys/kernel/core_pattern")
        .symlink("etc/hostname", sentinel.to_str().unwrap())
        .dir("d/", 0o755)
        .symlink("d/up", "..")
        // Lexically inside the layer; really `/..`, then `..` again: only RESOLVE_IN_ROOT /
        // pivot_root keep it in the root.
        .symlink("w", "d/up/../..")
        .symlink("to-etc", "/etc")
        .finish();
    let img = env.busybox("evil", &[evil], default_config()).await;
    let ran = run(&env, sh(&img, "cat /etc/hosts; cat /etc/hostname")).await;
    ran.assert_exited(0);
    assert!(ran.out().contains("localhost"), "{}", ran.out());
    assert_eq!(
        std::fs::read("/proc/sys/kernel/core_pattern").unwrap(),
        core_before
    );
    assert_eq!(std::fs::read(&sentinel).unwrap(), b"untouched");

    // A workdir through the escaping symlink resolves inside the root; input files land there.
    let mut r = sh(&img, "pwd -P; ls /bin/busybox; cat /escaped.txt");
    r.container.workdir = Some("/w".into());
    r.files = vec![file("escaped.txt", b"inside\n", None)];
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "/\n/bin/busybox\ninside\n");
    assert!(!Path::new("/escaped.txt").exists());
    assert!(!env.tmp.path().join("escaped.txt").exists());

    // An input file through a symlinked directory is refused.
    for path in ["to-etc/evil", "w/evil", "d/up/evil"] {
        let mut r = sh(&img, "true");
        r.files = vec![file(path, b"x", None)];
        let ran = run(&env, r).await;
        assert_eq!(
            ran.report.outcome.reason,
            OutcomeReason::SpecError,
            "{path}: {ran:?}"
        );
        assert!(
            ran.report
                .outcome
                .detail
                .as_deref()
                .unwrap()
                .contains("symlink"),
            "{path}: {ran:?}"
        );
    }
    // A symlink leaf too.
    let mut r = sh(&img, "true");
    r.container.workdir = Some("/etc".into());
    r.files = vec![file("hostname", b"x", None)];
    let ran = run(&env, r).await;
    // /etc/hostname was replaced by the runtime's own file first, so this is a plain overwrite.
    ran.assert_exited(0);
    let mut r = sh(&img, "true");
    r.files = vec![file("to-etc", b"x", None)];
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );
}

/// Processes whose command line is exactly `sleep <marker>` (a looser match would hit unrelated
/// host processes, e.g. compilers whose arguments contain hashes).
fn marker_processes(marker: &str) -> Vec<String> {
    let want = format!("sleep\0{marker}\0");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && c == want.as_bytes()
        {
            out.push(format!("{:?}", e.file_name()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn daemons_die_with_the_job_and_the_cpu_time_limit() {
    // Wall timeouts, cancellation, the output cap and bytes surviving are the conformance
    // suite's (tests/conformance.rs).
    let env = TestEnv::new();
    let img = env.busybox("limits", &[], default_config()).await;

    // A double-forked daemon dies with the job.
    // (While the job runs, the daemon is visible from the host: the check below can fail.)
    let job = run(&env, sh(&img, "(sleep 4711 &) ; sleep 0.6; exit 0"));
    let probe = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        marker_processes("4711")
    };
    let (ran, seen) = tokio::join!(job, probe);
    assert_eq!(seen.len(), 1, "{seen:?}");
    ran.assert_exited(0);
    assert!(
        marker_processes("4711").is_empty(),
        "{:?}",
        marker_processes("4711")
    );

    // CPU time limit.
    let mut r = sh(&img, "while :; do :; done");
    r.limits.cpu_time = Some(Duration::from_secs(1));
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::CpuTimeout,
        "{ran:?}"
    );
    // The worker's watch of the cgroup's exact CPU time stops it, not `RLIMIT_CPU` (a second
    // later, tick-sampled): the bill shows at least the limit.
    assert!(
        ran.report.usage.cpu_user + ran.report.usage.cpu_system >= Duration::from_secs(1),
        "{ran:?}"
    );
    assert_ne!(ran.report.outcome.signal, Some(libc::SIGXCPU), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_leftovers_after_many_mixed_jobs() {
    let env = TestEnv::new();
    let img = env.busybox("mixed", &[], default_config()).await;
    let backend = env.backend.clone();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (img, backend, sem) = (img.clone(), backend.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let cancel = CancellationToken::new();
            let (mut r, expect) = match i % 6 {
                0 => (sh(&img, "echo ok"), OutcomeReason::Exited),
                1 => (sh(&img, "exit 3"), OutcomeReason::Exited),
                2 => (
                    sh(&img, "(sleep 9191 &); kill -9 $$"),
                    OutcomeReason::Signaled,
                ),
                3 => {
                    let mut r = sh(&img, "sleep 9192");
                    r.limits.wall_time = Duration::from_millis(50);
                    (r, OutcomeReason::WallTimeout)
                }
                4 => {
                    let c = cancel.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        c.cancel();
                    });
                    (
                        sh(&img, "sleep 9193 & sleep 9194"),
                        OutcomeReason::Cancelled,
                    )
                }
                _ => (request(&img, &["no-such-binary"]), OutcomeReason::SpecError),
            };
            r.job_id = format!("job-{i}");
            let ran = run_with(backend.as_ref(), r, cancel).await;
            assert_eq!(ran.report.outcome.reason, expect, "job {i}: {ran:?}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Job directories are removed in the background, after the report.
    env.backend.settle().await;
    let left: Vec<_> = std::fs::read_dir(env.jobs_dir()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(host_mounts_under(&env.state_dir).is_empty());
    assert!(processes_under(&env.state_dir).is_empty());
    assert!(processes_under(env.tmp.path()).is_empty());
    for m in ["9191", "9192", "9193", "9194"] {
        assert!(
            marker_processes(m).is_empty(),
            "{m}: {:?}",
            marker_processes(m)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn new_cleans_a_crashed_predecessors_job_dirs() {
    let env = TestEnv::new();
    let jobs = env.jobs_dir();
    // A dead process's directory (pid 999999999 does not exist) and an unparsable one.
    std::fs::create_dir_all(jobs.join("999999999.1.0-old/upper/x")).unwrap();
    std::fs::create_dir_all(jobs.join("stale")).unwrap();
    // A live one of this process (another backend on the same state dir) is kept.
    let live = jobs.join(format!(
        "{}.{}.7-live",
        std::process::id(),
        std::fs::read_to_string("/proc/self/stat")
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(19)
            .unwrap()
    ));
    std::fs::create_dir(&live).unwrap();
    let _second = container_backend::ContainerBackend::new(
        container_backend::ContainerConfig {
            state_dir: env.state_dir.clone(),
            scratch_bytes: 1 << 20,
            shm_bytes: 1 << 20,
            ..Default::default()
        },
        env.images.clone(),
    )
    .unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&jobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [live.file_name().unwrap().to_string_lossy().into_owned()]
    );
}

/// Fifty `/bin/true` containers in a row on one backend: each exits 0 and reports its setup.
/// (How long they take is the `containers` benchmark's: `load-tests/README.md`.)
#[tokio::test(flavor = "multi_thread")]
async fn fifty_true_containers_in_a_row() {
    let env = TestEnv::new();
    let img = env.busybox("true", &[], default_config()).await;
    let mut r = request(&img, &[]);
    r.container.entrypoint = Some(vec!["/bin/true".into()]);
    for _ in 0..50 {
        let ran = run(&env, r.clone()).await;
        ran.assert_exited(0);
        assert!(ran.report.usage.setup > Duration::ZERO, "{ran:?}");
    }
}

/// Run as a separate "worker" process by `a_killed_worker_takes_its_containers_with_it`: starts a
/// long job on the state dir named by `NEKTON_CRASH_STATE`, and never finishes it. A no-op in
/// a normal test run.
#[tokio::test(flavor = "multi_thread")]
async fn crash_helper_worker() {
    let Ok(state) = std::env::var("NEKTON_CRASH_STATE") else {
        return;
    };
    let env = TestEnv::with_state_dir(state.into());
    let img = env.busybox("crash", &[], default_config()).await;
    let ran = run(&env, sh(&img, "sleep 5151")).await;
    panic!("the job was expected to be killed with its worker: {ran:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_takes_its_containers_with_it() {
    let env = TestEnv::new();
    let state = env.tmp.path().join("crash-state");
    // The helper's test name: `crash_helper_worker`, or `suite::crash_helper_worker` in the
    // `container_no_userns` binary (which includes this file as its module `suite`).
    let helper = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::crash_helper_worker"),
        None => "crash_helper_worker".to_string(),
    };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            helper.as_str(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NEKTON_CRASH_STATE", &state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the job runs.
    let t = Instant::now();
    while marker_processes("5151").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the helper's job never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the helper exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jobs = state.join("jobs");
    assert_eq!(std::fs::read_dir(&jobs).unwrap().count(), 1);
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup code runs in the worker.
    child.wait().unwrap();
    let t = Instant::now();
    while !marker_processes("5151").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the job outlived its worker: {:?}",
            marker_processes("5151")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(host_mounts_under(&state).is_empty());
    // Its job directory is left; the next backend on that state dir removes it.
    assert_eq!(std::fs::read_dir(&jobs).unwrap().count(), 1);
    let _next = TestEnv::with_state_dir(state.clone());
    assert_eq!(std::fs::read_dir(&jobs).unwrap().count(), 0);
}
