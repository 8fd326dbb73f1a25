//! Rootless container jobs: the job's root is root in its own user namespace only, mapped to a
//! range of unprivileged host ids; image layers are idmapped, never chowned or copied; what the
//! job writes is owned by its host ids. Checked from the host (`/proc/<pid>/status`, the
//! writable layer of a kept run, the layer directories on disk). Root only; a missing
//! prerequisite fails (never skips).

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use container_backend::{UsernsConfig, UsernsMode};
use container_support::*;
use image_support::TarBuilder;
use runtime_core::OutcomeReason;

/// The host ids a job's user namespace maps, from its own `/proc/self/uid_map` line
/// `0 <start> <size>`.
fn parse_map(line: &str) -> (u32, u32) {
    let f: Vec<u32> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 3, "uid_map line {line:?}");
    assert_eq!(f[0], 0, "uid_map line {line:?}");
    (f[1], f[2])
}

/// Host pid of the process whose command line is exactly `argv`.
async fn wait_for_process(argv: &[&str]) -> i32 {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    for _ in 0..500 {
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            (std::fs::read(e.path().join("cmdline")).ok()? == want).then_some(pid)
        });
        if let Some(pid) = found {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no process {argv:?} appeared");
}

/// `Uid:` and `Gid:` of `/proc/<pid>/status`: (real, effective, saved, fs) each.
fn status_ids(pid: i32) -> (Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect()
    };
    (ids("Uid:"), ids("Gid:"))
}

fn require_rootless() {
    assert!(
        rootless(),
        "tests/userns.rs checks user namespaces: run it without NEKTON_TEST_USERNS=off"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jobs_root_is_an_unprivileged_host_uid_of_its_own_range() {
    require_rootless();
    let env = TestEnv::new();
    let image = env.busybox("userns-ids", &[], default_config()).await;
    let defaults = UsernsConfig::default();

    // Inside: root.
    let ran = run(
        &env,
        sh(
            &image,
            "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map",
        ),
    )
    .await;
    ran.assert_exited(0);
    let out = ran.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["0", "0"], "{out}");
    let (start, size) = parse_map(lines[2]);
    assert_eq!(
        parse_map(lines[3]),
        (start, size),
        "gid_map = uid_map: {out}"
    );
    assert_eq!(size, defaults.size);
    assert!(start >= defaults.base, "{start}");

    // From the host, while two jobs sleep at once: each job's process, and its init, are
    // the first id of a range of their own — never 0, never the other job's.
    let mut a = Running::start(
        &env,
        sh(
            &image,
            "cat /proc/self/uid_map; echo ready; exec sleep 4713",
        ),
    );
    let mut b = Running::start(
        &env,
        sh(
            &image,
            "cat /proc/self/uid_map; echo ready; exec sleep 4714",
        ),
    );
    let mut starts = Vec::new();
    for (job, argv) in [(&mut a, ["sleep", "4713"]), (&mut b, ["sleep", "4714"])] {
        let out = job.until("ready\n").await;
        let (start, size) = parse_map(out.lines().next().unwrap());
        let pid = wait_for_process(&argv).await;
        let (uid, gid) = status_ids(pid);
        assert_eq!(uid, [start; 4], "host uids of the job's process {pid}");
        assert_eq!(gid, [start; 4], "host gids of the job's process {pid}");
        assert_ne!(start, 0);
        let (uid, gid) = status_ids(ppid_of(pid));
        assert_eq!((uid, gid), (vec![start; 4], vec![start; 4]), "the init");
        starts.push((start, size));
    }
    let ((s1, n1), (s2, _)) = (starts[0], starts[1]);
    assert!(
        s1 + n1 <= s2 || s2 + n1 <= s1,
        "two running jobs share host ids: {starts:?}"
    );
    for job in [a, b] {
        let report = job.stop().await;
        assert_eq!(
            report.outcome.reason,
            OutcomeReason::Cancelled,
            "{report:?}"
        );
    }
}

/// (owner uid, gid, mode, inode, size, mtime) of every entry below `dir`, by path.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, u32, u32, u64, u64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = std::fs::symlink_metadata(&d).unwrap();
        out.insert(
            d.clone(),
            (m.uid(), m.gid(), m.mode(), m.ino(), m.size(), m.mtime()),
        );
        if m.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(
                        p,
                        (m.uid(), m.gid(), m.mode(), m.ino(), m.size(), m.mtime()),
                    );
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_land_as_the_jobs_host_ids_and_image_layers_stay_untouched() {
    require_rootless();
    let env = TestEnv::new();
    let extra = TarBuilder::new()
        .dir("data/", 0o755)
        .file("data/owned", b"by 1000", 0o644)
        .finish();
    let image = env
        .busybox("userns-files", &[extra], default_config())
        .await;
    let record = env.images.store().get(&image).unwrap().unwrap();
    let layers = env.images.store().lowerdirs(&record);
    assert!(!layers.is_empty());
    let before: Vec<_> = layers.iter().map(|l| snapshot(l)).collect();
    // The layers on disk are owned by 0 (they are not chowned for the job).
    assert!(before.iter().flatten().all(|(_, v)| v.0 == 0 && v.1 == 0));

    // A build that writes, copies up, chowns, chmods and deletes image files; kept, so its
    // writable layer can be read from the host afterwards.
    let script = "cat /proc/self/uid_map; stat -c '%u %g' /bin/busybox /data/owned; \
        echo new > /new; mkdir /dir; echo more >> /etc/passwd; \
        chown 1000:1000 /data/owned; rm /bin/ls; touch /data; chmod 600 /bin/busybox; \
        echo done";
    let mut r = sh(&image, script);
    r.chain.keep = true;
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    let out = ran.out();
    let lines: Vec<&str> = out.lines().collect();
    let (start, _) = parse_map(lines[0]);
    // Inside, through the idmapped layers, the image's files are root's.
    assert_eq!(&lines[1..3], ["0 0", "0 0"], "{out}");
    assert_eq!(lines.last(), Some(&"done"), "{out}");
    let base = ran.report.kept.clone().expect("a kept base");
    let layer = container_backend::kept_layer(&base).expect("the kept layer");
    let owner = |path: &str| {
        let st = nix::sys::stat::fstatat(
            layer.as_fd(),
            format!("upper/{path}").as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap_or_else(|e| panic!("upper/{path}: {e}"));
        (st.st_uid, st.st_gid)
    };
    assert_eq!(owner("new"), (start, start), "a file the job created");
    assert_eq!(owner("dir"), (start, start), "a directory the job created");
    assert_eq!(
        owner("etc/passwd"),
        (start, start),
        "a copied-up image file"
    );
    assert_eq!(
        owner("bin/busybox"),
        (start, start),
        "a chmodded image file"
    );
    assert_eq!(
        owner("data/owned"),
        (start + 1000, start + 1000),
        "chown 1000:1000"
    );
    assert_eq!(owner("."), (start, start), "the container's /");

    // Jobs writing through the same image at once, then the layers are checked again.
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut r = sh(
            &image,
            "echo x >> /etc/passwd && chown 5:5 /etc/group && rm -f /bin/cat && echo ok",
        );
        r.job_id = format!("writer-{i}");
        let backend = env.backend.clone();
        tasks.push(tokio::spawn(async move {
            run_with(backend.as_ref(), r, Default::default()).await
        }));
    }
    for t in tasks {
        let ran = t.await.unwrap();
        ran.assert_exited(0);
        assert_eq!(ran.out(), "ok\n");
    }
    drop(base);
    let after: Vec<_> = layers.iter().map(|l| snapshot(l)).collect();
    assert_eq!(before, after, "the image layers changed on disk");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_jobs_files_are_its_host_ids_seen_from_the_host() {
    require_rootless();
    let env = TestEnv::new();
    let image = env.busybox("userns-live", &[], default_config()).await;
    let mut r = sh(
        &image,
        "cat /proc/self/uid_map; echo hi > /work/live; echo ready; exec sleep 4715",
    );
    r.files = vec![file("in/put.txt", b"x", None)];
    r.container.user = Some("1000:1000".into());
    r.container.workdir = Some("/work".into());
    let mut job = Running::start(&env, r);
    let out = job.until("ready\n").await;
    let (start, _) = parse_map(out.lines().next().unwrap());
    let pid = wait_for_process(&["sleep", "4715"]).await;
    let (uid, _) = status_ids(pid);
    assert_eq!(uid, [start + 1000; 4]);
    let meta = |p: &str| std::fs::symlink_metadata(format!("/proc/{pid}/root/{p}")).unwrap();
    let m = meta("work/live");
    assert_eq!(
        (m.uid(), m.gid()),
        (start + 1000, start + 1000),
        "/work/live"
    );
    let m = meta("work/in/put.txt");
    assert_eq!(
        (m.uid(), m.gid()),
        (start + 1000, start + 1000),
        "an input file"
    );
    let m = meta("etc/hosts");
    assert_eq!((m.uid(), m.gid()), (start, start), "/etc/hosts");
    let m = meta("bin/busybox");
    assert_eq!(
        (m.uid(), m.gid()),
        (start, start),
        "an image file (idmapped)"
    );
    job.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_outside_the_namespace_and_low_ports() {
    require_rootless();
    let env = TestEnv::new();
    let image = env.busybox("userns-users", &[], default_config()).await;
    // A uid the namespace does not map: the job's spec error, saying so.
    let mut r = sh(&image, "id -u");
    r.container.user = Some("70000:0".into());
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );
    let detail = ran.report.outcome.detail.clone().unwrap_or_default();
    assert!(
        detail.contains("outside the job's user namespace"),
        "{detail}"
    );
    // Capabilities are the namespace's: the job's root binds a port below 1024 in its own
    // network namespace (as with Docker), and still cannot mount or set the hostname.
    let ran = run(
        &env,
        sh(
            &image,
            "timeout 1 nc -l -p 80 2>&1; echo nc=$?; \
             mount -t tmpfs x /mnt 2>/dev/null; echo mount=$?; \
             hostname evil 2>/dev/null; echo hostname=$?",
        ),
    )
    .await;
    ran.assert_exited(0);
    let out = ran.out();
    assert!(!out.contains("Permission denied"), "{out}");
    assert!(out.contains("nc=") && !out.contains("nc=1\n"), "{out}");
    assert!(!out.contains("mount=0"), "{out}");
    assert!(!out.contains("hostname=0"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_in_other_ranges_see_the_build_as_theirs() {
    require_rootless();
    let env = TestEnv::new();
    let image = env.busybox("userns-chain", &[], default_config()).await;
    let mut r = sh(
        &image,
        "mkdir /work && echo built > /work/out && chown 1000 /work/out && echo ok",
    );
    r.chain.keep = true;
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    let base = ran.report.kept.clone().unwrap();
    // Cases at once: each in a range of its own (the build's range is one of them at most),
    // each sees the build's files with the build's owners and can change them.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut r = sh(
            &image,
            "cat /proc/self/uid_map; stat -c '%u %g' /work/out /work; sleep 0.3; \
             echo more >> /work/out && cat /work/out",
        );
        r.job_id = format!("case-{i}");
        r.chain.base = Some(base.clone());
        let backend = env.backend.clone();
        tasks.push(tokio::spawn(async move {
            run_with(backend.as_ref(), r, Default::default()).await
        }));
    }
    let mut starts = Vec::new();
    for t in tasks {
        let ran = t.await.unwrap();
        ran.assert_exited(0);
        let out = ran.out();
        let lines: Vec<&str> = out.lines().collect();
        starts.push(parse_map(lines[0]).0);
        assert_eq!(&lines[1..], ["1000 0", "0 0", "built", "more"], "{out}");
    }
    starts.sort();
    starts.dedup();
    assert_eq!(
        starts.len(),
        4,
        "concurrent cases shared a range: {starts:?}"
    );
}

/// `ramfs` has no idmapped mounts: a store there turns user namespaces off (auto) with the
/// reason in the preflight, or refuses to start (on).
#[tokio::test(flavor = "multi_thread")]
async fn a_store_without_idmapped_mounts_falls_back_or_refuses() {
    image_support::require_root();
    let dir = tempfile::Builder::new()
        .prefix("nkr")
        .tempdir_in("/tmp")
        .unwrap();
    nix::mount::mount(
        Some("ramfs"),
        dir.path(),
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mounting a ramfs (root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(dir.path().to_path_buf());
    let store = image_store::ImageStore::open(dir.path().join("s"), Default::default()).unwrap();
    let images = image_store::ImageService::new(
        std::sync::Arc::new(store),
        image_store::RegistryOptions::default(),
    )
    .unwrap();
    let config = |mode| container_backend::ContainerConfig {
        state_dir: dir.path().join("c"),
        userns: UsernsConfig {
            mode,
            ..UsernsConfig::default()
        },
        ..Default::default()
    };
    let err = container_backend::ContainerBackend::new(config(UsernsMode::On), images.clone())
        .expect_err("--userns on over a store without idmapped mounts must not start");
    assert!(err.to_string().contains("idmapped"), "{err}");
    let backend = container_backend::ContainerBackend::new(config(UsernsMode::Auto), images)
        .expect("auto falls back");
    let preflight = backend.preflight().to_string();
    assert!(
        preflight.contains("userns OFF (unsupported here") && preflight.contains("idmapped"),
        "{preflight}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_waiting_for_a_free_range_can_be_cancelled() {
    require_rootless();
    // One range: a second container waits until the first is reaped.
    let env = TestEnv::with_config(|c| c.userns.ranges = 1);
    let image = env.busybox("userns-wait", &[], default_config()).await;
    let mut first = Running::start(&env, sh(&image, "echo ready; exec sleep 4716"));
    first.until("ready\n").await;
    let second = Running::start(&env, sh(&image, "echo never"));
    // The image is in the store already: the second job is past resolving it and waiting for
    // the range long before this (nothing shows that wait from outside).
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Cancelled while it waits: it ends now, not when the first job's range comes back.
    let report = tokio::time::timeout(Duration::from_secs(20), second.stop())
        .await
        .expect("a cancel did not end the wait for a user namespace range");
    assert_eq!(
        report.outcome.reason,
        OutcomeReason::Cancelled,
        "{report:?}"
    );
    let detail = report.outcome.detail.clone().unwrap_or_default();
    assert!(detail.contains("free user namespace range"), "{detail}");
    let first = first.stop().await;
    assert_eq!(first.outcome.reason, OutcomeReason::Cancelled, "{first:?}");
}
