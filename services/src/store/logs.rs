//! Reading stored output. Chunks are immutable rows keyed `(job, attempt, seq)`; a reader's
//! position is the last `(attempt, seq)` it has, so resuming is one primary-key range scan.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::StoreError;
use crate::model::{ChunkKind, OutputStream};

/// One stored chunk of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub attempt: i32,
    pub seq: i32,
    /// Stored as its fd number (1 stdout, 2 stderr, 3 a test-suite event).
    pub stream: ChunkKind,
    pub data: Vec<u8>,
    /// When the chunk was stored; `None` for chunks stored before migration 0008.
    pub stored_at: Option<DateTime<Utc>>,
}

impl StoredChunk {
    /// A chunk from its stored columns; `fd` is `log_chunks.stream`.
    pub(crate) fn from_columns(
        attempt: i32,
        seq: i32,
        fd: i16,
        data: Vec<u8>,
        stored_at: Option<DateTime<Utc>>,
    ) -> Result<Self, StoreError> {
        let stream = ChunkKind::from_fd(fd).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "log chunk {attempt}.{seq} with stream {fd} (expected 1, 2 or 3)"
            ))
        })?;
        Ok(Self {
            attempt,
            seq,
            stream,
            data,
            stored_at,
        })
    }
}

fn chunk_from_row(r: &sqlx::postgres::PgRow) -> Result<StoredChunk, StoreError> {
    StoredChunk::from_columns(
        r.try_get("attempt")?,
        r.try_get("seq")?,
        r.try_get("stream")?,
        r.try_get("data")?,
        r.try_get("stored_at")?,
    )
}

/// Chunks of `job` strictly after position `(attempt, seq)`, in order, at most `limit`.
pub async fn chunks_after(
    pool: &PgPool,
    job: Uuid,
    after: (i32, i32),
    limit: i64,
) -> Result<Vec<StoredChunk>, StoreError> {
    let rows = sqlx::query(
        "SELECT attempt, seq, stream, data, stored_at FROM log_chunks \
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

/// The test-suite events of one attempt (fd 3 chunks), in order.
pub async fn attempt_events(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT data FROM log_chunks WHERE job_id = $1 AND attempt = $2 AND stream = 3 ORDER BY seq",
    )
    .bind(job)
    .bind(attempt)
    .fetch_all(pool)
    .await?)
}

/// Which chunks of one attempt a plain log read wants (output only: events never).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkFilter {
    /// Only this stream.
    pub stream: Option<OutputStream>,
    /// Only chunks stored at or after this time (chunks without a time are left out).
    pub since: Option<DateTime<Utc>>,
    /// Only chunks up to this `seq` (inclusive): a read's end fixed when it starts.
    pub through_seq: Option<i32>,
}

/// Chunks of one attempt after `seq` that pass `filter`, in order, at most `limit`.
pub async fn attempt_chunks_after(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
    after_seq: i32,
    filter: ChunkFilter,
    limit: i64,
) -> Result<Vec<StoredChunk>, StoreError> {
    let rows = sqlx::query(
        "SELECT attempt, seq, stream, data, stored_at FROM log_chunks \
         WHERE job_id = $1 AND attempt = $2 AND seq > $3 AND seq <= $4 \
           AND (($5::smallint IS NULL AND stream < 3) OR stream = $5) AND ($6::timestamptz IS NULL OR stored_at >= $6) \
         ORDER BY seq LIMIT $7",
    )
    .bind(job)
    .bind(attempt)
    .bind(after_seq)
    .bind(filter.through_seq.unwrap_or(i32::MAX))
    .bind(filter.stream.map(OutputStream::as_fd))
    .bind(filter.since)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(chunk_from_row).collect()
}

/// The last chunk `seq` of one attempt (0 when it has none).
pub async fn last_seq(pool: &PgPool, job: Uuid, attempt: i32) -> Result<i32, StoreError> {
    let seq: Option<i32> =
        sqlx::query_scalar("SELECT max(seq) FROM log_chunks WHERE job_id = $1 AND attempt = $2")
            .bind(job)
            .bind(attempt)
            .fetch_one(pool)
            .await?;
    Ok(seq.unwrap_or(0))
}

/// Where the last `lines` lines of one attempt's output (as `filter` selects it) begin: the chunk
/// `seq` and the byte offset in it, or `None` when the selected output has no more lines than
/// that (so it is wanted whole). A final line without its newline counts as a line. Reads the
/// chunks backwards a page at a time, so the cost follows the tail's size, not the log's.
pub async fn tail_start(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
    filter: ChunkFilter,
    lines: u32,
    page: i64,
) -> Result<Option<(i32, usize)>, StoreError> {
    let mut before = filter.through_seq.map_or(i32::MAX, |s| s.saturating_add(1));
    let mut tail = TailCounter::new(lines);
    loop {
        let rows = sqlx::query(
            "SELECT attempt, seq, stream, data, stored_at FROM log_chunks \
             WHERE job_id = $1 AND attempt = $2 AND seq < $3 \
               AND (($4::smallint IS NULL AND stream < 3) OR stream = $4) AND ($5::timestamptz IS NULL OR stored_at >= $5) \
             ORDER BY seq DESC LIMIT $6",
        )
        .bind(job)
        .bind(attempt)
        .bind(before)
        .bind(filter.stream.map(OutputStream::as_fd))
        .bind(filter.since)
        .bind(page)
        .fetch_all(pool)
        .await?;
        for r in &rows {
            let c = chunk_from_row(r)?;
            if let Some(offset) = tail.feed_backwards(&c.data) {
                return Ok(Some((c.seq, offset)));
            }
            before = c.seq;
        }
        if (rows.len() as i64) < page {
            return Ok(None);
        }
    }
}

/// Counts lines from the end of a byte stream fed to it chunk by chunk, last chunk first.
#[derive(Debug)]
pub struct TailCounter {
    /// Lines still wanted.
    wanted: u32,
    /// Whether the next byte seen (going backwards) is the log's very last byte.
    at_end: bool,
}

impl TailCounter {
    pub fn new(lines: u32) -> Self {
        TailCounter {
            wanted: lines,
            at_end: true,
        }
    }

    /// Feeds the chunk before everything fed so far; returns the offset in it where the wanted
    /// lines begin once they are all found.
    pub fn feed_backwards(&mut self, data: &[u8]) -> Option<usize> {
        if self.wanted == 0 {
            return Some(data.len());
        }
        for (i, &b) in data.iter().enumerate().rev() {
            let at_end = std::mem::replace(&mut self.at_end, false);
            if b == b'\n' && !at_end {
                // This newline ends the line before the ones counted so far.
                self.wanted -= 1;
                if self.wanted == 0 {
                    return Some(i + 1);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::TailCounter;

    /// Feeds `chunks` backwards and returns the text the tail keeps.
    fn tail(chunks: &[&str], lines: u32) -> String {
        let mut t = TailCounter::new(lines);
        for (i, c) in chunks.iter().enumerate().rev() {
            if let Some(offset) = t.feed_backwards(c.as_bytes()) {
                return format!("{}{}", &c[offset..], chunks[i + 1..].concat());
            }
        }
        chunks.concat()
    }

    #[test]
    fn tail_keeps_the_last_lines_across_chunks() {
        let chunks = ["a\nb", "\nc\n", "d\ne\n"];
        assert_eq!(tail(&chunks, 1), "e\n");
        assert_eq!(tail(&chunks, 2), "d\ne\n");
        assert_eq!(tail(&chunks, 3), "c\nd\ne\n");
        assert_eq!(tail(&chunks, 4), "b\nc\nd\ne\n");
        assert_eq!(tail(&chunks, 5), "a\nb\nc\nd\ne\n");
        assert_eq!(tail(&chunks, 50), "a\nb\nc\nd\ne\n");
        assert_eq!(tail(&chunks, 0), "");
    }

    #[test]
    fn a_last_line_without_newline_counts() {
        assert_eq!(tail(&["x\ny\nz"], 1), "z");
        assert_eq!(tail(&["x\ny\n", "z"], 2), "y\nz");
        assert_eq!(tail(&["x\n", "\n"], 1), "\n");
        assert_eq!(tail(&["x\n", "\n"], 2), "x\n\n");
    }
}
