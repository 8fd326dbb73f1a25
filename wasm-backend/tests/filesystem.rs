//! The job's filesystem as WASI programs expect it: one read-write preopen at `/` (fd 3) holding
//! the job's files, gone after the job, and closed to the host (`..`, absolute paths, symlinks).
//! The cap at `limits.disk_bytes` (a tmpfs, which needs root to mount) is `filesystem_root.rs`'s.

mod common;

use common::*;
use runtime_core::{Outcome, OutcomeReason};

/// Prints the name of preopen fd 3 and exits with the errno of `fd_prestat_get(4)`.
const PRESTATS: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (call $prestat (i32.const 3) (i32.const 100)) (then (call $proc_exit (i32.const 99))))
    (if (call $name (i32.const 3) (i32.const 1024) (i32.load (i32.const 104)))
      (then (call $proc_exit (i32.const 98))))
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.load (i32.const 104)))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (call $proc_exit (call $prestat (i32.const 4) (i32.const 100)))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_preopen_at_root_with_or_without_files() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    let digest = store.add(wat(PRESTATS));
    for files in [vec![], vec![file("a/b", b"x")]] {
        let mut req = request(&digest);
        req.files = files;
        let done = run(&backend, req).await;
        // fd 3 is "/", and there is no fd 4 (EBADF = 8).
        assert_eq!(done.report.outcome, Outcome::exited(8));
        assert_eq!(done.stdout, b"/");
    }
    assert_no_job_files(scratch.path());
}

/// Exits with the errno of `fd_fdstat_get(3)`: 0 when descriptor 3 is open, 8 (EBADF) when not.
/// It imports neither `fd_prestat_get` nor a `path_*` function.
const FD3: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $proc_exit (call $fdstat (i32.const 3) (i32.const 64)))))
"#;

/// A module that can neither find a preopen nor open a path gets none — unless the job has
/// files (or asks for a layout): WASI runtimes given no `--dir` behave the same, and programs
/// that test for a closed descriptor 3 (the wasi-testsuite's `sock_shutdown-invalid_fd`) pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_cannot_use_a_preopen_gets_none_without_files() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    let digest = store.add(wat(FD3));
    let done = run(&backend, request(&digest)).await;
    assert_eq!(done.report.outcome, Outcome::exited(8), "{done:?}");
    let mut req = request(&digest);
    req.files = vec![file("a", b"x")];
    assert_eq!(run(&backend, req).await.report.outcome, Outcome::exited(0));
    let mut req = request(&digest);
    req.wasm.preopens = Some(vec![runtime_core::Preopen {
        guest: "/data".into(),
        dir: "d".into(),
        read_only: true,
    }]);
    assert_eq!(run(&backend, req).await.report.outcome, Outcome::exited(0));
    assert_no_job_files(scratch.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_write_their_directory_and_nothing_outlives_the_job() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    // O_EXCL: a file left by an earlier job would make the second run fail with EEXIST.
    let digest = store.add(writer("out/new.bin", 4, true));
    for _ in 0..2 {
        let mut req = request(&digest);
        req.files = vec![file("out/.keep", b"")];
        let done = run(&backend, req).await;
        assert_eq!(done.report.outcome, Outcome::exited(0));
        assert_no_job_files(scratch.path());
    }
    // Input files are writable too (truncate and rewrite).
    let digest = store.add(writer("given.txt", 1, false));
    let mut req = request(&digest);
    req.files = vec![file("given.txt", b"old")];
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    assert_hello_works(&backend, &store).await;
}

/// `path_symlink({target}, 3, "link")`, then opens `{open}` under fd 3 and prints it; exits 0 when
/// it could read, 20 + errno when the open failed, 10 + errno when creating the link failed.
fn symlink_then_cat(target: &str, open: &str) -> Vec<u8> {
    wat(&format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "link")
  (data (i32.const 400) "{target}")
  (data (i32.const 600) "{open}")
  (func (export "_start") (local $err i32) (local $fd i32)
    (local.set $err (call $symlink (i32.const 400) (i32.const {tlen}) (i32.const 3) (i32.const 300) (i32.const 4)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 10) (local.get $err)))))
    (local.set $err (call $path_open (i32.const 3) (i32.const 1) (i32.const 600) (i32.const {olen})
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 2000)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 20) (local.get $err)))))
    (local.set $fd (i32.load (i32.const 2000)))
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))))
"#,
        tlen = target.len(),
        olen = open.len()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_dotdot_cannot_reach_the_host() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("secret"), b"host secret").unwrap();
    let host_secret = secret.path().join("secret");
    let host_secret = host_secret.to_str().unwrap();
    let host_dir = secret.path().to_str().unwrap();

    // A link inside the job's directory that works, as a control.
    let digest = store.add(symlink_then_cat("in.txt", "link"));
    let mut req = request(&digest);
    req.files = vec![file("in.txt", b"inside")];
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    assert_eq!(done.stdout, b"inside");

    for (target, open) in [
        (host_secret, "link"),
        (host_dir, "link/secret"),
        ("/etc/passwd", "link"),
        ("../../../../../../etc/passwd", "link"),
        ("..", "link/etc/passwd"),
    ] {
        let digest = store.add(symlink_then_cat(target, open));
        let done = run(&backend, request(&digest)).await;
        let outcome = &done.report.outcome;
        assert_eq!(
            outcome.reason,
            OutcomeReason::Exited,
            "{target}: {outcome:?}"
        );
        assert_ne!(
            outcome.exit_code,
            Some(0),
            "{target} -> {open}: the host file was read: {:?}",
            String::from_utf8_lossy(&done.stdout)
        );
        assert!(done.stdout.is_empty(), "{target}: leaked {:?}", done.stdout);
    }
    // `..` out of the preopen is refused.
    let digest = store.add(writer("../escaped", 1, true));
    let done = run(&backend, request(&digest)).await;
    assert_ne!(done.report.outcome, Outcome::exited(0));
    assert!(!scratch.path().join("escaped").exists());
    assert_hello_works(&backend, &store).await;
}
