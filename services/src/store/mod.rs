//! The PostgreSQL side of nekton: migrations, the job records the API reads and writes
//! ([`jobs`]), the worker's queue operations ([`queue`]), log chunks ([`logs`]) and modules
//! ([`modules`]).
//!
//! Invariants (see shared/design/queue.md):
//! - The `jobs` row holds only the state machine; specs, leases, attempt results and log chunks
//!   live in their own tables.
//! - Every write a worker makes is fenced by `(job, attempt, worker, state = 'running')`.
//! - No transaction stays open while a job runs.
//! - NOTIFY carries wake-up hints (queue names, job ids), never data.

pub mod jobs;
pub mod logs;
pub mod modules;
pub mod queue;

use sqlx::PgPool;

/// The schema migrations, embedded from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies any pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// NOTIFY channel: a job became claimable; payload = queue name.
pub const CHANNEL_JOBS: &str = "nekton_jobs";
/// NOTIFY channel: log chunks were stored; payload = comma-separated job ids.
pub const CHANNEL_LOGS: &str = "nekton_logs";
/// NOTIFY channel: jobs changed state (started, finished); payload = comma-separated job ids.
pub const CHANNEL_STATE: &str = "nekton_state";
/// NOTIFY channel: a running job must be cancelled; payload = job id.
pub const CHANNEL_CANCEL: &str = "nekton_cancel";

/// Errors of the store. Database errors keep their source for the logs; the API maps them to 500
/// without sending internals to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
}
