//! Fresh network namespaces for `network: none` jobs, made ahead of time.
//!
//! A new network namespace is one of the dearest things a container start asks of the kernel
//! (every per-namespace subsystem — IPv4, IPv6, netfilter, the sysctl tables — initialises its
//! part), and a job without networking still needs one: its own loopback and nothing else.
//! Instead of P2 creating it with `unshare(CLONE_NEWNET)` on the job's path, a thread of the
//! backend keeps a few ready — `lo` up and, for rootless backends,
//! `net.ipv4.ip_unprivileged_port_start = 0` already written — and a job takes one; P2 joins it
//! with `setns` (the path bridge jobs already take). When the pool is empty (a burst), P2 makes
//! the namespace itself, as before.
//!
//! Isolation is unchanged: a namespace is handed out once and never comes back (the job's P2
//! holds its only descriptor; it dies with the job), it holds nothing but `lo`, and it is owned
//! by the host's user namespace like the one P2 would have made.
//!
//! The thread makes each namespace by `unshare(CLONE_NEWNET)` of itself, keeps a descriptor,
//! and goes back to its own namespace with `setns` — so it never holds a job's namespace alive.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::errno::Errno;

/// The namespaces ready for jobs, and the thread that refills them.
pub(crate) struct NetnsPool {
    inner: Arc<Inner>,
}

struct Inner {
    want: usize,
    rootless: bool,
    state: Mutex<State>,
    cond: Condvar,
}

#[derive(Default)]
struct State {
    ready: Vec<OwnedFd>,
    closed: bool,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl NetnsPool {
    /// Starts the refill thread keeping `want` namespaces ready (`None` for 0: jobs make their
    /// own). `rootless`: the namespaces get `ip_unprivileged_port_start = 0` (what P2 writes
    /// for a job in a user namespace).
    pub fn start(want: usize, rootless: bool) -> Result<Option<Self>, String> {
        if want == 0 {
            return Ok(None);
        }
        let inner = Arc::new(Inner {
            want,
            rootless,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        });
        let home = thread_netns()
            .map_err(|e| format!("opening this thread's network namespace: {}", e.desc()))?;
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("nekton-netns".into())
            .spawn(move || refill(&worker, &home))
            .map_err(|e| format!("starting the network namespace thread: {e}"))?;
        Ok(Some(Self { inner }))
    }

    /// A fresh namespace, if one is ready (the thread then makes another).
    pub fn take(&self) -> Option<OwnedFd> {
        let fd = self.inner.lock().ready.pop();
        self.inner.cond.notify_one();
        fd
    }

    /// How many are ready now (tests).
    #[cfg(test)]
    fn ready(&self) -> usize {
        self.inner.lock().ready.len()
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.closed = true;
        state.ready.clear();
        drop(state);
        self.inner.cond.notify_all();
    }
}

/// The pause after `failures` failures in a row: 1 s, doubling, at most a minute (a host that
/// cannot make namespaces at all — where jobs cannot run either — gets one warning a minute, not
/// one a second).
pub(crate) fn retry_after(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The refill loop: makes namespaces while fewer than `want` are ready, sleeps otherwise; ends
/// when the pool is dropped. A failure is logged and retried after a growing pause
/// ([`retry_after`]; jobs meanwhile make their own namespaces).
fn refill(inner: &Inner, home: &OwnedFd) {
    let mut failures = 0u32;
    loop {
        {
            let mut state = inner.lock();
            while !state.closed && state.ready.len() >= inner.want {
                state = inner.cond.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.closed {
                return;
            }
        }
        match prepare(home, inner.rootless) {
            Ok(fd) => {
                if failures > 0 {
                    tracing::info!(failures, "network namespaces for jobs are made again");
                    failures = 0;
                }
                let mut state = inner.lock();
                if state.closed {
                    return;
                }
                state.ready.push(fd);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = retry_after(failures);
                tracing::warn!(error = %e, failures, retry_in = ?pause,
                    "cannot prepare a network namespace for jobs; they make their own meanwhile");
                // Woken early only by the pool's drop.
                let state = inner.lock();
                if state.closed {
                    return;
                }
                let (state, _) = inner
                    .cond
                    .wait_timeout_while(state, pause, |s| !s.closed)
                    .unwrap_or_else(|p| p.into_inner());
                if state.closed {
                    return;
                }
            }
        }
    }
}

/// A descriptor of the calling thread's network namespace (a thread's is its own: `unshare` and
/// `setns` of `CLONE_NEWNET` change only the calling thread's).
pub(crate) fn thread_netns() -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        "/proc/thread-self/ns/net",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// One namespace: made by this thread, `lo` up (and the rootless sysctl), then this thread goes
/// back `home`. If it cannot go back, the error says so and the next call starts from
/// wherever it is (every namespace it makes is new either way).
fn prepare(home: &OwnedFd, rootless: bool) -> Result<OwnedFd, String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {}", e.desc()))?;
    let made = (|| {
        let fd = thread_netns()
            .map_err(|e| format!("opening the new network namespace: {}", e.desc()))?;
        super::spawn::loopback_up()
            .map_err(|e| format!("bringing up its loopback interface: {}", e.desc()))?;
        if rootless {
            // The sysctl file is the current thread's namespace's: this new one.
            super::spawn::write_file(c"/proc/sys/net/ipv4/ip_unprivileged_port_start", b"0")
                .map_err(|e| {
                    format!(
                        "setting net.ipv4.ip_unprivileged_port_start=0 in it: {}",
                        e.desc()
                    )
                })?;
        }
        Ok(fd)
    })();
    // SAFETY: setns of this thread with a descriptor it holds.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "going back to the worker's network namespace: {}",
            Errno::last().desc()
        ));
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Instant;

    #[test]
    fn retries_back_off_to_a_minute() {
        let pauses: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_after(u32::MAX), Duration::from_secs(60));
    }

    fn inode(fd: impl AsFd) -> u64 {
        nix::sys::stat::fstat(fd.as_fd()).expect("fstat").st_ino
    }

    fn wait_ready(pool: &NetnsPool, n: usize) {
        let start = Instant::now();
        while pool.ready() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the pool never had {n} namespaces ready"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn zero_means_no_pool() {
        assert!(NetnsPool::start(0, false).expect("start").is_none());
    }

    /// Root tier: namespaces are new, distinct, never the worker's, `lo` works in them, the
    /// rootless sysctl is set only for rootless pools, and the pool refills after a take.
    #[test]
    #[cfg_attr(
        not(feature = "root-tests"),
        ignore = "root tier: makes network namespaces; run with --features root-tests as root (scripts/test.sh does)"
    )]
    fn hands_out_fresh_prepared_namespaces() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "hands_out_fresh_prepared_namespaces needs root (CAP_SYS_ADMIN for network namespaces)"
        );
        for rootless in [false, true] {
            let pool = NetnsPool::start(2, rootless)
                .expect("start")
                .expect("a pool");
            wait_ready(&pool, 2);
            let mine = std::fs::metadata("/proc/thread-self/ns/net").expect("own netns");
            let a = pool.take().expect("a namespace");
            let b = pool.take().expect("another namespace");
            assert_ne!(inode(&a), inode(&b), "two jobs got the same namespace");
            assert_ne!(inode(&a), std::os::unix::fs::MetadataExt::ino(&mine));
            wait_ready(&pool, 2); // refilled
            // Look inside `a` from a thread of our own: a datagram to itself over `lo`.
            let (echo, port) = std::thread::scope(|s| {
                s.spawn(|| {
                    nix::sched::setns(&a, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                    let echo = (|| -> std::io::Result<Vec<u8>> {
                        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
                        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
                        sock.send_to(b"ping", sock.local_addr()?)?;
                        let mut buf = [0u8; 8];
                        let n = sock.recv(&mut buf)?;
                        Ok(buf[..n].to_vec())
                    })();
                    let port =
                        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                            .expect("read the sysctl");
                    (echo, port.trim().to_string())
                })
                .join()
                .expect("thread")
            });
            assert_eq!(
                echo.expect("loopback is not usable in a pooled namespace"),
                b"ping"
            );
            if rootless {
                assert_eq!(port, "0", "rootless pool: ip_unprivileged_port_start");
            } else {
                assert_eq!(port, "1024", "a rootful pool must leave the sysctl alone");
            }
        }
    }
}
