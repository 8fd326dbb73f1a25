//! Chained runs (a test suite's build, then cases on its result) against the real kernel: a kept
//! run's writable layer as the read-only base of later runs, each with a writable layer of its
//! own. Root only; a missing prerequisite fails (never skips).

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::time::Duration;

use container_support::*;
use image_support::TarBuilder;
use runtime_core::{Base, Chain, ExecRequest, OutcomeReason};

/// The build: writes the program `/work/prog`, deletes an image file (a whiteout in its upper)
/// and replaces an image directory (an opaque directory).
const BUILD: &str = "mkdir -p /work && printf '#!/bin/sh\\necho prog ran \"$@\"\\n' > /work/prog \
    && chmod +x /work/prog && rm /data/gone && rm -rf /data/dir && mkdir /data/dir \
    && echo new > /data/dir/new";

fn image_layer() -> Vec<u8> {
    TarBuilder::new()
        .dir("data/", 0o755)
        .file("data/keep", b"kept", 0o644)
        .file("data/gone", b"deleted by the build", 0o644)
        .dir("data/dir/", 0o755)
        .file("data/dir/old", b"replaced by the build", 0o644)
        .finish()
}

async fn setup(env: &TestEnv, name: &str) -> String {
    env.busybox(name, &[image_layer()], default_config()).await
}

fn on(base: &Base, mut r: ExecRequest) -> ExecRequest {
    r.chain = Chain {
        base: Some(base.clone()),
        keep: false,
    };
    r
}

/// Runs the build with `keep` and returns its base.
async fn build(env: &TestEnv, img: &str, script: &str) -> Base {
    let mut r = sh(img, script);
    r.chain.keep = true;
    let ran = run(env, r).await;
    ran.assert_exited(0);
    ran.report
        .kept
        .clone()
        .unwrap_or_else(|| panic!("keep: no base returned: {ran:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_see_the_build_and_never_each_other() {
    let env = TestEnv::new();
    let img = setup(&env, "chain").await;
    let base = build(&env, &img, BUILD).await;
    assert_eq!(base.backend(), "container");

    // Case 1: the build's program, its deletion and its replaced directory; then a write of
    // its own, and a change to a file of the base (copied up into the case's own layer).
    let case1 = on(
        &base,
        sh(
            &img,
            "/work/prog a; test -e /data/gone && echo STILL-THERE; cat /data/keep; echo; \
             ls /data/dir; echo mine > /work/scratch; echo changed >> /work/prog; \
             rm /data/keep",
        ),
    );
    let ran = run(&env, case1).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "prog ran a\nkept\nnew\n", "{ran:?}");

    // Case 2: none of case 1's writes, the base as the build left it.
    let case2 = on(
        &base,
        sh(
            &img,
            "test -e /work/scratch && echo SEES-CASE-1; cat /data/keep; echo; \
             /work/prog b; ls /work",
        ),
    );
    let ran = run(&env, case2).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "kept\nprog ran b\nprog\n", "{ran:?}");

    // The case's own writes never reach the base, whatever the job does with its root.
    let case3 = on(
        &base,
        sh(
            &img,
            "rm -rf /work /data; ls /; mount -o remount,rw / 2>/dev/null; exit 0",
        ),
    );
    run(&env, case3).await.assert_exited(0);
    let ran = run(&env, on(&base, sh(&img, "/work/prog c"))).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "prog ran c\n");
    assert!(host_mounts_under(&env.state_dir).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_run_concurrently_on_one_base() {
    let env = TestEnv::new();
    let img = setup(&env, "concurrent").await;
    let base = build(&env, &img, BUILD).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut r = on(
            &base,
            sh(
                &img,
                // The host's uptime (10 ms steps) on stderr before and after the sleep.
                &format!(
                    "cut -d' ' -f1 /proc/uptime >&2; echo {i} > /work/case-{i}; sleep 0.5; \
                     cut -d' ' -f1 /proc/uptime >&2; ls /work | tr '\\n' ' '; /work/prog {i}"
                ),
            ),
        );
        r.job_id = format!("case-{i}");
        let backend = env.backend.clone();
        tasks.push(tokio::spawn(async move {
            let ran = run_with(backend.as_ref(), r, Default::default()).await;
            (i, ran)
        }));
    }
    // Each case's sleep, as the host's uptime before and after it.
    let mut sleeps = Vec::new();
    for t in tasks {
        let (i, ran) = t.await.unwrap();
        ran.assert_exited(0);
        assert_eq!(
            ran.out(),
            format!("case-{i} prog prog ran {i}\n"),
            "case {i}: {ran:?}"
        );
        let times: Vec<f64> = ran
            .err()
            .lines()
            .map(|l| l.parse().unwrap_or_else(|e| panic!("case {i}: {l:?}: {e}")))
            .collect();
        assert_eq!(times.len(), 2, "case {i}: {ran:?}");
        sleeps.push((times[0], times[1]));
    }
    // They ran side by side: some moment lies within every case's sleep.
    let last_start = sleeps.iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let first_end = sleeps.iter().map(|s| s.1).fold(f64::MAX, f64::min);
    assert!(last_start < first_end, "the cases' sleeps: {sleeps:?}");
    // Job directories are removed in the background, after the report.
    env.backend.settle().await;
    let left: Vec<_> = std::fs::read_dir(env.jobs_dir()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_case_filling_its_disk_leaves_the_base_and_other_cases_alone() {
    let env = TestEnv::new();
    let img = setup(&env, "fill").await;
    let base = build(&env, &img, BUILD).await;
    let mut filler = on(
        &base,
        sh(
            &img,
            "dd if=/dev/zero of=/work/fill bs=1M count=64 2>/dev/null; echo rc=$?; \
             ls -l /work/fill | awk '{print $5}'",
        ),
    );
    filler.limits.disk_bytes = Some(4 << 20);
    let ran = run(&env, filler).await;
    ran.assert_exited(0);
    let out = ran.out();
    assert!(out.starts_with("rc=1\n"), "dd must hit ENOSPC: {out}");
    let size: u64 = out.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(size <= 4 << 20, "{out}");
    assert!(
        ran.report.usage.disk_used_bytes.unwrap() >= 3 << 20,
        "{:?}",
        ran.report.usage
    );
    // The next case has its whole (default) disk and none of the filler's bytes.
    let ran = run(
        &env,
        on(
            &base,
            sh(
                &img,
                "test -e /work/fill && echo SEES-FILL; \
                 dd if=/dev/zero of=/work/big bs=1M count=16 2>/dev/null && echo ok; \
                 /work/prog",
            ),
        ),
    )
    .await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "ok\nprog ran\n");
}

/// The 64-bit mount id (`STATX_MNT_ID_UNIQUE`, never reused) of what `path` leads to.
fn unique_mount_id(path: &std::path::Path) -> Option<u64> {
    const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: all-zero is a valid statx (plain integers).
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid output buffer for the call.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, STATX_MNT_ID_UNIQUE, &mut st) };
    (r == 0 && st.stx_mask & STATX_MNT_ID_UNIQUE != 0).then_some(st.stx_mnt_id)
}

/// Mount ids of this process's descriptors (each followed through `/proc/self/fd`).
fn mounts_of_open_fds() -> Vec<(String, u64)> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                unique_mount_id(&e.path())?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_last_base_releases_its_layer() {
    let env = TestEnv::new();
    let img = setup(&env, "release").await;
    let token = format!("marker-{}", std::process::id());
    let base = build(
        &env,
        &img,
        &format!("mkdir -p /work && echo {token} > /work/{token}"),
    )
    .await;
    // The worker's descriptor of the kept layer: the one whose upper/ holds the build's marker.
    let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| e.path().join(format!("upper/work/{token}")).exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        fds.len(),
        1,
        "the kept layer is held by one descriptor: {fds:?}"
    );
    let mnt = unique_mount_id(&std::path::Path::new("/proc/self/fd").join(&fds[0])).unwrap();
    // The kept layer is read-only.
    let w = std::fs::write(
        std::path::Path::new("/proc/self/fd")
            .join(&fds[0])
            .join("upper/x"),
        b"x",
    );
    assert_eq!(
        w.unwrap_err().raw_os_error(),
        Some(libc::EROFS),
        "the kept layer must be read-only"
    );

    // A case in flight holds its own clone of the base: dropping ours does not pull the layer
    // from under it.
    let case = on(&base, sh(&img, &format!("sleep 0.5; cat /work/{token}")));
    drop(base);
    let ran = run(&env, case).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), format!("{token}\n"));
    drop(ran);
    // The last close (which frees the tmpfs) happens on a blocking thread: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let still: Vec<_> = mounts_of_open_fds()
            .into_iter()
            .filter(|(_, m)| *m == mnt)
            .collect();
        if still.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the layer's mount is still held 5 s after the last base was dropped: {still:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bases_are_checked() {
    let env = TestEnv::new();
    let img = setup(&env, "checked").await;
    let other = env.busybox("other", &[], default_config()).await;
    let base = build(&env, &img, BUILD).await;

    let detail = |ran: &Finished| ran.report.outcome.detail.clone().unwrap_or_default();
    // Another image than the base's.
    let ran = run(&env, on(&base, sh(&other, "true"))).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );
    assert!(
        detail(&ran).contains("was made on image `example.com/test/checked:1`"),
        "{ran:?}"
    );
    // Another backend's base.
    let foreign = Base::new("wasm", 1u32);
    let ran = run(&env, on(&foreign, sh(&img, "true"))).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );
    assert!(detail(&ran).contains("made by the wasm backend"), "{ran:?}");
    // A kept run on a base.
    let mut r = on(&base, sh(&img, "true"));
    r.chain.keep = true;
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );
    assert!(detail(&ran).contains("cannot itself be kept"), "{ran:?}");
    // A kept run whose program never ran keeps nothing.
    let mut r = request(&img, &["no-such-command"]);
    r.chain.keep = true;
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        OutcomeReason::SpecError,
        "{ran:?}"
    );
    assert!(ran.report.kept.is_none(), "{ran:?}");
    // A run without `keep` returns no base; one with `keep` that fails still does.
    let ran = run(&env, sh(&img, "true")).await;
    assert!(ran.report.kept.is_none());
    let mut r = sh(&img, "echo partial > /p; exit 3");
    r.chain.keep = true;
    let ran = run(&env, r).await;
    ran.assert_exited(3);
    let failed = ran.report.kept.clone().expect("a kept failing run");
    let ran = run(&env, on(&failed, sh(&img, "cat /p"))).await;
    assert_eq!(ran.out(), "partial\n");
}
