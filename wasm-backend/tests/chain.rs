//! Chained runs and artifacts: a run that keeps its directory (`chain.keep`), runs that start
//! from it (`chain.base`: a copy of its files, each run's writes its own), and the files a run's
//! `artifacts` patterns collect from its directory after it ended.

mod common;

use std::time::Duration;

use common::*;
use runtime_core::{Artifacts, Base, Chain, Outcome, OutcomeReason};

/// One filesystem step of a [`script`] guest.
enum Op<'a> {
    /// `path_create_directory`.
    Mkdir(&'a str),
    /// Create (`O_EXCL` when `excl`, else truncate) and write `data`.
    Write(&'a str, &'a [u8], bool),
    /// Copy the file to stdout.
    Cat(&'a str),
    /// `path_symlink(target, link)`.
    Symlink(&'a str, &'a str),
    /// `path_link(existing, new)`: a hard link.
    Link(&'a str, &'a str),
}

/// A guest that runs `ops` in order under fd 3 and exits 0, or `100 + i` when op `i` fails.
fn script(ops: &[Op<'_>]) -> Vec<u8> {
    let mut data = String::new();
    let mut body = String::new();
    let mut at = 1024usize;
    let mut put = |bytes: &[u8], data: &mut String| -> (usize, usize) {
        let start = at;
        data.push_str(&format!(
            "(data (i32.const {start}) \"{}\")\n",
            wat_string(bytes)
        ));
        at += bytes.len().max(1);
        (start, bytes.len())
    };
    for (i, op) in ops.iter().enumerate() {
        let fail = 100 + i;
        let check = format!("(if (local.get $err) (then (call $proc_exit (i32.const {fail}))))");
        match op {
            Op::Mkdir(path) => {
                let (p, n) = put(path.as_bytes(), &mut data);
                body.push_str(&format!(
                    "(local.set $err (call $mkdir (i32.const 3) (i32.const {p}) (i32.const {n}))) {check}\n"
                ));
            }
            Op::Write(path, bytes, excl) => {
                let (p, n) = put(path.as_bytes(), &mut data);
                let (d, dn) = put(bytes, &mut data);
                let oflags = if *excl { 1 | 4 } else { 1 | 8 };
                body.push_str(&format!(
                    "(local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const {p}) (i32.const {n})
                       (i32.const {oflags}) (i64.const 0x1fffffff) (i64.const 0) (i32.const 0) (i32.const 16))) {check}
                     (i32.store (i32.const 0) (i32.const {d})) (i32.store (i32.const 4) (i32.const {dn}))
                     (local.set $err (call $fd_write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8))) {check}
                     (drop (call $fd_close (i32.load (i32.const 16))))\n"
                ));
            }
            Op::Cat(path) => {
                let (p, n) = put(path.as_bytes(), &mut data);
                body.push_str(&format!(
                    "(local.set $err (call $path_open (i32.const 3) (i32.const 1) (i32.const {p}) (i32.const {n})
                       (i32.const 0) (i64.const 0x1fffffff) (i64.const 0) (i32.const 0) (i32.const 16))) {check}
                     (i32.store (i32.const 0) (i32.const 8192)) (i32.store (i32.const 4) (i32.const 4096))
                     (local.set $err (call $fd_read (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8))) {check}
                     (i32.store (i32.const 4) (i32.load (i32.const 8)))
                     (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                     (drop (call $fd_close (i32.load (i32.const 16))))\n"
                ));
            }
            Op::Symlink(target, link) => {
                let (t, tn) = put(target.as_bytes(), &mut data);
                let (l, ln) = put(link.as_bytes(), &mut data);
                body.push_str(&format!(
                    "(local.set $err (call $symlink (i32.const {t}) (i32.const {tn}) (i32.const 3) (i32.const {l}) (i32.const {ln}))) {check}\n"
                ));
            }
            Op::Link(existing, new) => {
                let (e, en) = put(existing.as_bytes(), &mut data);
                let (n, nn) = put(new.as_bytes(), &mut data);
                body.push_str(&format!(
                    "(local.set $err (call $link (i32.const 3) (i32.const 0) (i32.const {e}) (i32.const {en}) (i32.const 3) (i32.const {n}) (i32.const {nn}))) {check}\n"
                ));
            }
        }
    }
    wat(&format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_link" (func $link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  {data}
  (func (export "_start") (local $err i32)
    {body}))
"#
    ))
}

/// Waits (a little) until no job file is left under `scratch`: a kept directory is removed on a
/// blocking thread once its last base is dropped.
async fn eventually_no_job_files(scratch: &std::path::Path) {
    for _ in 0..100 {
        if std::panic::catch_unwind(|| assert_no_job_files(scratch)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_no_job_files(scratch);
}

/// The job directory under `scratch` that holds `marker`.
fn kept_dir(scratch: &std::path::Path, marker: &str) -> std::path::PathBuf {
    for pool in std::fs::read_dir(scratch).unwrap() {
        for dir in std::fs::read_dir(pool.unwrap().path()).unwrap() {
            let dir = dir.unwrap().path();
            if dir.join(marker).exists() {
                return dir;
            }
        }
    }
    panic!(
        "no job directory under {} holds {marker}",
        scratch.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_start_from_the_build_and_never_see_each_other() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    for disk_bytes in [None, Some(1 << 20)] {
        let build = store.add(script(&[
            Op::Mkdir("out"),
            Op::Write("out/built.txt", b"built by the build", true),
            Op::Symlink("out/built.txt", "latest"),
        ]));
        let mut req = request(&build);
        req.limits.disk_bytes = disk_bytes;
        req.chain = Chain {
            base: None,
            keep: true,
        };
        let done = run(&backend, req).await;
        assert_eq!(done.report.outcome, Outcome::exited(0));
        let base = done.report.kept.expect("a kept run returns its base");
        assert_eq!(base.backend(), "wasm");

        // Each case reads the build's file (and through its symlink), then creates `case.txt`
        // with O_EXCL: the second case fails if it sees the first one's write.
        let case = store.add(script(&[
            Op::Cat("out/built.txt"),
            Op::Cat("latest"),
            Op::Write("case.txt", b"mine", true),
            Op::Write("out/built.txt", b"changed by a case", false),
        ]));
        let mut compiled = vec![];
        for _ in 0..2 {
            let mut req = request(&case);
            req.limits.disk_bytes = disk_bytes;
            req.chain = Chain {
                base: Some(base.clone()),
                keep: false,
            };
            let done = run(&backend, req).await;
            assert_eq!(done.report.outcome, Outcome::exited(0), "{disk_bytes:?}");
            assert_eq!(done.stdout, b"built by the buildbuilt by the build");
            assert!(done.report.kept.is_none());
            compiled.push(backend.compiled_modules());
        }
        // The module was compiled (at most) for the first case; the second instantiated the
        // compiled module again.
        assert_eq!(compiled[0], compiled[1]);

        // Input files are written after the base's files: they win.
        let mut req = request(&case);
        req.limits.disk_bytes = disk_bytes;
        req.files = vec![file("out/built.txt", b"from the input")];
        req.chain.base = Some(base.clone());
        let done = run(&backend, req).await;
        assert_eq!(done.report.outcome, Outcome::exited(0));
        assert_eq!(done.stdout, b"from the inputfrom the input");

        // The base lives until its last clone is dropped, then nothing is left.
        drop(base);
        eventually_no_job_files(scratch.path()).await;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(scratch.path().to_str().unwrap()),
        "a kept tmpfs is still mounted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_that_does_not_fit_or_is_not_wasm_is_a_spec_error() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    let big = vec![b'x'; 3000];
    let build = store.add(script(&[Op::Write("big", &big, true)]));
    let mut req = request(&build);
    req.chain.keep = true;
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    let base = done.report.kept.unwrap();

    let hello = store.add(wat(HELLO));
    let mut req = request(&hello);
    req.limits.disk_bytes = Some(2000);
    req.chain.base = Some(base.clone());
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::SpecError);
    let detail = done.report.outcome.detail.unwrap();
    assert!(detail.contains("disk_bytes"), "{detail}");

    let mut req = request(&hello);
    req.chain.base = Some(Base::new("container", 7u32));
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::SpecError);
    let detail = done.report.outcome.detail.unwrap();
    assert!(detail.contains("container backend"), "{detail}");

    drop(base);
    eventually_no_job_files(scratch.path()).await;
}

/// A symlink the build made cannot make the host write an input file outside the case's
/// directory: the input file replaces the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_files_never_follow_a_bases_symlink() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    let host = tempfile::tempdir().unwrap();
    let build = store.add(script(&[Op::Write("marker", b"", true)]));
    let mut req = request(&build);
    req.chain.keep = true;
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    let base = done.report.kept.unwrap();
    // A guest cannot make a symlink with an absolute target (cap-std refuses it): the test
    // plants them in the kept directory from the host side.
    let kept = kept_dir(scratch.path(), "marker");
    std::os::unix::fs::symlink(host.path(), kept.join("d")).unwrap();
    std::os::unix::fs::symlink(host.path().join("f"), kept.join("f")).unwrap();

    let case = store.add(script(&[Op::Cat("d/x"), Op::Cat("f")]));
    let mut req = request(&case);
    req.files = vec![file("d/x", b"in d;"), file("f", b"in f")];
    req.chain.base = Some(base.clone());
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    assert_eq!(done.stdout, b"in d;in f");
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
    drop(base);
    eventually_no_job_files(scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_the_jobs_own_regular_files_within_the_caps() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    let digest = store.add(script(&[
        Op::Write("a.txt", b"alpha", true),
        Op::Mkdir("reports"),
        Op::Write("reports/r1.xml", b"<r1/>", true),
        Op::Write("reports/r2.xml", b"<testsuite/>", true),
        Op::Symlink("../../../../etc/passwd", "leak.txt"),
        Op::Symlink("a.txt", "inside.txt"),
        // A hard link to the input file: neither name is collected.
        Op::Link("given.txt", "hl.txt"),
    ]));
    for disk_bytes in [None, Some(1 << 20)] {
        let mut req = request(&digest);
        req.limits.disk_bytes = disk_bytes;
        req.files = vec![file("given.txt", b"from the job's submitter")];
        req.artifacts = Artifacts {
            patterns: vec!["*.txt".into(), "/reports/**".into()],
            max_file_bytes: 10,
            max_total_bytes: 1 << 20,
            max_files: 100,
        };
        let done = run(&backend, req).await;
        assert_eq!(done.report.outcome, Outcome::exited(0));
        let got: Vec<(&str, &[u8], u64, bool)> = done
            .report
            .artifacts
            .files
            .iter()
            .map(|a| (a.path.as_str(), a.data.as_slice(), a.size, a.truncated))
            .collect();
        assert_eq!(
            got,
            [
                ("/reports/r1.xml", &b"<r1/>"[..], 5, false),
                ("/reports/r2.xml", &b"<testsuite"[..], 12, true),
                ("a.txt", &b"alpha"[..], 5, false),
            ]
        );
        let skipped: Vec<(&str, bool)> = done
            .report
            .artifacts
            .skipped
            .iter()
            .map(|s| {
                (
                    s.path.as_str(),
                    s.reason.contains("hard link") || s.reason.contains("symlink"),
                )
            })
            .collect();
        assert_eq!(
            skipped,
            [
                ("given.txt", true),
                ("hl.txt", true),
                ("inside.txt", true),
                ("leak.txt", true)
            ]
        );
        // The directory is gone after the collection.
        assert_no_job_files(scratch.path());
    }
}
