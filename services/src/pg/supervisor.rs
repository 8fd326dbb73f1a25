//! Keeps the embedded PostgreSQL of `nekton serve` running: if the server process dies (a crash,
//! the OOM killer, an operator's `kill -9`), it is started again on the same data directory, with
//! backoff, and the log says so. The connection pool needs no help: it reconnects through the same
//! Unix socket once the server is back, and PostgreSQL's crash recovery replays the WAL, so every
//! committed job survives.
//!
//! Why restart rather than exit: `serve` is the one-command default, run by people who will not
//! watch it; a process that stays up but answers 503 forever helps nobody, and a process that exits
//! would take the worker's running jobs with it. With `--database-url` nekton does not own the
//! server and never restarts it.
//!
//! After a `kill -9` of the postmaster its backends exit on their own once they notice (within
//! about a second); until then a new postmaster refuses to start ("pre-existing shared memory block
//! is still in use"). The backoff (0.2 s doubling to 10 s) rides that out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{EmbeddedOptions, EmbeddedPostgres, PgError};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// The embedded server plus the task that restarts it. [`Supervisor::stop`] stops both.
pub struct Supervisor {
    server: Arc<Mutex<EmbeddedPostgres>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    restarts: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("restarts", &self.restarts())
            .finish()
    }
}

impl Supervisor {
    /// Starts the server in `root` (see [`EmbeddedPostgres::start`]) and watches it.
    pub async fn start(root: PathBuf, options: EmbeddedOptions) -> Result<Self, PgError> {
        let first = EmbeddedPostgres::start(&root, options.clone()).await?;
        Ok(Self::watch(first, root, options))
    }

    /// Watches a server that is already running.
    pub fn watch(server: EmbeddedPostgres, root: PathBuf, options: EmbeddedOptions) -> Self {
        let server = Arc::new(Mutex::new(server));
        let stop = CancellationToken::new();
        let restarts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = tokio::spawn(supervise(
            server.clone(),
            root,
            options,
            stop.clone(),
            restarts.clone(),
        ));
        Self {
            server,
            stop,
            task,
            restarts,
        }
    }

    /// How many times the server was restarted after dying.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current server's process id.
    pub async fn pid(&self) -> i32 {
        self.server.lock().await.pid()
    }

    /// Connection options for `database` (the socket does not move across restarts).
    pub async fn connect_options(&self, database: &str) -> sqlx::postgres::PgConnectOptions {
        self.server.lock().await.connect_options(database)
    }

    /// Creates `name` unless it exists.
    pub async fn create_database_if_missing(&self, name: &str) -> Result<(), PgError> {
        self.server
            .lock()
            .await
            .create_database_if_missing(name)
            .await
    }

    /// Stops watching, then stops the server (fast shutdown).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        match Arc::try_unwrap(self.server) {
            Ok(server) => server.into_inner().stop().await,
            Err(_) => tracing::error!("the embedded PostgreSQL is still shared; not stopped"),
        }
    }
}

async fn supervise(
    server: Arc<Mutex<EmbeddedPostgres>>,
    root: PathBuf,
    options: EmbeddedOptions,
    stop: CancellationToken,
    restarts: Arc<std::sync::atomic::AtomicU64>,
) {
    loop {
        // Wait for the server to die without holding the lock (pid() and the rest stay usable).
        let (pid, watcher) = {
            let guard = server.lock().await;
            (guard.pid(), guard.exit_watcher())
        };
        let how = tokio::select! {
            how = watcher => how,
            _ = stop.cancelled() => return,
        };
        tracing::error!(pid, status = %how,
            "the embedded PostgreSQL exited unexpectedly; restarting it (crash recovery keeps every committed job)");
        let mut delay = FIRST_RETRY;
        let mut tries = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
            tries += 1;
            match EmbeddedPostgres::start(&root, options.clone()).await {
                Ok(new) => {
                    tracing::warn!(
                        pid = new.pid(),
                        tries,
                        "the embedded PostgreSQL is running again"
                    );
                    restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    *server.lock().await = new;
                    break;
                }
                Err(e) => {
                    tracing::warn!(tries, retry_in = ?delay, error = %e,
                        "restarting the embedded PostgreSQL failed; retrying");
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        }
    }
}
