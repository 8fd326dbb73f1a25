//! A worker's writer: every log chunk and every completion of the jobs on its lane goes through
//! it, in order (a worker has several lanes, see `Worker::run`; a job uses one). It flushes all
//! pending chunks in one INSERT (then one NOTIFY) per tick or when 64 KiB are pending, and
//! completions in batches as soon as they arrive, in the same transaction as the chunks pending
//! with them — a job's last chunks are always stored before its completion — and answers each
//! completion's sender once it is stored, which is when the job's slot frees. A failed flush is
//! retried: nothing is dropped while the database is away (the bounded channel makes the jobs
//! wait instead). A flush whose values PostgreSQL refuses is stored job by job instead, so one
//! job's bad item does not hold the others back ([`Flusher::flush`]). After completions are
//! recorded it pokes the claim loop: a tenant's running count only drops then, so a tenant held
//! back by its `max_running` (or its fair share) can be served at once instead of at the next
//! poll. An API in the same process is told of the stored completions directly ([`OnStored`]);
//! when it is the database's only follower ([`Notices::InProcess`]) it is told of the stored
//! output too, and the flush sends no NOTIFY at all.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::metrics::{ItemLabels, Metrics};
use crate::model::{JobState, OutcomeReason, Usage};
use crate::store::StoreError;
use crate::store::jobs::Answer;
use crate::store::queue::{self, Completion, NewChunk, Notices};

/// What a writer has just stored, told in the same process ([`OnStored`]).
#[derive(Debug)]
pub struct Stored<'a> {
    /// The jobs whose output the flush carried (some of it may have been fenced: a follower
    /// told of output that is not there reads nothing). Given only with
    /// [`Notices::InProcess`]; otherwise empty, as the NOTIFY says it.
    pub output: &'a [Uuid],
    /// Each applied completion's job and new state (a final state, or `scheduled` for a retry);
    /// never a fenced completion.
    pub done: &'a [(Uuid, JobState)],
    /// The jobs [`Listener::waited`] named for this flush.
    pub asked: &'a queue::Ask,
    /// The answers the flush read back for them (those whose completions applied, in a flush
    /// that could answer: [`queue::flush_answering`]); one asked for in [`queue::Ask::records`]
    /// carries no output.
    pub answers: Vec<Answer>,
}

/// Who in the writer's process hears what it stored: an API serving from the same process wakes
/// the requests and streams waiting on those jobs at once, instead of after the NOTIFY's trip
/// through PostgreSQL and back, and answers a waiting request or stream with the record the flush
/// read back instead of reading it after the commit.
pub trait Listener: Send + Sync {
    /// Of `ids` (jobs whose completions the writer is about to store), those whose answer a
    /// request (record and output) or a stream (record) in this process waits for.
    fn waited(&self, ids: &[Uuid]) -> queue::Ask;
    /// What a flush stored, told after its commit (a read that starts now sees it); called after
    /// every flush.
    fn stored(&self, stored: Stored<'_>);
}

/// A function of what was stored listens, and waits for no answer.
impl<F: Fn(Stored<'_>) + Send + Sync> Listener for F {
    fn waited(&self, _: &[Uuid]) -> queue::Ask {
        queue::Ask::default()
    }

    fn stored(&self, stored: Stored<'_>) {
        self(stored)
    }
}

/// A writer's [`Listener`].
pub type OnStored = Arc<dyn Listener>;

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
/// after each batch of completions is recorded. `notices` says whether the flushes NOTIFY their
/// followers ([`Notices::Notify`]) or `on_stored` is the only one told ([`Notices::InProcess`]).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pool: sqlx::PgPool,
    worker: Uuid,
    mut rx: mpsc::Receiver<WriterMsg>,
    tick: Duration,
    metrics: Metrics,
    completed: Arc<Notify>,
    on_stored: Option<OnStored>,
    notices: Notices,
) {
    let mut chunks: Vec<NewChunk> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut completions: Vec<Completion> = Vec::new();
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    // The writer's own connection: its flushes run on a warm backend (`store::Held`).
    let held = tokio::sync::Mutex::new(crate::store::Held::new(pool));
    while open || !chunks.is_empty() || !completions.is_empty() {
        if open {
            // Wait for a message, or for the tick when output is pending.
            let received = match deadline {
                Some(at) => tokio::select! {
                    m = rx.recv() => Some(m),
                    _ = tokio::time::sleep_until(at) => None,
                },
                // Idle: the kept connection goes back to the pool after `Held::IDLE` without work.
                None if held.lock().await.is_kept() => {
                    match tokio::time::timeout(crate::store::Held::IDLE, rx.recv()).await {
                        Ok(m) => Some(m),
                        Err(_) => {
                            held.lock().await.discard();
                            Some(rx.recv().await)
                        }
                    }
                }
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
        let flusher = Flusher {
            held: &held,
            worker,
            metrics: &metrics,
            notices,
            dropped_bytes: Default::default(),
        };
        for c in &completions {
            crate::timeline!(c.job_id, "writer.flushing");
        }
        let waited = match &on_stored {
            Some(listener) if !completions.is_empty() => {
                let ids: Vec<Uuid> = completions.iter().map(|c| c.job_id).collect();
                listener.waited(&ids)
            }
            _ => queue::Ask::default(),
        };
        let (applied, answers) = flusher.flush(&chunks, &completions, &waited).await;
        for a in &applied {
            crate::timeline!(a.job_id, "writer.stored");
        }
        if applied.len() != completions.len() {
            let stale: Vec<Uuid> = completions
                .iter()
                .map(|c| c.job_id)
                .filter(|id| !applied.iter().any(|a| a.job_id == *id))
                .collect();
            tracing::warn!(
                ?stale,
                "completions not applied: these attempts were taken over (fenced), or even a bare \
                 record of them was refused (logged above)"
            );
        }
        if let Some(tell) = &on_stored {
            let done: Vec<(Uuid, JobState)> = applied.iter().map(|a| (a.job_id, a.state)).collect();
            let mut output: Vec<Uuid> = Vec::new();
            if notices == Notices::InProcess {
                output = chunks.iter().map(|c| c.job_id).collect();
                output.sort_unstable();
                output.dedup();
            }
            tell.stored(Stored {
                output: &output,
                done: &done,
                asked: &waited,
                answers,
            });
        }
        for a in &applied {
            metrics.job_finished(a.state.as_str(), a.reason.as_str());
        }
        metrics
            .log_bytes_stored
            .inc_by(pending_bytes.saturating_sub(flusher.dropped_bytes.into_inner()) as u64);
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

/// A completion as it was stored: the state and reason it recorded (a substitute's, when the
/// one the job reported was refused; see [`Flusher::salvage`]).
struct Applied {
    job_id: Uuid,
    state: JobState,
    reason: OutcomeReason,
}

/// Where a writer stores its flushes: the database, as worker `worker`, counting refusals.
struct Flusher<'a> {
    held: &'a tokio::sync::Mutex<crate::store::Held>,
    worker: Uuid,
    metrics: &'a Metrics,
    notices: Notices,
    /// Output bytes of the chunks dropped as refused (not counted as stored).
    dropped_bytes: AtomicUsize,
}

impl Flusher<'_> {
    /// Stores `chunks` and then `completions` and returns the completions applied (the others
    /// were fenced). Retries while the failure may pass (the database away, a conflict): nothing
    /// is dropped then. When PostgreSQL refuses the values themselves, retrying the same batch
    /// would fail forever and hold every job of this worker back, so the batch is stored job by
    /// job instead ([`Self::isolate`]): the other jobs' items go on, and only the refused job's
    /// items are dropped or replaced ([`Self::salvage`]). The answers `ask` asks for come back
    /// with them, unless the flush had to be stored job by job.
    async fn flush(
        &self,
        chunks: &[NewChunk],
        completions: &[Completion],
        ask: &queue::Ask,
    ) -> (Vec<Applied>, Vec<Answer>) {
        match self.retrying_answering(chunks, completions, ask).await {
            Ok(flushed) => (applied_of(completions, &flushed.applied), flushed.answers),
            Err(e) => {
                tracing::warn!(error = %e, chunks = chunks.len(), completions = completions.len(), "the database refused the values of a flush; storing it job by job");
                (self.isolate(chunks, completions).await, Vec::new())
            }
        }
    }

    /// [`queue::flush`], retried like [`Self::retrying_answering`], asking for no answers: the
    /// completions applied.
    async fn retrying(
        &self,
        chunks: &[NewChunk],
        completions: &[Completion],
    ) -> Result<Vec<Uuid>, StoreError> {
        self.retrying_answering(chunks, completions, &queue::Ask::default())
            .await
            .map(|flushed| flushed.applied)
    }

    /// [`queue::flush_answering`], retried with a backoff (50 ms doubling to 5 s) until it
    /// succeeds or PostgreSQL refuses the values ([`StoreError::refused_values`]), which is
    /// returned.
    async fn retrying_answering(
        &self,
        chunks: &[NewChunk],
        completions: &[Completion],
        ask: &queue::Ask,
    ) -> Result<queue::Flushed, StoreError> {
        let mut delay = Duration::from_millis(50);
        loop {
            let flushed = {
                let mut held = self.held.lock().await;
                let flushed = match held.conn().await {
                    Ok(conn) => {
                        queue::flush_answering_on(
                            conn,
                            self.worker,
                            chunks,
                            completions,
                            self.notices,
                            ask,
                        )
                        .await
                    }
                    Err(e) => Err(e.into()),
                };
                if flushed.is_err() {
                    held.discard();
                } else {
                    held.relieve();
                }
                flushed
            };
            match flushed {
                Ok(flushed) => return Ok(flushed),
                Err(e) if e.refused_values() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, chunks = chunks.len(), completions = completions.len(), "storing log chunks and completions failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Stores a refused batch one job at a time (the job's chunks, then its completion, as one
    /// flush), in the order the jobs first appear; a job's flush refused again is salvaged.
    async fn isolate(&self, chunks: &[NewChunk], completions: &[Completion]) -> Vec<Applied> {
        let mut jobs: Vec<Uuid> = Vec::new();
        let mut seen = HashSet::new();
        for id in chunks
            .iter()
            .map(|c| c.job_id)
            .chain(completions.iter().map(|c| c.job_id))
        {
            if seen.insert(id) {
                jobs.push(id);
            }
        }
        let mut applied = Vec::new();
        for job in jobs {
            let its_chunks: Vec<NewChunk> =
                chunks.iter().filter(|c| c.job_id == job).cloned().collect();
            let its_completion: Vec<Completion> = completions
                .iter()
                .filter(|c| c.job_id == job)
                .cloned()
                .collect();
            match self.retrying(&its_chunks, &its_completion).await {
                Ok(ids) => applied.extend(applied_of(&its_completion, &ids)),
                Err(e) => {
                    tracing::warn!(%job, error = %e, "the database refused this job's items; storing them one by one");
                    applied.extend(self.salvage(&its_chunks, &its_completion).await)
                }
            }
        }
        applied
    }

    /// One job's refused items. Its chunks are stored one by one and those refused are dropped
    /// (the job's log has a gap there). Its completion, if refused, is replaced by one that ends
    /// the attempt as an internal error saying why (with the bill, then without it if that is
    /// refused too): the job ends with a record instead of holding its slot forever. If even that
    /// is refused, the job is left running; the slot frees, its lease is no longer renewed and
    /// the rescuer takes it like a lost worker's.
    async fn salvage(&self, chunks: &[NewChunk], completions: &[Completion]) -> Vec<Applied> {
        for c in chunks {
            if let Err(e) = self.retrying(std::slice::from_ref(c), &[]).await {
                tracing::error!(job = %c.job_id, attempt = c.attempt, seq = c.seq, bytes = c.data.len(), error = %e, "the database refused a chunk of a job's output; it is dropped");
                self.refused("chunk");
                self.dropped_bytes
                    .fetch_add(c.data.len(), Ordering::Relaxed);
            }
        }
        let mut applied = Vec::new();
        for c in completions {
            let mut error = match self.retrying(&[], std::slice::from_ref(c)).await {
                Ok(ids) => {
                    applied.extend(applied_of(std::slice::from_ref(c), &ids));
                    continue;
                }
                Err(e) => e,
            };
            tracing::error!(job = %c.job_id, attempt = c.attempt, error = %error, "the database refused a job's result; storing it as an internal error");
            self.refused("completion");
            let mut substitute = Completion {
                state: JobState::Error,
                retry_after: None,
                reason: OutcomeReason::InternalError,
                exit_code: None,
                signal: None,
                detail: None,
                tests: None,
                ..c.clone()
            };
            for keep_usage in [true, false] {
                if !keep_usage {
                    substitute.usage = Usage::default();
                }
                // The second try says less: the refusal's own text could be what was refused.
                substitute.detail = Some(if keep_usage {
                    format!(
                        "the worker could not store this attempt's result: the database refused \
                         it ({error}); its exit status and test results are lost"
                    )
                } else {
                    "the worker could not store this attempt's result: the database refused it \
                     (the worker's log says why); its exit status, test results and bill are lost"
                        .to_string()
                });
                match self.retrying(&[], std::slice::from_ref(&substitute)).await {
                    Ok(ids) => {
                        applied.extend(applied_of(std::slice::from_ref(&substitute), &ids));
                        break;
                    }
                    Err(e) if keep_usage => error = e,
                    Err(e) => {
                        tracing::error!(job = %c.job_id, attempt = c.attempt, error = %e, "the database refused even a bare internal-error record for this job; leaving it to the rescuer")
                    }
                }
            }
        }
        applied
    }

    fn refused(&self, item: &str) {
        self.metrics
            .writes_refused
            .get_or_create(&ItemLabels { item: item.into() })
            .inc();
    }
}

/// The completions of `completions` whose jobs `ids` names, as stored.
fn applied_of(completions: &[Completion], ids: &[Uuid]) -> Vec<Applied> {
    completions
        .iter()
        .filter(|c| ids.contains(&c.job_id))
        .map(|c| Applied {
            job_id: c.job_id,
            state: c.state,
            reason: c.reason,
        })
        .collect()
}
