//! Reading stored output. Chunks are immutable rows keyed `(job, attempt, seq)`; a reader's
//! position is the last `(attempt, seq)` it has, so resuming is one primary-key range scan.

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::StoreError;
use crate::model::OutputStream;

/// One stored chunk of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub attempt: i32,
    pub seq: i32,
    /// Stored as its fd number (1 stdout, 2 stderr).
    pub stream: OutputStream,
    pub data: Vec<u8>,
}

fn chunk_from_row(r: &sqlx::postgres::PgRow) -> Result<StoredChunk, StoreError> {
    Ok(StoredChunk {
        attempt: r.try_get("attempt")?,
        seq: r.try_get("seq")?,
        stream: {
            let fd: i16 = r.try_get("stream")?;
            OutputStream::from_fd(fd).ok_or_else(|| {
                StoreError::Corrupt(format!("log chunk with stream {fd} (expected 1 or 2)"))
            })?
        },
        data: r.try_get("data")?,
    })
}

/// Chunks of `job` strictly after position `(attempt, seq)`, in order, at most `limit`.
pub async fn chunks_after(
    pool: &PgPool,
    job: Uuid,
    after: (i32, i32),
    limit: i64,
) -> Result<Vec<StoredChunk>, StoreError> {
    let rows = sqlx::query(
        "SELECT attempt, seq, stream, data FROM log_chunks \
         WHERE job_id = $1 AND (attempt, seq) > ($2, $3) ORDER BY attempt, seq LIMIT $4",
    )
    .bind(job)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(chunk_from_row).collect()
}

/// Chunks of one attempt after `seq`, optionally of one stream only.
pub async fn attempt_chunks_after(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
    after_seq: i32,
    stream: Option<OutputStream>,
    limit: i64,
) -> Result<Vec<StoredChunk>, StoreError> {
    let rows = sqlx::query(
        "SELECT attempt, seq, stream, data FROM log_chunks \
         WHERE job_id = $1 AND attempt = $2 AND seq > $3 AND ($4::smallint IS NULL OR stream = $4) \
         ORDER BY seq LIMIT $5",
    )
    .bind(job)
    .bind(attempt)
    .bind(after_seq)
    .bind(stream.map(OutputStream::as_fd))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(chunk_from_row).collect()
}
