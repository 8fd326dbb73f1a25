//! Fan-out of PostgreSQL notifications to this API process's SSE clients. One LISTEN connection
//! per process; each job being watched has a `watch` channel that is bumped whenever its logs or
//! state change. Notifications are hints: streams also re-check on a timer, and after a reconnect
//! every watcher is woken (notifications sent while disconnected are lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::parse_ids;
use crate::store::{CHANNEL_LOGS, CHANNEL_STATE};

#[derive(Default)]
struct Inner {
    jobs: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
    /// Bumped on every state change of any job (batch streams watch this).
    any_state: watch::Sender<u64>,
}

/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A subscription to one job's changes; unsubscribes on drop.
pub struct JobWatch {
    hub: Hub,
    id: Uuid,
    pub rx: watch::Receiver<u64>,
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut jobs = self
            .hub
            .inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = jobs.get(&self.id) {
            // Our own receiver is still alive here: 1 means nobody else watches.
            if tx.receiver_count() <= 1 {
                jobs.remove(&self.id);
            }
        }
    }
}

impl Hub {
    pub fn watch_job(&self, id: Uuid) -> JobWatch {
        let mut jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let rx = jobs
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        JobWatch {
            hub: self.clone(),
            id,
            rx,
        }
    }

    pub fn watch_any_state(&self) -> watch::Receiver<u64> {
        self.inner.any_state.subscribe()
    }

    fn bump(&self, id: Uuid) {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = jobs.get(&id) {
            tx.send_modify(|v| *v += 1);
        }
    }

    fn bump_all(&self) {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for tx in jobs.values() {
            tx.send_modify(|v| *v += 1);
        }
        self.inner.any_state.send_modify(|v| *v += 1);
    }

    /// Holds the LISTEN connection until `stop` fires, reconnecting as needed.
    pub async fn run(self, pool: PgPool, stop: CancellationToken) {
        loop {
            let listener = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen_all([CHANNEL_LOGS, CHANNEL_STATE]).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "log LISTEN connection failed; streams poll meanwhile");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
                }
            };
            self.bump_all();
            loop {
                let n =
                    tokio::select! { _ = stop.cancelled() => return, n = listener.try_recv() => n };
                match n {
                    Ok(Some(n)) => {
                        for id in parse_ids(n.payload()) {
                            self.bump(id);
                        }
                        if n.channel() == CHANNEL_STATE {
                            self.inner.any_state.send_modify(|v| *v += 1);
                        }
                    }
                    Ok(None) => self.bump_all(),
                    Err(e) => {
                        tracing::warn!(error = %e, "log LISTEN connection failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_removed_when_the_last_one_leaves() {
        let hub = Hub::default();
        let id = Uuid::now_v7();
        let a = hub.watch_job(id);
        let b = hub.watch_job(id);
        hub.bump(id);
        assert!(a.rx.has_changed().unwrap());
        drop(a);
        assert_eq!(hub.inner.jobs.lock().unwrap().len(), 1);
        drop(b);
        assert!(hub.inner.jobs.lock().unwrap().is_empty());
    }
}
