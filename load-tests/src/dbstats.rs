//! What PostgreSQL did during a benchmark: transactions, rows, WAL records, bytes and syncs, read
//! from its statistics views before and after (direct access to the server's database).
//!
//! PostgreSQL's cumulative statistics reach the views with a delay (a backend flushes its
//! counters at most once a second, an idle one within 10 s), so the "after" reading waits for
//! them to settle. The WAL position and the transaction-id counter are exact at once.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Row};

use crate::stats::num;

/// A pool to the server's database (for statistics and the queue-only benchmark).
pub async fn connect(options: PgConnectOptions, max: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("nekton-load-tests"))
        .await
        .context("connecting to the server's PostgreSQL")
}

/// Options for the embedded PostgreSQL of a `nekton serve --state-dir DIR`.
pub fn embedded_options(state_dir: &Path) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .socket(state_dir.join("postgres").join("run"))
        .port(5432)
        .username("postgres")
        .database("nekton")
        .ssl_mode(PgSslMode::Disable)
}

/// The server's version and the settings that decide commit cost.
pub async fn describe(pool: &PgPool) -> Result<String> {
    let row = sqlx::query(
        "SELECT current_setting('server_version') AS v, current_setting('fsync') AS f, \
         current_setting('synchronous_commit') AS s, current_setting('shared_buffers') AS b, \
         current_setting('wal_sync_method') AS m",
    )
    .fetch_one(pool)
    .await
    .context("reading PostgreSQL's settings")?;
    let get = |c: &str| row.try_get::<String, _>(c).unwrap_or_default();
    Ok(format!(
        "PostgreSQL {} (fsync={}, synchronous_commit={}, wal_sync_method={}, shared_buffers={})",
        get("v"),
        get("f"),
        get("s"),
        get("m"),
        get("b")
    ))
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DbSnapshot {
    pub xact_commit: i64,
    pub xact_rollback: i64,
    pub tup_inserted: i64,
    pub tup_updated: i64,
    pub tup_deleted: i64,
    pub tup_returned: i64,
    pub tup_fetched: i64,
    pub wal_records: i64,
    pub wal_fpi: i64,
    pub wal_write: i64,
    pub wal_sync: i64,
    /// Next transaction id: the difference counts transactions that wrote.
    pub next_xid: i64,
    /// WAL position in bytes.
    pub wal_lsn: i64,
}

pub async fn snapshot(pool: &PgPool) -> Result<DbSnapshot> {
    let r = sqlx::query(
        "SELECT d.xact_commit, d.xact_rollback, d.tup_inserted, d.tup_updated, d.tup_deleted, \
             d.tup_returned, d.tup_fetched, w.wal_records, w.wal_fpi, w.wal_write, w.wal_sync, \
             pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal_lsn \
         FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .context("reading pg_stat_database / pg_stat_wal (PostgreSQL 14 or later)")?;
    let g = |c: &str| -> Result<i64> {
        r.try_get::<i64, _>(c)
            .with_context(|| format!("column {c} of the statistics query"))
    };
    Ok(DbSnapshot {
        xact_commit: g("xact_commit")?,
        xact_rollback: g("xact_rollback")?,
        tup_inserted: g("tup_inserted")?,
        tup_updated: g("tup_updated")?,
        tup_deleted: g("tup_deleted")?,
        tup_returned: g("tup_returned")?,
        tup_fetched: g("tup_fetched")?,
        wal_records: g("wal_records")?,
        wal_fpi: g("wal_fpi")?,
        wal_write: g("wal_write")?,
        wal_sync: g("wal_sync")?,
        next_xid: g("next_xid")?,
        wal_lsn: g("wal_lsn")?,
    })
}

/// The difference between two readings.
#[derive(Debug, Clone, Copy)]
pub struct DbUse(DbSnapshot);

impl DbUse {
    pub fn between(a: &DbSnapshot, b: &DbSnapshot) -> Self {
        Self(DbSnapshot {
            xact_commit: b.xact_commit - a.xact_commit,
            xact_rollback: b.xact_rollback - a.xact_rollback,
            tup_inserted: b.tup_inserted - a.tup_inserted,
            tup_updated: b.tup_updated - a.tup_updated,
            tup_deleted: b.tup_deleted - a.tup_deleted,
            tup_returned: b.tup_returned - a.tup_returned,
            tup_fetched: b.tup_fetched - a.tup_fetched,
            wal_records: b.wal_records - a.wal_records,
            wal_fpi: b.wal_fpi - a.wal_fpi,
            wal_write: b.wal_write - a.wal_write,
            wal_sync: b.wal_sync - a.wal_sync,
            // The "after" query itself runs in a transaction that took no xid.
            next_xid: b.next_xid - a.next_xid,
            wal_lsn: b.wal_lsn - a.wal_lsn,
        })
    }

    pub fn lines(&self, jobs: Option<u64>) -> Vec<String> {
        let d = &self.0;
        let per = |x: i64| match jobs {
            Some(n) if n > 0 => num(x as f64 / n as f64),
            _ => "-".into(),
        };
        let label = if jobs.is_some() { "per job" } else { "" };
        vec![
            format!(
                "  postgres {label}: transactions {} (writing {}; all incl. read-only {}), WAL syncs {} (writes {}), WAL {} bytes ({} records, {} full-page images)",
                per(d.xact_commit + d.xact_rollback),
                per(d.next_xid),
                per(d.xact_commit + d.xact_rollback),
                per(d.wal_sync),
                per(d.wal_write),
                per(d.wal_lsn),
                per(d.wal_records),
                per(d.wal_fpi),
            ),
            format!(
                "  postgres {label}: rows inserted {}, updated {}, deleted {}, returned {}, fetched {}   (totals: {} xacts, {} WAL syncs, {:.1} MB WAL)",
                per(d.tup_inserted),
                per(d.tup_updated),
                per(d.tup_deleted),
                per(d.tup_returned),
                per(d.tup_fetched),
                d.xact_commit + d.xact_rollback,
                d.wal_sync,
                d.wal_lsn as f64 / 1e6,
            ),
        ]
    }

    pub fn json(&self, jobs: Option<u64>) -> Value {
        let d = &self.0;
        json!({
            "jobs": jobs,
            "transactions": d.xact_commit + d.xact_rollback,
            "rollbacks": d.xact_rollback,
            "writing_transactions": d.next_xid,
            "rows_inserted": d.tup_inserted,
            "rows_updated": d.tup_updated,
            "rows_deleted": d.tup_deleted,
            "rows_returned": d.tup_returned,
            "rows_fetched": d.tup_fetched,
            "wal_records": d.wal_records,
            "wal_full_page_images": d.wal_fpi,
            "wal_writes": d.wal_write,
            "wal_syncs": d.wal_sync,
            "wal_bytes": d.wal_lsn,
        })
    }
}
