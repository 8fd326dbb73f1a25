//! Range partitions of `log_chunks` (migration 0012; docs/queue.md, "Log partitions").
//!
//! `log_chunks` is partitioned by RANGE on `job_id`. Job ids are UUIDv7, whose first 48 bits are
//! the submission time in Unix milliseconds, so one partition holds the output of the jobs
//! submitted in one period ([`period_for`] the retention: a day at the default week). Its bounds
//! are [`bound`] of the period's start and end: the UUID with those milliseconds in the first 48
//! bits and zeros elsewhere. Ids no range partition covers land in the DEFAULT partition
//! (`log_chunks_default`, which also holds the rows stored before 0012), so an insert never fails
//! for lack of a partition.
//!
//! Every worker, in its upkeep loop:
//! - [`ensure`]s the partitions of the current period and the next ones exist, and
//! - [`retire`]s partitions past retention: a partition whose whole id range is older than the
//!   retention horizon and that no job in `jobs` falls in any more (retention pruned them all) is
//!   dropped whole; one that still holds a job (scheduled far ahead, still running, or finished
//!   later than its period) stays, and only the output of its pruned jobs is deleted, row by row.
//!
//! Partition DDL from several workers is serialized by a transaction-scoped advisory lock, so
//! concurrent workers never fail each other; the wait for that lock and every DDL statement run
//! under a short `lock_timeout`, so a pass never queues the log readers and writers behind it for
//! long, nor waits long itself (it is retried at the next pass).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::StoreError;

/// The longest time range one partition covers: a day, the period at the default retention (a
/// week) and longer ones ([`period_for`]).
pub const PERIOD: Duration = Duration::from_secs(24 * 3600);

/// The partition period for a retention: the longest of 24, 12, 8, 6, 4, 3, 2 and 1 hours that is
/// at most a seventh of the retention (an hour at least). A pruned job's output stays until its
/// partition is dropped, up to a period after the job itself, so the space output takes beyond
/// the retention is at most about a seventh (a day at the default week) instead of a whole day
/// at a retention of an hour. Each of these divides a day, so partitions start on UTC hours and
/// days.
pub fn period_for(retention: Duration) -> Duration {
    const HOURS: [u64; 8] = [24, 12, 8, 6, 4, 3, 2, 1];
    let hours = HOURS
        .into_iter()
        .find(|h| Duration::from_secs(h * 3600 * 7) <= retention)
        .unwrap_or(1);
    Duration::from_secs(hours * 3600)
}

/// Periods after the current one whose partitions are created ahead of time: a worker that
/// misses a whole period still finds the next one's partition there.
pub const AHEAD: u32 = 2;

/// The partition that takes every id no range partition covers.
pub const DEFAULT_PARTITION: &str = "log_chunks_default";

/// How long a DDL statement waits for its locks before giving up until the next pass.
const LOCK_TIMEOUT: &str = "2s";

/// The autovacuum settings of `log_chunks` (migration 0011), given to every partition: storage
/// parameters cannot be set on a partitioned table itself.
const AUTOVACUUM: &str = "autovacuum_vacuum_scale_factor = 0.02, \
                          autovacuum_vacuum_insert_scale_factor = 0.05, \
                          autovacuum_analyze_scale_factor = 0.05";

/// Jobs whose output one sweep statement deletes (like `queue::prune`'s batches).
const SWEEP_BATCH: i64 = 1000;

/// One range partition of `log_chunks`: ids in `[lo, hi)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub lo: Uuid,
    pub hi: Uuid,
}

/// What [`retire`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retired {
    /// Partitions dropped whole.
    pub dropped: Vec<String>,
    /// Partitions past retention kept because a job still falls in their range.
    pub kept: Vec<String>,
    /// Chunks of pruned jobs deleted row by row from the kept partitions.
    pub swept_chunks: u64,
}

/// The lowest UUID whose first 48 bits are `ms` (a partition bound). Milliseconds beyond 48 bits
/// (the year 10889) are capped.
pub fn bound(ms: u64) -> Uuid {
    let ms = ms.min((1 << 48) - 1);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// The Unix milliseconds in the first 48 bits of `id` (a UUIDv7's time).
pub fn millis_of(id: Uuid) -> u64 {
    let b = id.as_bytes();
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The name of the partition starting at `lo_ms`: `log_chunks_YYYYMMDD_HHMMSS_mmm` (UTC).
pub fn partition_name(lo_ms: u64) -> String {
    let at = i64::try_from(lo_ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    format!("log_chunks_{}", at.format("%Y%m%d_%H%M%S_%3f"))
}

/// The range partitions of `log_chunks`, by their lower bound (the DEFAULT partition is not one).
pub async fn list(pool: &PgPool) -> Result<Vec<Partition>, StoreError> {
    list_on(&mut *pool.acquire().await?).await
}

async fn list_on(conn: &mut PgConnection) -> Result<Vec<Partition>, StoreError> {
    // A bound that is not a quoted UUID (MINVALUE / MAXVALUE, never created here) counts as
    // open-ended, so nothing overlapping is created and an open-ended partition is never dropped.
    let rows = sqlx::query(
        "SELECT c.relname::text AS name, \
             COALESCE(substring(pg_get_expr(c.relpartbound, c.oid) \
                 FROM $$FROM \\('([0-9a-f-]{36})'\\)$$)::uuid, \
                 '00000000-0000-0000-0000-000000000000') AS lo, \
             COALESCE(substring(pg_get_expr(c.relpartbound, c.oid) \
                 FROM $$TO \\('([0-9a-f-]{36})'\\)$$)::uuid, \
                 'ffffffff-ffff-ffff-ffff-ffffffffffff') AS hi \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'log_chunks'::regclass \
           AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' \
         ORDER BY lo",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Partition {
                name: r.try_get("name")?,
                lo: r.try_get("lo")?,
                hi: r.try_get("hi")?,
            })
        })
        .collect()
}

/// The database's clock in Unix milliseconds (retention compares with it too).
async fn now_ms(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let ms: i64 = sqlx::query_scalar("SELECT (extract(epoch FROM now()) * 1000)::int8")
        .fetch_one(&mut *conn)
        .await?;
    u64::try_from(ms)
        .map_err(|_| StoreError::Corrupt(format!("the database clock is {ms} ms before 1970")))
}

/// Creates the partitions of the current period and of the [`AHEAD`] ones after it that do not
/// exist yet (by the database's clock). Returns the names of those created.
pub async fn ensure(pool: &PgPool, period: Duration) -> Result<Vec<String>, StoreError> {
    let period_ms = u64::try_from(period.as_millis())
        .unwrap_or(u64::MAX)
        .max(1000);
    let now = now_ms(&mut *pool.acquire().await?).await?;
    let start = now - now % period_ms;
    let mut created = Vec::new();
    for k in 0..=u64::from(AHEAD) {
        let lo = start.saturating_add(k * period_ms);
        created.extend(create(pool, lo, lo.saturating_add(period_ms)).await?);
    }
    Ok(created)
}

/// Creates partitions for the ids of `[lo_ms, hi_ms)` that no partition covers yet: one for the
/// whole range when none overlaps it, else one for each gap between the existing ones (after a
/// change of period, old and new partitions fit together). Returns the names created. A gap the
/// DEFAULT partition already holds rows of (output stored while no partition covered it) is left
/// alone, and logged: attaching would fail, so those ids keep going to the DEFAULT partition,
/// where retention deletes them row by row.
///
/// A partition is created empty and then attached, which takes only a SHARE UPDATE EXCLUSIVE
/// lock on `log_chunks` (readers and writers go on); the DEFAULT partition is locked ACCESS
/// EXCLUSIVE while it is checked for rows of the new range.
pub async fn create(pool: &PgPool, lo_ms: u64, hi_ms: u64) -> Result<Vec<String>, StoreError> {
    let (lo, hi) = (bound(lo_ms), bound(hi_ms));
    if lo >= hi {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    let existing = list_on(&mut tx).await?;
    let mut created = Vec::new();
    for (lo, hi) in gaps(lo, hi, &existing) {
        let name = partition_name(millis_of(lo));
        let stray: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE job_id >= $1 AND job_id < $2)"
        )))
        .bind(lo)
        .bind(hi)
        .fetch_one(&mut *tx)
        .await?;
        if stray {
            tracing::info!(
                partition = name,
                "the default log partition already holds output of this period; not creating its partition (that output is deleted row by row by retention)"
            );
            continue;
        }
        // Names and bounds are made from numbers here, never from input.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {name} (LIKE log_chunks INCLUDING DEFAULTS INCLUDING STORAGE) WITH ({AUTOVACUUM})"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE log_chunks ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"
        )))
        .execute(&mut *tx)
        .await?;
        created.push(name);
    }
    tx.commit().await?;
    Ok(created)
}

/// The parts of `[lo, hi)` that none of `existing` (sorted by `lo`, not overlapping) covers.
fn gaps(lo: Uuid, hi: Uuid, existing: &[Partition]) -> Vec<(Uuid, Uuid)> {
    let mut out = Vec::new();
    let mut cursor = lo;
    for p in existing {
        if p.hi <= cursor || p.lo >= hi {
            continue;
        }
        if p.lo > cursor {
            out.push((cursor, p.lo));
        }
        cursor = cursor.max(p.hi);
    }
    if cursor < hi {
        out.push((cursor, hi));
    }
    out
}

/// `name` quoted as an SQL identifier (names read back from the catalog).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Bounds the transaction's lock waits, then takes the partition DDL lock for it: a wait for that
/// lock is bounded too (a transaction holding it for long fails this pass, to be retried at the
/// next, instead of holding up the caller — a worker's upkeep, which also rescues jobs).
async fn lock(tx: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
    )))
    .execute(&mut *tx)
    .await?;
    // Keyed like the other advisory locks (`hashtextextended('nekton.' …)`).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('nekton.log_partitions', 0))")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Whether any job's id falls in `[lo, hi)` (a primary-key range scan of `jobs`).
async fn holds_jobs(conn: &mut PgConnection, p: &Partition) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id >= $1 AND id < $2)")
            .bind(p.lo)
            .bind(p.hi)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Retention for partitions: every range partition whose whole range ends before `now - age`
/// (by the database's clock, like `queue::prune`) is dropped if no job falls in its range any
/// more. One that still holds a job is kept, and the chunks of its jobs that are gone are
/// deleted in batches instead. Run after `queue::prune`.
///
/// DROP takes an ACCESS EXCLUSIVE lock on `log_chunks` for a moment; it waits at most
/// `LOCK_TIMEOUT` for it (and fails, to be retried at the next pass). While the lock is held,
/// `jobs` is checked again: a job that appeared in the range since the first check (only a
/// submitter whose clock is behind by more than the retention could make one) rolls the drop
/// back. Any later output of such a job lands in the DEFAULT partition.
pub async fn retire(pool: &PgPool, age: Duration) -> Result<Retired, StoreError> {
    let mut conn = pool.acquire().await?;
    let now = now_ms(&mut conn).await?;
    let horizon = bound(now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
    let expired: Vec<Partition> = list_on(&mut conn)
        .await?
        .into_iter()
        .filter(|p| p.hi <= horizon)
        .collect();
    drop(conn);
    let mut out = Retired::default();
    for p in expired {
        let mut tx = pool.begin().await?;
        lock(&mut tx).await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(ident(&p.name))
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            // Another worker dropped it since the list was read.
            continue;
        }
        if !holds_jobs(&mut tx, &p).await? {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP TABLE {}",
                ident(&p.name)
            )))
            .execute(&mut *tx)
            .await?;
            if !holds_jobs(&mut tx, &p).await? {
                tx.commit().await?;
                out.dropped.push(p.name);
                continue;
            }
        }
        tx.rollback().await?;
        out.swept_chunks += sweep(pool, &p).await?;
        out.kept.push(p.name);
    }
    Ok(out)
}

/// Deletes the chunks of jobs that no longer exist from partition `p`, in batches of
/// `SWEEP_BATCH` jobs. Returns the chunks deleted.
async fn sweep(pool: &PgPool, p: &Partition) -> Result<u64, StoreError> {
    let mut total = 0u64;
    loop {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH gone AS ( \
                 SELECT DISTINCT c.job_id FROM {name} c \
                 WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = c.job_id) LIMIT $1 \
             ), del AS ( \
                 DELETE FROM {name} c USING gone g WHERE c.job_id = g.job_id RETURNING 1 \
             ) \
             SELECT (SELECT count(*) FROM gone) AS jobs, (SELECT count(*) FROM del) AS chunks",
            name = ident(&p.name)
        )))
        .bind(SWEEP_BATCH)
        .fetch_one(pool)
        .await?;
        let jobs: i64 = row.try_get("jobs")?;
        let chunks: i64 = row.try_get("chunks")?;
        total += chunks as u64;
        if jobs < SWEEP_BATCH {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_at_most_a_seventh_of_the_retention_and_divides_a_day() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(period_for(h(7 * 24)), h(24));
        assert_eq!(period_for(h(30 * 24)), h(24));
        assert_eq!(period_for(h(24)), h(3));
        assert_eq!(period_for(h(84)), h(12));
        assert_eq!(period_for(h(1)), h(1));
        assert_eq!(period_for(Duration::ZERO), h(1));
    }

    #[test]
    fn bounds_hold_the_milliseconds_in_the_first_48_bits() {
        let id = Uuid::now_v7();
        let ms = millis_of(id);
        assert!(bound(ms) <= id && id < bound(ms + 1));
        assert_eq!(millis_of(bound(ms)), ms);
        assert_eq!(bound(1 << 60), bound((1 << 48) - 1));
        assert_eq!(partition_name(86_400_000), "log_chunks_19700102_000000_000");
    }

    #[test]
    fn gaps_are_the_parts_no_partition_covers() {
        let p = |lo: u64, hi: u64| Partition {
            name: partition_name(lo),
            lo: bound(lo),
            hi: bound(hi),
        };
        let g = |v: &[(u64, u64)]| -> Vec<(Uuid, Uuid)> {
            v.iter().map(|&(a, b)| (bound(a), bound(b))).collect()
        };
        assert_eq!(gaps(bound(0), bound(100), &[]), g(&[(0, 100)]));
        assert_eq!(
            gaps(bound(0), bound(100), &[p(10, 20), p(20, 30), p(50, 60)]),
            g(&[(0, 10), (30, 50), (60, 100)])
        );
        assert_eq!(gaps(bound(10), bound(20), &[p(0, 100)]), g(&[]));
        assert_eq!(
            gaps(bound(10), bound(40), &[p(0, 20), p(30, 100)]),
            g(&[(20, 30)])
        );
        assert_eq!(
            gaps(bound(10), bound(40), &[p(0, 10), p(40, 50)]),
            g(&[(10, 40)])
        );
    }
}
