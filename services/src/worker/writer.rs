//! A worker's writer: every log chunk and every completion of the jobs on its lane goes through
//! it, in order (a worker has two lanes, see `Worker::run`; a job uses one). It flushes all
//! pending chunks in one INSERT (then one NOTIFY) per tick or when 64 KiB are pending, and
//! completions in batches as soon as they arrive, in the same transaction as the chunks pending
//! with them — a job's last chunks are always stored before its completion — and answers each
//! completion's sender once it is stored, which is when the job's slot frees. A failed flush is retried: nothing is dropped while
//! the database is away (the bounded channel makes the jobs wait instead). After completions are
//! recorded it pokes the claim loop: a tenant's running count only drops then, so a tenant held
//! back by its `max_running` (or its fair share) can be served at once instead of at the next poll.
//! An API in the same process is told of the stored completions directly ([`OnStored`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::model::JobState;
use crate::store::queue::{self, Completion, NewChunk};

/// Told, in the same process, of the completions a writer has just stored: each applied job's id
/// and new state (a final state, or `scheduled` for a retry). An API serving from the same process
/// wakes the requests and streams waiting on those jobs at once, instead of after the NOTIFY's
/// trip through PostgreSQL and back. Called after the commit, never for a fenced completion.
pub type OnStored = Arc<dyn Fn(&[(Uuid, JobState)]) + Send + Sync>;

/// Flush when this many output bytes are pending, whatever the tick.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// Messages to the writer.
pub enum WriterMsg {
    Chunk(NewChunk),
    /// Boxed: a completion (with its usage bill) is several times the size of a chunk. The
    /// sender is answered once the completion is stored (or refused as fenced): the job's slot
    /// frees only then, so the database never shows more of this worker's jobs running than
    /// it has slots.
    Complete(Box<Completion>, oneshot::Sender<()>),
}

/// Runs until every sender is dropped and everything pending is flushed. `completed` is notified
/// after each batch of completions is recorded.
pub async fn run(
    pool: sqlx::PgPool,
    worker: Uuid,
    mut rx: mpsc::Receiver<WriterMsg>,
    tick: Duration,
    metrics: Metrics,
    completed: Arc<Notify>,
    on_stored: Option<OnStored>,
) {
    let mut chunks: Vec<NewChunk> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut completions: Vec<Completion> = Vec::new();
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    while open || !chunks.is_empty() || !completions.is_empty() {
        if open {
            // Wait for a message, or for the tick when output is pending.
            let received = match deadline {
                Some(at) => tokio::select! {
                    m = rx.recv() => Some(m),
                    _ = tokio::time::sleep_until(at) => None,
                },
                None => Some(rx.recv().await),
            };
            let mut take = |m: WriterMsg| match m {
                WriterMsg::Chunk(c) => {
                    pending_bytes += c.data.len();
                    chunks.push(c);
                    pending_bytes
                }
                WriterMsg::Complete(c, ack) => {
                    completions.push(*c);
                    acks.push(ack);
                    pending_bytes
                }
            };
            match received {
                Some(Some(m)) => {
                    take(m);
                }
                Some(None) => open = false,
                None => {}
            }
            // Take whatever else is already waiting: this is where batching comes from.
            while let Ok(m) = rx.try_recv() {
                if take(m) >= FLUSH_BYTES * 16 {
                    break;
                }
            }
            if !chunks.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + tick);
            }
        }
        let due = deadline.is_some_and(|d| Instant::now() >= d);
        let flush_now = !open || !completions.is_empty() || pending_bytes >= FLUSH_BYTES || due;
        if !flush_now {
            continue;
        }
        // Logs first, then completions, in one transaction: a job's output is complete before
        // it is finished, and a batch of finished jobs costs one commit.
        let mut delay = Duration::from_millis(50);
        loop {
            match queue::flush(&pool, worker, &chunks, &completions).await {
                Ok(applied) => {
                    if applied.len() != completions.len() {
                        let stale: Vec<Uuid> = completions
                            .iter()
                            .map(|c| c.job_id)
                            .filter(|id| !applied.contains(id))
                            .collect();
                        tracing::warn!(
                            ?stale,
                            "completions not applied: these attempts were taken over (fenced)"
                        );
                    }
                    let stored: Vec<(Uuid, JobState)> = completions
                        .iter()
                        .filter(|c| applied.contains(&c.job_id))
                        .map(|c| (c.job_id, c.state))
                        .collect();
                    if let Some(tell) = &on_stored {
                        tell(&stored);
                    }
                    for c in &completions {
                        if applied.contains(&c.job_id) {
                            metrics.job_finished(c.state.as_str(), c.reason.as_str());
                        }
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, chunks = chunks.len(), completions = completions.len(), "storing log chunks and completions failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics.log_bytes_stored.inc_by(pending_bytes as u64);
        chunks.clear();
        pending_bytes = 0;
        deadline = None;
        if !completions.is_empty() {
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            completed.notify_one();
            completions.clear();
        }
    }
}
