//! The epoch ticker thread lives exactly as long as its backend. (Alone in its own test binary so
//! no other test's backends are counted.)

mod common;

use std::time::{Duration, Instant};

use common::*;

fn ticker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "wasm-epoch")
        .count()
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !condition() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticker_thread_stops_when_the_backend_is_dropped() {
    assert_eq!(ticker_threads(), 0);
    let store = MapStore::new();
    let (backend, _dir) = backend(store.clone());
    // The thread names itself as it starts.
    wait_for(|| ticker_threads() == 1).await;
    assert_eq!(ticker_threads(), 1);

    // An effectively unlimited wall time must not overflow any deadline arithmetic.
    let digest = store.add(wat(HELLO));
    let mut req = request(&digest);
    req.limits.wall_time = Duration::MAX;
    let done = run(&backend, req).await;
    assert!(
        done.report.outcome.is_success(),
        "{:?}",
        done.report.outcome
    );

    drop(backend);
    wait_for(|| ticker_threads() == 0).await;
    assert_eq!(ticker_threads(), 0);
}
