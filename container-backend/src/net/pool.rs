//! Fresh bridge attachments for `network: bridge` jobs, made ahead of time.
//!
//! Attaching a job to the bridge on its path costs a few milliseconds: a thread that makes the network
//! namespace, the veth pair, the port isolation and `eth0`'s address and route, each a netlink
//! round trip and most of them under the RTNL lock. A task on the network runtime keeps a few
//! attachments [prepared](Network::prepare) instead — everything but what depends on the job —
//! and a job takes one; only the job's own part stays on its path ([`Attachment::claim`]: the
//! egress policy of an allow-list, the counters its bill starts from; the task makes the next
//! attachment once that is done). When the pool is empty (a
//! burst), the job attaches as before.
//!
//! Isolation is unchanged: an attachment is made for one job, handed out once and released
//! after that job exactly like an on-path one ([`Attachment`]'s release: namespace dropped, veth
//! gone, policy removed, conntrack flushed, lease released). Nothing is ever reused across jobs.
//! A prepared attachment holds its address lease while it waits (the pool takes `want`
//! addresses of the subnet; a job that finds the subnet full takes a prepared one if any).
//!
//! The pool lives in the backend's `Shared`, next to the [`Network`] (which never refers to
//! the pool: the attachments hold an `Arc<Network>`). Dropping the pool stops the task and
//! releases the attachments that no job took, in the background like a job's.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use super::{Attachment, Network};

/// The longest a job that found the subnet full waits for the attachment being prepared.
const PREPARING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The prepared attachments and the task that refills them.
pub(crate) struct BridgePool {
    inner: Arc<Inner>,
}

struct Inner {
    want: usize,
    ready: Mutex<Ready>,
    /// Wakes the refill task (a take, or the pool's drop).
    wake: tokio::sync::Notify,
    /// What the task is doing, for [`BridgePool::settled`].
    status: tokio::sync::watch::Sender<Status>,
}

#[derive(Default)]
struct Ready {
    attachments: Vec<Attachment>,
    closed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Status {
    /// Preparing one now.
    busy: bool,
    /// The last preparation failed (the task waits, see `refill`).
    failing: bool,
    ready: usize,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ready> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
    }
}

impl BridgePool {
    /// Starts the refill task on the network's runtime, keeping `want` attachments ready
    /// (`None` for 0: every job attaches on its path). `rootless`: see [`Network::prepare`].
    pub fn start(net: &Arc<Network>, want: usize, rootless: bool) -> Option<Self> {
        if want == 0 {
            return None;
        }
        let inner = Arc::new(Inner {
            want,
            ready: Mutex::new(Ready::default()),
            wake: tokio::sync::Notify::new(),
            status: tokio::sync::watch::channel(Status::default()).0,
        });
        net.rt().spawn(refill(inner.clone(), net.clone(), rootless));
        Some(Self { inner })
    }

    /// A prepared attachment made the job's ([`Attachment::claim`]: `allow`'s egress policy, the
    /// counters' start), if one is ready; `None` when the pool is empty. The task makes the next
    /// one only after the claim: its netlink requests (a veth creation holds the RTNL lock for a
    /// while) would otherwise queue before the claim's, on the job's path.
    pub async fn claim(
        &self,
        allow: Option<&[runtime_core::egress::Destination]>,
    ) -> Option<Result<Attachment, String>> {
        let Some(att) = ({
            let mut ready = self.inner.lock();
            let att = ready.attachments.pop();
            let n = ready.attachments.len();
            self.inner.set_status(|s| s.ready = n);
            att
        }) else {
            // Empty: a task pausing after failures tries again now (a full subnet may have
            // freed up since).
            self.inner.wake.notify_one();
            return None;
        };
        let claimed = att.claim(allow, true).await;
        self.inner.wake.notify_one();
        Some(claimed)
    }

    /// [`claim`](Self::claim) for a job that found the subnet full: first waits (up to
    /// [`PREPARING_WAIT`]) for a preparation under way, which may hold the last free address.
    pub async fn claim_prepared_soon(
        &self,
        allow: Option<&[runtime_core::egress::Destination]>,
    ) -> Option<Result<Attachment, String>> {
        let mut rx = self.inner.status.subscribe();
        let _ = tokio::time::timeout(PREPARING_WAIT, rx.wait_for(|s| !s.busy)).await;
        self.claim(allow).await
    }

    /// Waits until the pool is full and the task idle (or its last preparation failed), and
    /// returns the addresses of the prepared attachments: what a settled network holds besides
    /// the jobs' (tests).
    pub async fn settled(&self) -> Vec<Ipv4Addr> {
        let want = self.inner.want;
        let mut rx = self.inner.status.subscribe();
        let _ = rx
            .wait_for(|s| !s.busy && (s.ready >= want || s.failing))
            .await;
        self.inner
            .lock()
            .attachments
            .iter()
            .map(|a| a.addr)
            .collect()
    }
}

impl Drop for BridgePool {
    fn drop(&mut self) {
        let unused = {
            let mut ready = self.inner.lock();
            ready.closed = true;
            std::mem::take(&mut ready.attachments)
        };
        self.inner.wake.notify_one();
        // Released in the background like a finished job's (namespace, veth, lease).
        drop(unused);
    }
}

/// The refill loop: prepares attachments while fewer than `want` are ready, sleeps otherwise;
/// ends when the pool is dropped (an attachment prepared meanwhile is released). After a
/// failure it waits 1 s, doubling up to a minute (the netns pool's
/// [`retry_after`](crate::netpool::retry_after)), or until a job takes an attachment (a full
/// subnet frees up as jobs end and start).
async fn refill(inner: Arc<Inner>, net: Arc<Network>, rootless: bool) {
    let mut failures = 0u32;
    loop {
        loop {
            {
                let ready = inner.lock();
                if ready.closed {
                    return;
                }
                if ready.attachments.len() < inner.want {
                    break;
                }
            }
            inner.wake.notified().await;
        }
        inner.set_status(|s| s.busy = true);
        match net.prepare(rootless, true).await {
            Ok(att) => {
                if failures > 0 {
                    tracing::info!(failures, "bridge attachments for jobs are prepared again");
                    failures = 0;
                }
                let mut ready = inner.lock();
                if ready.closed {
                    drop(ready);
                    drop(att);
                    return;
                }
                ready.attachments.push(att);
                let n = ready.attachments.len();
                inner.set_status(|s| {
                    *s = Status {
                        busy: false,
                        failing: false,
                        ready: n,
                    }
                });
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = crate::netpool::retry_after(failures);
                // Once per streak (a full subnet fails every retry until a job ends).
                if failures == 1 {
                    tracing::warn!(error = %e, "cannot prepare a bridge attachment for jobs; \
                        they attach on their own meanwhile (retrying)");
                } else {
                    tracing::debug!(error = %e, failures, retry_in = ?pause,
                        "cannot prepare a bridge attachment (again)");
                }
                inner.set_status(|s| {
                    s.busy = false;
                    s.failing = true;
                });
                // Woken early by the pool's drop, or by a job (it then tries again).
                let _ = tokio::time::timeout(pause, inner.wake.notified()).await;
            }
        }
    }
}
