//! The PostgreSQL side of nekton: migrations, the job records the API reads and writes
//! ([`jobs`]), the worker's queue operations ([`queue`]), log chunks ([`logs`]), artifacts
//! ([`artifacts`]), modules ([`modules`]) and the partitions of `log_chunks` ([`partitions`]).
//!
//! Invariants (the reasons are in docs/queue.md):
//! - The `jobs` row holds only the state machine (the lease included: `lease_expires_at`);
//!   specs, attempt results and log chunks live in their own tables.
//! - Every write a worker makes is fenced by `(job, attempt, worker, state = 'running')`.
//! - No transaction stays open while a job runs.
//! - NOTIFY carries wake-up hints (queue names, job ids, the state a completion moved a job to):
//!   everything it says is in the tables too, and a lost notification only delays a reader.

pub mod artifacts;
pub mod handoff;
pub mod hosts;
pub mod jobs;
pub mod logs;
pub mod modules;
pub mod partitions;
pub mod queue;
pub mod stats;
pub mod tenants;
pub mod webhooks;

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, Postgres};
use uuid::Uuid;

/// A connection one long-lived task keeps for its next statements instead of taking one from
/// the pool for each.
///
/// sqlx's pool hands out its idle connections oldest first, so a task that runs a statement now
/// and then lands each time on the connection idle longest, whose backend's caches the other
/// processes on the machine have had the most time to evict. A task that keeps its connection
/// runs on a warm backend (docs/queue.md, "The writer's own connection"). It is kept only while
/// it is busy and the pool can spare it: the task gives it back when it has had nothing to do
/// for [`Held::IDLE`], and a connection last used that long ago is not used again (the pool pings
/// a connection idle that long before handing it out; a kept one would skip that); one held for
/// [`Held::FOR`] goes back too, so the pool's own lifetime limit sees it; and after a statement
/// it goes back if the pool has no idle connection left and cannot open one
/// ([`Held::relieve`]). After any error it is dropped ([`Held::discard`]): a connection that a
/// restart or a failover broke is never used twice.
pub struct Held {
    pool: PgPool,
    conn: Option<Kept>,
}

struct Kept {
    conn: PoolConnection<Postgres>,
    taken: Instant,
    used: Instant,
}

impl Held {
    /// How long a connection may sit unused and still be kept: the pool pings a connection idle
    /// this long before handing it out (`server.rs`, `PING_IDLE_AFTER`, is this constant).
    pub const IDLE: Duration = Duration::from_secs(1);
    /// How long a connection is kept at most before it goes back to the pool.
    pub const FOR: Duration = Duration::from_secs(10);

    pub fn new(pool: PgPool) -> Self {
        Self { pool, conn: None }
    }

    /// The kept connection, or a new one from the pool if there is none or the kept one is due
    /// back ([`Self::IDLE`], [`Self::FOR`]).
    pub async fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.as_ref().is_some_and(|k| !k.fresh()) {
            self.conn = None;
        }
        let kept = match self.conn.take() {
            Some(kept) => self.conn.insert(kept),
            None => self.conn.insert(Kept::take(&self.pool).await?),
        };
        kept.used = Instant::now();
        Ok(&mut *kept.conn)
    }

    /// Gives the connection back to the pool: after a failed statement, the next one takes
    /// another.
    pub fn discard(&mut self) {
        self.conn = None;
    }

    /// Gives the connection back if the pool has none idle and cannot open another: some other
    /// task may be waiting for one. Called after each statement.
    pub fn relieve(&mut self) {
        if self.conn.is_some() && !spare(&self.pool) {
            self.conn = None;
        }
    }

    /// Whether a connection is kept now.
    pub fn is_kept(&self) -> bool {
        self.conn.is_some()
    }
}

/// Connections the API's handlers share, the most recently used first: a handler's statement
/// runs on a warm backend instead of the pool's coldest (sqlx's pool hands out its idle
/// connections oldest first; see [`Held`], which keeps one for one task).
///
/// A handler takes one with [`Warm::conn`] and, after its statements succeeded, gives it back
/// with [`Lent::done`]; dropped without that (an error, a cancelled request) it goes back to the
/// pool, which tests or closes it. At most [`Warm::KEEP`] connections are kept, each only while
/// the pool can spare it (an idle one left or room to open one), never one last used
/// [`Held::IDLE`] ago or taken [`Held::FOR`] ago; [`Warm::sweep`], run by [`Warm::spawn_sweeper`]
/// every 100 ms, gives back the ones idle that long, and all of them when the pool runs out or
/// is closing.
pub struct Warm {
    pool: PgPool,
    stack: std::sync::Mutex<Vec<Kept>>,
}

/// A connection lent by [`Warm::conn`].
pub struct Lent<'a> {
    warm: &'a Warm,
    kept: Kept,
}

impl Warm {
    /// Most connections kept at once: a handful of backends carry a light load; beyond that the
    /// handlers use the pool as it is.
    pub const KEEP: usize = 4;
    /// How often [`Warm::spawn_sweeper`]'s task sweeps.
    pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            stack: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The pool the connections come from.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The connection used last, or one from the pool.
    pub async fn conn(&self) -> Result<Lent<'_>, sqlx::Error> {
        let kept = {
            let mut stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
            // Stale ones are at the bottom: newer ones were pushed after them.
            std::iter::from_fn(|| stack.pop()).find(Kept::fresh)
        };
        let kept = match kept {
            Some(k) => k,
            None => Kept::take(&self.pool).await?,
        };
        Ok(Lent { warm: self, kept })
    }

    fn give(&self, mut kept: Kept) {
        kept.used = Instant::now();
        if !spare(&self.pool) || self.pool.is_closed() || !kept.fresh() {
            return;
        }
        let mut stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
        if stack.len() < Self::KEEP {
            stack.push(kept);
        }
    }

    /// Gives back the connections unused for [`Held::IDLE`]; all of them when the pool has no
    /// idle connection left and cannot open one (another task may be waiting for one) or once it
    /// is closing (its `close` waits for every connection).
    pub fn sweep(&self) {
        let keep = spare(&self.pool) && !self.pool.is_closed();
        let mut stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
        stack.retain(|k| keep && k.fresh());
    }

    /// How many connections are kept now.
    pub fn kept(&self) -> usize {
        self.stack.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A task that sweeps every [`Warm::SWEEP_EVERY`] while `warm` lives.
    pub fn spawn_sweeper(warm: &std::sync::Arc<Self>) {
        let weak = std::sync::Arc::downgrade(warm);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Self::SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(warm) = weak.upgrade() else { return };
                warm.sweep();
            }
        });
    }
}

impl Lent<'_> {
    /// Gives the connection back for the next handler: call it after the statements succeeded.
    pub fn done(self) {
        self.warm.give(self.kept);
    }
}

impl std::ops::Deref for Lent<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.kept.conn
    }
}

impl std::ops::DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.kept.conn
    }
}

/// Whether `pool` has an idle connection or room to open one: a kept connection may stay out of
/// it ([`Held::relieve`], [`Warm`]).
fn spare(pool: &PgPool) -> bool {
    pool.num_idle() > 0 || pool.size() < pool.options().get_max_connections()
}

impl Kept {
    /// A connection from `pool`, taken and used now.
    async fn take(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let conn = pool.acquire().await?;
        let now = Instant::now();
        Ok(Self {
            conn,
            taken: now,
            used: now,
        })
    }

    /// Whether it may still be used: unused for less than [`Held::IDLE`], taken less than
    /// [`Held::FOR`] ago.
    fn fresh(&self) -> bool {
        self.used.elapsed() < Held::IDLE && self.taken.elapsed() < Held::FOR
    }
}

/// The schema migrations, embedded from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies any pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    accept_comment_rewrites(pool).await?;
    MIGRATOR.run(pool).await
}

/// Migrations whose text changed after release in comments only, with the SHA-384 they had then.
/// sqlx refuses a database whose recorded checksum differs from the file's; for these versions
/// the recorded old checksum is replaced by the new one first (nothing else about them changed).
const COMMENT_ONLY_REWRITES: &[(i64, &str)] = &[(
    // 0001: its first line named a design page that lived outside the repository.
    1,
    "669df24ddc2434be27fbceed2f1a10f1450bf9309f1ccdc7392a69da1e50b85fa5dff816b6fb81dd1c63b2843f2b2212",
)];

async fn accept_comment_rewrites(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(());
    }
    for (version, old) in COMMENT_ONLY_REWRITES {
        let Some(current) = MIGRATOR.iter().find(|m| m.version == *version) else {
            continue;
        };
        sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = decode($3, 'hex')",
        )
        .bind(current.checksum.as_ref())
        .bind(version)
        .bind(old)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// NOTIFY channel: a job became claimable; payload = queue name, optionally followed by a space
/// and the id of the process that sent it ([`wake_payload`]).
pub const CHANNEL_JOBS: &str = "nekton_jobs";

/// The payload of a [`CHANNEL_JOBS`] NOTIFY sent by an API process: the queue, a space and the
/// process's `origin` id. A worker in the same process has already been woken directly (the
/// API pokes it after every stored job) and skips the notification ([`wake_origin`]): one claim
/// per lone job instead of two. Every other worker wakes as before (the payload is only a hint;
/// workers never read the queue from it).
pub fn wake_payload(queue: &str, origin: Uuid) -> String {
    format!("{queue} {origin}")
}

/// The origin a [`CHANNEL_JOBS`] payload names, if any (see [`wake_payload`]).
pub fn wake_origin(payload: &str) -> Option<Uuid> {
    payload.rsplit_once(' ')?.1.parse().ok()
}
/// NOTIFY channel: log chunks were stored; payload = comma-separated job ids.
pub const CHANNEL_LOGS: &str = "nekton_logs";
/// NOTIFY channel: jobs changed state (finished, retried, rescued, cancelled); payload =
/// comma-separated job ids, a completion's each preceded by the new state (`model::parse_states`).
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

impl StoreError {
    /// True when PostgreSQL refused the values a statement carried, so sending the same values
    /// again cannot succeed: a data exception (SQLSTATE class 22, e.g. a NUL in text, a number
    /// out of range, a payload too long), an integrity-constraint violation (23), a program
    /// limit (54, e.g. an index row too large), an exception raised by a trigger or function
    /// (P0), or values this side could not encode. Everything else (the database away, a
    /// connection lost, a lock or serialization conflict, a disk full, a schema not yet
    /// migrated) may pass on a later try.
    pub fn refused_values(&self) -> bool {
        match self {
            StoreError::Corrupt(_) => true,
            StoreError::Db(sqlx::Error::Encode(_)) => true,
            StoreError::Db(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
                ["22", "23", "54", "P0"]
                    .iter()
                    .any(|class| c.starts_with(class))
            }),
            StoreError::Db(_) => false,
        }
    }
}

/// The migration levels: the newest migration the database has applied (`None`: none yet) and
/// the newest this binary carries.
pub async fn migration_level(pool: &PgPool) -> Result<(Option<i64>, i64), StoreError> {
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    Ok((applied, known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_payload_names_its_queue_and_origin() {
        let origin = Uuid::now_v7();
        let payload = wake_payload("default", origin);
        assert!(payload.starts_with("default "), "{payload}");
        assert_eq!(wake_origin(&payload), Some(origin));
        // Bare queue names (older senders, the shutdown requeue) have no origin.
        assert_eq!(wake_origin("default"), None);
        assert_eq!(wake_origin("default not-a-uuid"), None);
    }

    /// A database migrated by a release whose 0001 had the old comment still migrates, and ends
    /// with the current checksum; an unknown checksum is still refused.
    #[tokio::test]
    async fn a_database_migrated_before_a_comment_rewrite_still_migrates() {
        let db = crate::testing::TestDb::new().await;
        migrate(&db.pool).await.expect("fresh database");
        let (version, old) = COMMENT_ONLY_REWRITES[0];
        sqlx::query("UPDATE _sqlx_migrations SET checksum = decode($1, 'hex') WHERE version = $2")
            .bind(old)
            .bind(version)
            .execute(&db.pool)
            .await
            .unwrap();
        migrate(&db.pool)
            .await
            .expect("a database with the old checksum migrates");
        let now: Vec<u8> =
            sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
                .bind(version)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let current = MIGRATOR.iter().find(|m| m.version == version).unwrap();
        assert_eq!(now, current.checksum.as_ref());
        assert_ne!(hex::encode(&now), old, "the file did change");

        sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = $1")
            .bind(version)
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(
            migrate(&db.pool).await.is_err(),
            "any other modification is still refused"
        );
    }
}
