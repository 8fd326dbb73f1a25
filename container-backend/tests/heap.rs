//! The container's init (P2) and job process (P3) run on the worker's memory until their
//! `execve` (vfork-style children, no copy of the worker): whatever they allocate there they must
//! free, on every path, or each job leaves it behind in the worker for good. This binary counts
//! the bytes allocated and freed by any process other than itself that runs on its memory — P2
//! and P3 — with a counting wrapper around glibc's malloc (`System`), and checks that jobs which
//! succeed, fail in the init's setup, and fail at the job's `execve` leave none.
//!
//! Its own binary: the wrapper is this process's allocator. It keeps the premise of
//! `protocol.rs`'s allocation rules (glibc malloc underneath, no per-thread state of its own:
//! two atomics and a `getpid`).

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI32, AtomicIsize, AtomicUsize, Ordering};

use container_support::*;
use runtime_core::OutcomeReason;

/// Counts what tasks other than this process (`getpid` differs: P2 is pid 1 of its namespace,
/// P3 pid 2) allocate and free on this process's memory; set once the test starts.
struct Counting;

static WORKER: AtomicI32 = AtomicI32::new(0);
/// Bytes the children allocated minus bytes they freed.
static CHILD_NET: AtomicIsize = AtomicIsize::new(0);
/// Allocations the children made (proof that the counting sees them).
static CHILD_ALLOCS: AtomicUsize = AtomicUsize::new(0);

fn in_child() -> bool {
    let worker = WORKER.load(Ordering::Relaxed);
    // SAFETY: getpid has no preconditions.
    worker != 0 && unsafe { libc::getpid() } != worker
}

// SAFETY: every call is passed on to `System` unchanged; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && in_child() {
            CHILD_NET.fetch_add(layout.size() as isize, Ordering::SeqCst);
            CHILD_ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_child() {
            CHILD_NET.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test(flavor = "multi_thread")]
async fn containers_leave_nothing_on_the_workers_heap() {
    let env = TestEnv::new();
    let img = env
        .busybox("heap", &[users_layer()], default_config())
        .await;
    // SAFETY: getpid has no preconditions.
    WORKER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    for _ in 0..10 {
        // Succeeds: input files, an environment, a working directory and a named user resolved
        // from the image (P2 builds P3's `execve` arrays and HOME from passwd).
        let mut r = sh(&img, "cat in/data; echo $JOB $HOME");
        r.files = vec![file("in/data", b"input\n", None)];
        r.env = vec![("JOB".into(), "x".into())];
        r.container.workdir = Some("/work".into());
        r.container.user = Some("app".into());
        let ran = run(&env, r).await;
        ran.assert_exited(0);
        assert_eq!(ran.out(), "input\nx /home/app\n");
        // Fails in P2's setup (an unknown user: the root filesystem's builder returns an error).
        let mut r = sh(&img, "true");
        r.container.user = Some("ghost".into());
        let ran = run(&env, r).await;
        assert_eq!(
            ran.report.outcome.reason,
            OutcomeReason::SpecError,
            "{ran:?}"
        );
        // Fails after P3's `execve` of the launcher (no such program).
        let ran = run(&env, request(&img, &["no-such-binary"])).await;
        assert_eq!(
            ran.report.outcome.reason,
            OutcomeReason::SpecError,
            "{ran:?}"
        );
    }
    WORKER.store(0, Ordering::SeqCst);
    let allocs = CHILD_ALLOCS.load(Ordering::SeqCst);
    assert!(
        allocs > 0,
        "no allocation by a container's setup was seen: the counting does not work"
    );
    assert_eq!(
        CHILD_NET.load(Ordering::SeqCst),
        0,
        "bytes the containers' setup processes left allocated on the worker's heap over 30 jobs \
         ({allocs} allocations)"
    );
}
