//! Figures about the queue itself, read at scrape time for `/metrics` (docs/metrics.md).

use sqlx::PgPool;

/// Jobs waiting in one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStat {
    pub queue: String,
    /// Jobs `queued` or `scheduled` (waiting for a retry's backoff).
    pub depth: i64,
    /// Seconds since the oldest waiting job was submitted.
    pub oldest_age_seconds: f64,
}

/// Depth and oldest age per queue with waiting jobs. Reads the claim's partial index only
/// (`jobs_tenant_claimable` covers exactly the waiting rows), so its cost follows the backlog, not
/// the table.
pub async fn queue_stats(pool: &PgPool) -> Result<Vec<QueueStat>, sqlx::Error> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT queue, count(*), \
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 \
         FROM jobs WHERE state IN ('queued', 'scheduled') GROUP BY queue",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(queue, depth, oldest_age_seconds)| QueueStat {
            queue,
            depth,
            oldest_age_seconds,
        })
        .collect())
}

/// The queue's hot tables.
pub const HOT_TABLES: [&str; 4] = ["jobs", "job_attempts", "job_specs", "log_chunks"];

/// Dead tuples as a fraction of all tuples, per hot table, from PostgreSQL's statistics (which
/// lag by up to a few seconds). A ratio that stays high means VACUUM is not keeping up — or a
/// long transaction holds it back — and claims will slow down. A partitioned table (`log_chunks`)
/// counts the tuples of all its partitions.
pub async fn dead_tuple_ratios(pool: &PgPool) -> Result<Vec<(String, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.name, CASE WHEN sum(s.n_live_tup + s.n_dead_tup) = 0 THEN 0 \
                ELSE sum(s.n_dead_tup)::float8 / sum(s.n_live_tup + s.n_dead_tup) END \
         FROM unnest($1::text[]) AS t(name) \
         JOIN pg_stat_user_tables s ON s.relid = to_regclass(t.name) \
             OR s.relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(t.name)) \
         GROUP BY t.name",
    )
    .bind(&HOT_TABLES[..])
    .fetch_all(pool)
    .await
}
