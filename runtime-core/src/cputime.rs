//! CPU time of in-process work, measured per poll.
//!
//! An in-process backend (Wasm) runs a job as a future that may move between runtime threads. The
//! [`Metered`] wrapper reads the current thread's CPU clock (`getrusage(RUSAGE_THREAD)`) around
//! every poll and adds up the difference, so the bill holds the CPU the job itself used, user and
//! system separately, and not the time it spent waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// CPU time accumulated by a [`Metered`] future; readable while the future runs.
#[derive(Debug, Default)]
pub struct CpuMeter {
    user_us: AtomicU64,
    system_us: AtomicU64,
}

impl CpuMeter {
    pub fn user(&self) -> Duration {
        Duration::from_micros(self.user_us.load(Ordering::Relaxed))
    }

    pub fn system(&self) -> Duration {
        Duration::from_micros(self.system_us.load(Ordering::Relaxed))
    }
}

fn thread_times_us() -> (u64, u64) {
    // SAFETY: `getrusage` writes into the zeroed struct we pass and reads nothing else;
    // RUSAGE_THREAD is valid on Linux.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut usage) != 0 {
            return (0, 0);
        }
        usage
    };
    let us = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
    (us(usage.ru_utime), us(usage.ru_stime))
}

/// A future whose CPU time, across every poll on whatever thread, is added to a [`CpuMeter`].
pub struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<CpuMeter>,
}

impl<F> Metered<F> {
    pub fn new(inner: F, meter: Arc<CpuMeter>) -> Self {
        Self {
            inner: Box::pin(inner),
            meter,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let (u0, s0) = thread_times_us();
        let out = self.inner.as_mut().poll(cx);
        let (u1, s1) = thread_times_us();
        self.meter
            .user_us
            .fetch_add(u1.saturating_sub(u0), Ordering::Relaxed);
        self.meter
            .system_us
            .fetch_add(s1.saturating_sub(s0), Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_busy_polls_and_not_sleeps() {
        let meter = Arc::new(CpuMeter::default());
        Metered::new(
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                // Spin until this thread has used 100 ms of CPU (however loaded the machine is).
                let (u0, s0) = thread_times_us();
                let mut x = 0u64;
                loop {
                    let (u, s) = thread_times_us();
                    if (u + s).saturating_sub(u0 + s0) >= 100_000 {
                        break;
                    }
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
            },
            meter.clone(),
        )
        .await;
        let cpu = meter.user() + meter.system();
        // The 100 ms of spinning is counted; the 200 ms sleep is not.
        assert!(cpu >= Duration::from_millis(100), "cpu {cpu:?}");
        assert!(cpu < Duration::from_millis(190), "cpu {cpu:?}");
    }
}
