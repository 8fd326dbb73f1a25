//! The job's directory capped at `limits.disk_bytes`: a tmpfs per job, which needs root to mount
//! (as the worker has). Root tier only (feature `root-tests`); `filesystem.rs` has the rest.

mod common;

use common::*;
use runtime_core::{Outcome, OutcomeReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_disk_bytes_fail_with_enospc_inside_the_guest() {
    let store = MapStore::new();
    let (backend, scratch, _cache) = scratch_backend(store.clone());
    // 2 MiB into a 1 MiB directory.
    let digest = store.add(writer("big", 512, true));
    let mut req = request(&digest);
    req.limits.disk_bytes = Some(1 << 20);
    let done = run(&backend, req).await;
    assert_eq!(
        done.report.outcome,
        Outcome::exited(WASI_ENOSPC),
        "the write past the cap must fail with ENOSPC (needs root to mount the tmpfs)"
    );
    // What the directory held at the end is in the bill: about the cap.
    let used = done
        .report
        .usage
        .disk_used_bytes
        .expect("a capped directory is measured");
    assert!((900 << 10..=1 << 20).contains(&used), "{used}");
    // Within the cap the same job succeeds, and its 2 MiB are billed.
    let mut req = request(&digest);
    req.limits.disk_bytes = Some(4 << 20);
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome, Outcome::exited(0));
    let used = done
        .report
        .usage
        .disk_used_bytes
        .expect("a capped directory is measured");
    assert!((2 << 20..3 << 20).contains(&used), "{used}");
    // Input files larger than the cap are the job's fault.
    let mut req = request(&digest);
    req.limits.disk_bytes = Some(1 << 20);
    req.files = vec![file("huge", &vec![7u8; 2 << 20])];
    let done = run(&backend, req).await;
    assert_eq!(done.report.outcome.reason, OutcomeReason::SpecError);
    assert!(
        done.report
            .outcome
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("disk_bytes")),
        "{:?}",
        done.report.outcome
    );
    assert_no_job_files(scratch.path());
    assert_hello_works(&backend, &store).await;
    drop(backend);
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(scratch.path().to_str().unwrap()),
        "a job's tmpfs is still mounted"
    );
}
