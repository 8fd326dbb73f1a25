//! Stored artifacts (migration 0010): the files a job's attempt left that its spec asked for,
//! their listing, what was skipped and why, and their bytes in chunks of at most
//! [`CHUNK_BYTES`].
//!
//! Writing is the worker's ([`insert`]): one transaction per attempt, fenced like every worker
//! write — nothing is stored unless the job is still `running` this attempt on this worker.
//! Reading is the API's ([`list`], [`find`], [`chunk`]): a download reads one chunk per query,
//! so serving a large file holds no more than one chunk in memory. Retention deletes the rows
//! with the job's logs (`queue::prune`).

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::StoreError;

/// The largest piece of a file one row holds.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Most bytes sent to the database in one INSERT of chunks.
const STATEMENT_BYTES: usize = 8 << 20;

/// A file to store.
#[derive(Debug, Clone, Copy)]
pub struct NewArtifact<'a> {
    pub path: &'a str,
    /// The file's size when collected.
    pub size: u64,
    /// The bytes kept (all of them unless `truncated`).
    pub data: &'a [u8],
    pub truncated: bool,
    /// SHA-256 of `data`.
    pub sha256: [u8; 32],
    pub mode: u32,
}

/// A match that was not collected, and why.
#[derive(Debug, Clone, Copy)]
pub struct NewSkipped<'a> {
    pub path: &'a str,
    pub reason: &'a str,
}

/// What [`insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Everything was stored.
    Stored,
    /// The job is no longer running this attempt on this worker: nothing was stored.
    NotOurs,
}

fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} {n} does not fit a bigint")))
}

fn to_i32(n: usize, what: &str) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} {n} does not fit an integer")))
}

/// Stores an attempt's artifacts in one transaction, fenced by `(job, attempt, worker, state =
/// 'running')`: checked by the first statement, so a worker that lost the job stores nothing.
/// Paths must be unique (the unique index refuses a repeat; the caller resolves them).
pub async fn insert(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
    worker: Uuid,
    files: &[NewArtifact<'_>],
    skipped: &[NewSkipped<'_>],
) -> Result<Inserted, StoreError> {
    let mut tx = pool.begin().await?;
    let ours: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND attempt = $2 AND worker_id = $3 \
         AND state = 'running')",
    )
    .bind(job)
    .bind(attempt)
    .bind(worker)
    .fetch_one(&mut *tx)
    .await?;
    if !ours {
        return Ok(Inserted::NotOurs);
    }

    if !files.is_empty() {
        let mut idx = Vec::with_capacity(files.len());
        let mut paths = Vec::with_capacity(files.len());
        let mut sizes = Vec::with_capacity(files.len());
        let mut stored = Vec::with_capacity(files.len());
        let mut truncated = Vec::with_capacity(files.len());
        let mut digests = Vec::with_capacity(files.len());
        let mut modes = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            idx.push(to_i32(i, "artifact index")?);
            paths.push(f.path);
            sizes.push(to_i64(f.size, "artifact size")?);
            stored.push(to_i64(f.data.len() as u64, "artifact stored bytes")?);
            truncated.push(f.truncated);
            digests.push(f.sha256.to_vec());
            // Permission bits only (never more than 0o7777, so always an integer).
            modes.push((f.mode & 0o7777) as i32);
        }
        sqlx::query(
            "INSERT INTO job_artifacts (job_id, attempt, idx, path, size, stored_bytes, truncated, sha256, mode) \
             SELECT $1, $2, t.* FROM UNNEST($3::int[], $4::text[], $5::bigint[], $6::bigint[], \
                 $7::boolean[], $8::bytea[], $9::int[]) AS t",
        )
        .bind(job)
        .bind(attempt)
        .bind(&idx)
        .bind(&paths)
        .bind(&sizes)
        .bind(&stored)
        .bind(&truncated)
        .bind(&digests)
        .bind(&modes)
        .execute(&mut *tx)
        .await?;
    }

    if !skipped.is_empty() {
        let idx: Vec<i32> = (0..skipped.len())
            .map(|i| to_i32(i, "skipped index"))
            .collect::<Result<_, _>>()?;
        let paths: Vec<&str> = skipped.iter().map(|s| s.path).collect();
        let reasons: Vec<&str> = skipped.iter().map(|s| s.reason).collect();
        sqlx::query(
            "INSERT INTO job_artifacts_skipped (job_id, attempt, idx, path, reason) \
             SELECT $1, $2, t.* FROM UNNEST($3::int[], $4::text[], $5::text[]) AS t",
        )
        .bind(job)
        .bind(attempt)
        .bind(&idx)
        .bind(&paths)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?;
    }

    // The bytes, [`CHUNK_BYTES`] per row, about [`STATEMENT_BYTES`] per statement.
    let mut batch = ChunkBatch::default();
    for (i, f) in files.iter().enumerate() {
        let file_idx = to_i32(i, "artifact index")?;
        for (seq, piece) in f.data.chunks(CHUNK_BYTES).enumerate() {
            batch.push(file_idx, to_i32(seq, "chunk number")?, piece);
            if batch.bytes >= STATEMENT_BYTES {
                batch.flush(&mut tx, job, attempt).await?;
            }
        }
    }
    batch.flush(&mut tx, job, attempt).await?;
    tx.commit().await?;
    Ok(Inserted::Stored)
}

#[derive(Default)]
struct ChunkBatch<'a> {
    idx: Vec<i32>,
    seq: Vec<i32>,
    data: Vec<&'a [u8]>,
    bytes: usize,
}

impl<'a> ChunkBatch<'a> {
    fn push(&mut self, idx: i32, seq: i32, data: &'a [u8]) {
        self.idx.push(idx);
        self.seq.push(seq);
        self.data.push(data);
        self.bytes += data.len();
    }

    async fn flush(
        &mut self,
        conn: &mut sqlx::PgConnection,
        job: Uuid,
        attempt: i32,
    ) -> Result<(), StoreError> {
        if self.idx.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO artifact_chunks (job_id, attempt, idx, seq, data) \
             SELECT $1, $2, t.* FROM UNNEST($3::int[], $4::int[], $5::bytea[]) AS t",
        )
        .bind(job)
        .bind(attempt)
        .bind(&self.idx)
        .bind(&self.seq)
        .bind(&self.data)
        .execute(&mut *conn)
        .await?;
        *self = ChunkBatch::default();
        Ok(())
    }
}

/// A stored file's listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Its place in the attempt's listing (what its chunks are keyed by).
    pub idx: i32,
    pub path: String,
    pub size: u64,
    pub stored_bytes: u64,
    pub truncated: bool,
    pub sha256: Vec<u8>,
    pub mode: u32,
}

/// A stored skipped match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSkipped {
    pub path: String,
    pub reason: String,
}

fn artifact_from_row(r: &sqlx::postgres::PgRow) -> Result<StoredArtifact, StoreError> {
    let size: i64 = r.try_get("size")?;
    let stored: i64 = r.try_get("stored_bytes")?;
    let mode: i32 = r.try_get("mode")?;
    let path: String = r.try_get("path")?;
    let nonneg = |n: i64, what: &str| {
        u64::try_from(n)
            .map_err(|_| StoreError::Corrupt(format!("artifact {path:?} has a negative {what}")))
    };
    Ok(StoredArtifact {
        idx: r.try_get("idx")?,
        size: nonneg(size, "size")?,
        stored_bytes: nonneg(stored, "stored size")?,
        truncated: r.try_get("truncated")?,
        sha256: r.try_get("sha256")?,
        mode: u32::try_from(mode)
            .map_err(|_| StoreError::Corrupt(format!("artifact {path:?} has mode {mode}")))?,
        path,
    })
}

/// An attempt's listing: its files in listing order, and its skipped matches.
pub async fn list(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
) -> Result<(Vec<StoredArtifact>, Vec<StoredSkipped>), StoreError> {
    let rows = sqlx::query(
        "SELECT idx, path, size, stored_bytes, truncated, sha256, mode FROM job_artifacts \
         WHERE job_id = $1 AND attempt = $2 ORDER BY idx",
    )
    .bind(job)
    .bind(attempt)
    .fetch_all(pool)
    .await?;
    let files = rows
        .iter()
        .map(artifact_from_row)
        .collect::<Result<_, _>>()?;
    let rows = sqlx::query(
        "SELECT path, reason FROM job_artifacts_skipped WHERE job_id = $1 AND attempt = $2 ORDER BY idx",
    )
    .bind(job)
    .bind(attempt)
    .fetch_all(pool)
    .await?;
    let skipped = rows
        .iter()
        .map(|r| {
            Ok(StoredSkipped {
                path: r.try_get("path")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((files, skipped))
}

/// The file of an attempt stored under `path`, if any.
pub async fn find(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
    path: &str,
) -> Result<Option<StoredArtifact>, StoreError> {
    let row = sqlx::query(
        "SELECT idx, path, size, stored_bytes, truncated, sha256, mode FROM job_artifacts \
         WHERE job_id = $1 AND attempt = $2 AND path = $3",
    )
    .bind(job)
    .bind(attempt)
    .bind(path)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(artifact_from_row).transpose()
}

/// Chunk `seq` of file `idx` of an attempt (`None` past its last chunk).
pub async fn chunk(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
    idx: i32,
    seq: i32,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT data FROM artifact_chunks WHERE job_id = $1 AND attempt = $2 AND idx = $3 AND seq = $4",
    )
    .bind(job)
    .bind(attempt)
    .bind(idx)
    .bind(seq)
    .fetch_optional(pool)
    .await?)
}
