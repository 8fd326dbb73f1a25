//! Fan-out of PostgreSQL notifications to this API process's SSE clients. One LISTEN connection
//! per process; each job being watched has a `watch` channel of [`JobSignal`]s, bumped whenever
//! its logs or state change, and telling its followers what kind of change it was: new output
//! only (read the chunks), a state change (read the job), or the job's completion (read the last
//! chunks and the final record, once). Notifications are hints: streams also re-check on a timer,
//! and after a reconnect every watcher is woken (notifications sent while disconnected are lost).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use prometheus_client::metrics::counter::Counter;

use crate::model::{JobRecord, JobState, parse_ids, parse_states};
use crate::store::jobs::Answer;
use crate::store::logs::{self, StoredChunk};
use crate::store::queue::Ask;
use crate::store::{CHANNEL_LOGS, CHANNEL_STATE, StoreError, jobs as store_jobs};

/// What a job's followers are told, through its `watch` channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobSignal {
    /// Bumped by every notification about the job (output stored, state changed) and by a
    /// reconnect of the LISTEN connection.
    pub version: u64,
    /// Bumped by the notifications that change the job's state without saying it finished (a
    /// cancel, a rescue, a retry; bare ids) and by a reconnect: a follower reads the job then.
    /// Output notifications leave it alone: a follower only reads the new chunks for those.
    pub state_changes: u64,
    /// A worker's completion said the job reached a final state. Its output was stored in that
    /// transaction or before, and a final state never changes: a read that starts after this is
    /// seen finds all of the job's output and its final record.
    pub finished: bool,
}

/// What one batch of notifications says about one job.
#[derive(Debug, Default, Clone, Copy)]
struct Change {
    state: bool,
    finished: bool,
}

#[derive(Default)]
struct Inner {
    jobs: Mutex<HashMap<Uuid, watch::Sender<JobSignal>>>,
    /// Bumped on every state change of any job (batch streams watch this).
    any_state: watch::Sender<u64>,
    /// Log reads shared by the followers of a job woken by the same notification.
    chunks: SharedReads<(Uuid, u64, i32, i32), Arc<Vec<StoredChunk>>>,
    /// Job reads shared the same way.
    records: SharedReads<(Uuid, u64), Option<JobRecord>>,
    /// Job records read from the database by [`Hub::job`] (`nekton_sse_job_reads_total`).
    job_reads: Counter,
    /// The jobs a `POST /v1/jobs?wait=` request or an SSE stream here waits for, and their
    /// answers once a writer in this process has stored their end and read them back
    /// ([`Hub::awaiting`], [`Hub::following`]).
    answers: Mutex<HashMap<Uuid, Awaited>>,
}

/// One job's waiting requests and streams, and its answer once stored.
#[derive(Default)]
struct Awaited {
    /// `?wait=` requests: they answer with the record and the output.
    requests: usize,
    /// SSE streams: they end with the record (their `exit` event).
    streams: usize,
    /// A writer here is storing the job's end and will hand its answer over (or say it has
    /// none) right after its commit: a NOTIFY of that commit can arrive first.
    pending: bool,
    /// The flush was asked for the output too (a request waited when it was asked): only then
    /// does the answer serve a request.
    asked_output: bool,
    /// Shared by everyone waiting for the job; dropped with the last of them.
    answer: Option<Arc<Answer>>,
}

/// Who waits for a job's answer ([`Hub::awaiting`], [`Hub::following`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    Request,
    Stream,
}

/// What [`Hub::take_answer`] and [`Hub::final_record`] find for a job.
#[derive(Debug)]
pub enum Taken {
    /// The answer, as the flush that stored the job's end read it back.
    Answer(Arc<Answer>),
    /// A writer here is storing the job's end: its answer comes with the next wake-up.
    Pending,
    /// No answer to come from this process: read it.
    Read,
}

/// A request's or a stream's interest in one job's answer ([`Hub::awaiting`],
/// [`Hub::following`]); withdrawn on drop.
pub struct AwaitsAnswer {
    hub: Hub,
    id: Uuid,
    waiter: Waiter,
}

impl Drop for AwaitsAnswer {
    fn drop(&mut self) {
        let mut answers = self
            .hub
            .inner
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(a) = answers.get_mut(&self.id) {
            match self.waiter {
                Waiter::Request => a.requests = a.requests.saturating_sub(1),
                Waiter::Stream => a.streams = a.streams.saturating_sub(1),
            }
            if a.requests == 0 && a.streams == 0 {
                answers.remove(&self.id);
            }
        }
    }
}

/// Reads shared by everyone who asks with the same key while the first one's read is in flight
/// (single-flight): one query where N followers of a job, woken by the same notification at the
/// same position, would each have made one. The key carries the notification's version, so a
/// result is only ever shared among readers woken by the same (or an earlier) notification: it
/// was read after that notification was sent, so it holds everything the notification announced.
/// Nothing is kept once the callers have their copy (the map holds a `Weak`), and a failed read
/// is not shared (a caller that waited then reads for itself).
pub struct SharedReads<K, V> {
    cells: Mutex<HashMap<K, Weak<tokio::sync::OnceCell<V>>>>,
}

impl<K, V> Default for SharedReads<K, V> {
    fn default() -> Self {
        Self {
            cells: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> SharedReads<K, V> {
    /// The value under `key`: read by `read` unless a read for the key is in flight.
    pub async fn get_or_read<E, F, Fut>(&self, key: K, read: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            match cells.get(&key).and_then(Weak::upgrade) {
                Some(cell) => cell,
                None => {
                    cells.retain(|_, cell| cell.strong_count() > 0);
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    cells.insert(key, Arc::downgrade(&cell));
                    cell
                }
            }
        };
        cell.get_or_try_init(read).await.cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.retain(|_, cell| cell.strong_count() > 0);
        cells.len()
    }
}

/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A subscription to one job's changes; unsubscribes on drop.
pub struct JobWatch {
    hub: Hub,
    id: Uuid,
    pub rx: watch::Receiver<JobSignal>,
    /// The signal when the subscription began.
    pub subscribed: JobSignal,
}

impl JobWatch {
    /// The job watched.
    pub fn id(&self) -> Uuid {
        self.id
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut jobs = self
            .hub
            .inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = jobs.get(&self.id) {
            // Our own receiver is still alive here: 1 means nobody else watches.
            if tx.receiver_count() <= 1 {
                jobs.remove(&self.id);
            }
        }
    }
}

impl Hub {
    /// A hub whose job reads count in `job_reads`.
    pub fn new(job_reads: Counter) -> Self {
        Self {
            inner: Arc::new(Inner {
                job_reads,
                ..Inner::default()
            }),
        }
    }

    /// Subscribes to job `id`'s changes. Subscribe before the first read of the job: every
    /// notification after that is seen.
    pub fn watch_job(&self, id: Uuid) -> JobWatch {
        let mut jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let rx = jobs
            .entry(id)
            .or_insert_with(|| watch::channel(JobSignal::default()).0)
            .subscribe();
        let subscribed = *rx.borrow();
        JobWatch {
            hub: self.clone(),
            id,
            rx,
            subscribed,
        }
    }

    /// Up to `limit` chunks of job `id` after `after`. For a follower woken by notification
    /// `Some(version)` of the job, the read is shared with the job's other followers at the same
    /// place; `None` (a first read, a timer's recheck) reads for itself.
    pub async fn chunks_after(
        &self,
        pool: &PgPool,
        id: Uuid,
        version: Option<u64>,
        after: (i32, i32),
        limit: i64,
    ) -> Result<Arc<Vec<StoredChunk>>, StoreError> {
        let read = || async {
            logs::chunks_after(pool, id, after, limit)
                .await
                .map(Arc::new)
        };
        match version {
            Some(v) => {
                self.inner
                    .chunks
                    .get_or_read((id, v, after.0, after.1), read)
                    .await
            }
            None => read().await,
        }
    }

    /// Job `id` of `tenant`, shared like [`Hub::chunks_after`] for `Some(version)` (a job has
    /// one tenant, checked when each stream began).
    pub async fn job(
        &self,
        pool: &PgPool,
        tenant: &str,
        id: Uuid,
        version: Option<u64>,
    ) -> Result<Option<JobRecord>, StoreError> {
        let read = || {
            self.inner.job_reads.inc();
            store_jobs::get(pool, tenant, id)
        };
        match version {
            Some(v) => self.inner.records.get_or_read((id, v), read).await,
            None => read().await,
        }
    }

    pub fn watch_any_state(&self) -> watch::Receiver<u64> {
        self.inner.any_state.subscribe()
    }

    /// Adds what a notification on `channel` with `payload` says to `changes`; true if it was
    /// about states.
    fn collect(channel: &str, payload: &str, changes: &mut HashMap<Uuid, Change>) -> bool {
        if channel == CHANNEL_STATE {
            for (id, state) in parse_states(payload) {
                let c = changes.entry(id).or_default();
                match state {
                    Some(s) if s.is_terminal() => c.finished = true,
                    _ => c.state = true,
                }
            }
            true
        } else {
            for id in parse_ids(payload) {
                changes.entry(id).or_default();
            }
            false
        }
    }

    /// Tells the followers of each job in `changes` at once (a job's chunks and its completion
    /// arrive as two notifications of one transaction: its followers see both in one wake-up).
    fn apply(&self, changes: &HashMap<Uuid, Change>) {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for (id, change) in changes {
            if let Some(tx) = jobs.get(id) {
                tx.send_modify(|s| {
                    s.version += 1;
                    s.state_changes += u64::from(change.state);
                    s.finished |= change.finished;
                });
            }
        }
    }

    /// Registers a request waiting for job `id`'s answer (its final record and first output):
    /// a writer in this process that stores the job's end reads it back in the same statement
    /// ([`Hub::waited`]) and hands it over ([`Hub::stored_locally`]), so the request need not read
    /// it after the commit ([`Hub::take_answer`]).
    pub fn awaiting(&self, id: Uuid) -> AwaitsAnswer {
        self.register(id, Waiter::Request)
    }

    /// Registers an SSE stream following job `id` to its end: like [`Hub::awaiting`], but the
    /// flush reads back the final record alone ([`Ask::records`]) — the stream reads the chunks
    /// after its own position itself — and the stream takes it with [`Hub::final_record`]
    /// instead of reading the job again.
    pub fn following(&self, id: Uuid) -> AwaitsAnswer {
        self.register(id, Waiter::Stream)
    }

    fn register(&self, id: Uuid, waiter: Waiter) -> AwaitsAnswer {
        let mut answers = self.inner.answers.lock().unwrap_or_else(|p| p.into_inner());
        let a = answers.entry(id).or_default();
        match waiter {
            Waiter::Request => a.requests += 1,
            Waiter::Stream => a.streams += 1,
        }
        AwaitsAnswer {
            hub: self.clone(),
            id,
            waiter,
        }
    }

    /// Of `ids` (jobs whose end a writer here is about to store), the jobs a request (record and
    /// output) or only streams (record) here wait for; their answers are pending until that
    /// writer's [`Hub::stored_locally`].
    pub fn waited(&self, ids: &[Uuid]) -> Ask {
        let mut answers = self.inner.answers.lock().unwrap_or_else(|p| p.into_inner());
        let mut ask = Ask::default();
        for id in ids {
            if let Some(a) = answers.get_mut(id) {
                a.pending = true;
                a.answer = None;
                a.asked_output = a.requests > 0;
                if a.asked_output {
                    ask.output.push(*id);
                } else {
                    ask.records.push(*id);
                }
            }
        }
        ask
    }

    /// Job `id`'s answer for a waiting request, as the flush that stored its end read it back
    /// (record and output), or whether one is still to come.
    pub fn take_answer(&self, id: Uuid) -> Taken {
        self.answer_for(id, Waiter::Request)
    }

    /// Job `id`'s final record for a stream following it, as the flush that stored its end read
    /// it back (its answer's output, if any, is not the stream's business), or whether one is
    /// still to come.
    pub fn final_record(&self, id: Uuid) -> Taken {
        self.answer_for(id, Waiter::Stream)
    }

    fn answer_for(&self, id: Uuid, waiter: Waiter) -> Taken {
        let answers = self.inner.answers.lock().unwrap_or_else(|p| p.into_inner());
        match answers.get(&id) {
            // An answer without output cannot serve a request (it registered after the flush
            // was asked).
            Some(a) => match &a.answer {
                Some(answer) if waiter == Waiter::Stream || a.asked_output => {
                    Taken::Answer(answer.clone())
                }
                Some(_) => Taken::Read,
                None if a.pending => Taken::Pending,
                None => Taken::Read,
            },
            None => Taken::Read,
        }
    }

    /// Tells the followers of jobs whose output (`output`) or completions (`done`) a worker in
    /// this process has just stored (committed: a read that starts now sees them), without
    /// waiting for the same news to come back through PostgreSQL's NOTIFY and the LISTEN
    /// connection, and keeps the `answers` the flush read back for the jobs it was `asked` about
    /// ([`Hub::waited`]) for their waiting requests, before waking them (a job asked about but
    /// not answered — its completion was fenced — wakes its requests to read). When the writer
    /// sent a NOTIFY too, it can arrive before or after; a follower that has already finished is
    /// gone by then.
    pub fn stored_locally(
        &self,
        output: &[Uuid],
        done: &[(Uuid, JobState)],
        asked: &Ask,
        answers: Vec<Answer>,
    ) {
        let mut unanswered = Vec::new();
        if !asked.is_empty() {
            let mut awaited = self.inner.answers.lock().unwrap_or_else(|p| p.into_inner());
            for answer in answers {
                // Only jobs still waited for (a request that has gone left nothing to fill), and
                // only a final record: a retry's answers nobody (it wakes them as a state change).
                if let Some(a) = awaited.get_mut(&answer.0.id)
                    && answer.0.state.is_terminal()
                {
                    a.answer = Some(Arc::new(answer));
                }
            }
            for id in asked.output.iter().chain(&asked.records) {
                if let Some(a) = awaited.get_mut(id) {
                    a.pending = false;
                    if a.answer.is_none() {
                        unanswered.push(*id);
                    }
                }
            }
        }
        if output.is_empty() && done.is_empty() && unanswered.is_empty() {
            return;
        }
        let mut changes: HashMap<Uuid, Change> = output
            .iter()
            .map(|&id| (id, Change::default()))
            .chain(unanswered.iter().map(|&id| {
                (
                    id,
                    Change {
                        state: true,
                        finished: false,
                    },
                )
            }))
            .collect();
        for &(id, state) in done {
            let finished = state.is_terminal();
            let c = changes.entry(id).or_default();
            c.state |= !finished;
            c.finished |= finished;
        }
        self.apply(&changes);
        if !done.is_empty() {
            self.inner.any_state.send_modify(|v| *v += 1);
        }
    }

    #[cfg(test)]
    fn bump(&self, id: Uuid) {
        self.apply(&HashMap::from([(id, Change::default())]));
    }

    fn bump_all(&self) {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for tx in jobs.values() {
            tx.send_modify(|s| {
                s.version += 1;
                s.state_changes += 1;
            });
        }
        self.inner.any_state.send_modify(|v| *v += 1);
    }

    /// Holds the LISTEN connection until `stop` fires, reconnecting as needed.
    pub async fn run(self, pool: PgPool, stop: CancellationToken) {
        loop {
            let listener = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen_all([CHANNEL_LOGS, CHANNEL_STATE]).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "log LISTEN connection failed; streams poll meanwhile");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
                }
            };
            self.bump_all();
            loop {
                let n =
                    tokio::select! { _ = stop.cancelled() => return, n = listener.try_recv() => n };
                match n {
                    Ok(Some(n)) => {
                        // With the notifications already received behind it.
                        let mut changes = HashMap::new();
                        let mut states = Self::collect(n.channel(), n.payload(), &mut changes);
                        while let Some(n) = listener.next_buffered() {
                            states |= Self::collect(n.channel(), n.payload(), &mut changes);
                        }
                        self.apply(&changes);
                        if states {
                            self.inner.any_state.send_modify(|v| *v += 1);
                        }
                    }
                    Ok(None) => self.bump_all(),
                    Err(e) => {
                        tracing::warn!(error = %e, "log LISTEN connection failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn readers_with_one_key_share_one_read_and_nothing_is_kept_after() {
        let shared: SharedReads<u32, Arc<String>> = SharedReads::default();
        let reads = AtomicUsize::new(0);
        let read = |text: &'static str| {
            let reads = &reads;
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, ()>(Arc::new(text.to_owned()))
            }
        };
        let (a, b, c) = tokio::join!(
            shared.get_or_read(1, read("one")),
            shared.get_or_read(1, read("not read")),
            shared.get_or_read(2, read("two")),
        );
        let texts = [a, b, c].map(|r| r.unwrap().as_str().to_owned());
        assert_eq!(texts, ["one", "one", "two"]);
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "key 1 was read once for both"
        );
        assert_eq!(shared.len(), 0, "nobody holds a result: nothing kept");
        let again = shared.get_or_read(1, read("fresh")).await.unwrap();
        assert_eq!(again.as_str(), "fresh", "a later reader reads anew");
    }

    #[tokio::test]
    async fn a_failed_read_is_not_shared() {
        let shared: SharedReads<u32, u32> = SharedReads::default();
        // The second reader arrives while the first read is in flight, and waits for it.
        let (first, second) = tokio::join!(
            shared.get_or_read(1, || async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err::<u32, &str>("down")
            }),
            shared.get_or_read(1, || async { Ok::<u32, &str>(7) }),
        );
        assert_eq!(first, Err("down"));
        assert_eq!(second, Ok(7), "the waiting reader reads for itself");
    }

    #[test]
    fn followers_learn_what_kind_of_change_woke_them() {
        let hub = Hub::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let wa = hub.watch_job(a);
        let wb = hub.watch_job(b);
        let signal = |w: &JobWatch| *w.rx.borrow();
        // Output of both, in one batch with a's completion and b's retry (bare id).
        let mut changes = HashMap::new();
        assert!(!Hub::collect(
            CHANNEL_LOGS,
            &format!("{a},{b}"),
            &mut changes
        ));
        assert!(Hub::collect(
            CHANNEL_STATE,
            &format!("succeeded,{a},{b}"),
            &mut changes
        ));
        hub.apply(&changes);
        let (sa, sb) = (signal(&wa), signal(&wb));
        assert_eq!((sa.version, sa.state_changes, sa.finished), (1, 0, true));
        assert_eq!((sb.version, sb.state_changes, sb.finished), (1, 1, false));
        // Output alone: only the version moves; a final state stays known.
        let mut changes = HashMap::new();
        Hub::collect(CHANNEL_LOGS, &a.to_string(), &mut changes);
        hub.apply(&changes);
        let sa = signal(&wa);
        assert_eq!((sa.version, sa.state_changes, sa.finished), (2, 0, true));
        // A reconnect: anything may have happened.
        hub.bump_all();
        let sb = signal(&wb);
        assert_eq!((sb.version, sb.state_changes, sb.finished), (2, 2, false));
    }

    #[test]
    fn completions_stored_in_this_process_wake_followers_by_kind() {
        let hub = Hub::default();
        let (done, retried, unwatched) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let wd = hub.watch_job(done);
        let wr = hub.watch_job(retried);
        let any = hub.watch_any_state();
        hub.stored_locally(
            &[],
            &[
                (done, JobState::Failed),
                (retried, JobState::Scheduled),
                (unwatched, JobState::Succeeded),
            ],
            &Ask::default(),
            Vec::new(),
        );
        let (sd, sr) = (*wd.rx.borrow(), *wr.rx.borrow());
        assert_eq!((sd.version, sd.state_changes, sd.finished), (1, 0, true));
        assert_eq!((sr.version, sr.state_changes, sr.finished), (1, 1, false));
        assert!(any.has_changed().unwrap(), "batch streams are told too");
        assert_eq!(
            hub.inner.jobs.lock().unwrap().len(),
            2,
            "an unwatched job leaves nothing behind"
        );
    }

    #[test]
    fn output_stored_in_this_process_wakes_followers_to_read_chunks_only() {
        let hub = Hub::default();
        let (printing, ending) = (Uuid::now_v7(), Uuid::now_v7());
        let wp = hub.watch_job(printing);
        let we = hub.watch_job(ending);
        let mut any = hub.watch_any_state();
        // Output alone: the follower reads chunks, not the job; batch streams are not woken.
        hub.stored_locally(&[printing], &[], &Ask::default(), Vec::new());
        let sp = *wp.rx.borrow();
        assert_eq!((sp.version, sp.state_changes, sp.finished), (1, 0, false));
        assert!(!any.has_changed().unwrap(), "no state changed");
        assert_eq!(
            we.rx.borrow().version,
            0,
            "a job without output is not woken"
        );
        // Output and the end in one flush: one wake-up that says finished.
        hub.stored_locally(
            &[ending],
            &[(ending, JobState::Succeeded)],
            &Ask::default(),
            Vec::new(),
        );
        let se = *we.rx.borrow();
        assert_eq!((se.version, se.state_changes, se.finished), (1, 0, true));
        assert!(any.has_changed().unwrap());
        any.borrow_and_update();
        // Nothing stored: nobody is woken.
        hub.stored_locally(&[], &[], &Ask::default(), Vec::new());
        assert_eq!(wp.rx.borrow().version, 1);
        assert!(!any.has_changed().unwrap());
    }

    fn finished(id: Uuid) -> Answer {
        let record = JobRecord {
            id,
            state: JobState::Succeeded,
            attempt: 1,
            max_attempts: 1,
            queue: "default".into(),
            priority: 0,
            labels: Default::default(),
            batch_id: None,
            program: "sha256:00".into(),
            cancel_requested: false,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: Some(chrono::Utc::now()),
            outcome: None,
            usage: None,
            suite: false,
            trace_id: None,
        };
        (record, Vec::new())
    }

    #[test]
    fn a_waited_jobs_answer_is_pending_from_the_flush_to_its_hand_over() {
        let hub = Hub::default();
        let (answered, fenced, unwaited) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let awaits = [hub.awaiting(answered), hub.awaiting(fenced)];
        let wf = hub.watch_job(fenced);
        // Nothing is pending before a writer asks: a request reads.
        assert!(matches!(hub.take_answer(answered), Taken::Read));
        // The writer asks about the jobs it is about to finish: only waited ones count.
        let asked = hub.waited(&[answered, fenced, unwaited]);
        assert_eq!(
            asked,
            Ask {
                output: vec![answered, fenced],
                records: vec![],
            }
        );
        assert!(matches!(hub.take_answer(answered), Taken::Pending));
        // Its flush answered one; the other's completion was fenced.
        hub.stored_locally(
            &[],
            &[(answered, JobState::Succeeded)],
            &asked,
            vec![finished(answered), finished(unwaited)],
        );
        for _ in 0..2 {
            match hub.take_answer(answered) {
                Taken::Answer(answer) => assert_eq!(answer.0.id, answered),
                other => panic!("every request waiting for the job is answered: {other:?}"),
            }
        }
        assert!(matches!(hub.take_answer(fenced), Taken::Read));
        let sf = *wf.rx.borrow();
        assert_eq!(
            (sf.version, sf.state_changes, sf.finished),
            (1, 1, false),
            "the unanswered job's requests are woken to read"
        );
        assert!(
            hub.inner.answers.lock().unwrap().get(&unwaited).is_none(),
            "an answer nobody waits for is not kept"
        );
        drop(awaits);
        assert!(hub.inner.answers.lock().unwrap().is_empty());
    }

    #[test]
    fn a_followed_job_is_answered_with_its_record_alone_and_a_request_joining_late_reads() {
        let hub = Hub::default();
        let (followed, waited_too) = (Uuid::now_v7(), Uuid::now_v7());
        let streams = [hub.following(followed), hub.following(waited_too)];
        let request = hub.awaiting(waited_too);
        assert!(matches!(hub.final_record(followed), Taken::Read));
        // Streams alone want the record; a request too, the output as well.
        let asked = hub.waited(&[followed, waited_too]);
        assert_eq!(
            asked,
            Ask {
                output: vec![waited_too],
                records: vec![followed],
            }
        );
        assert!(matches!(hub.final_record(followed), Taken::Pending));
        // A request that begins waiting after the flush was asked.
        let late = hub.awaiting(followed);
        hub.stored_locally(
            &[],
            &[
                (followed, JobState::Succeeded),
                (waited_too, JobState::Succeeded),
            ],
            &asked,
            vec![finished(followed), finished(waited_too)],
        );
        match hub.final_record(followed) {
            Taken::Answer(answer) => assert_eq!(answer.0.id, followed),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(hub.take_answer(followed), Taken::Read),
            "the flush read no output for it: the late request reads"
        );
        // The job asked with its output serves its request and its stream.
        assert!(matches!(hub.take_answer(waited_too), Taken::Answer(_)));
        assert!(matches!(hub.final_record(waited_too), Taken::Answer(_)));
        drop(request);
        assert!(
            matches!(hub.final_record(waited_too), Taken::Answer(_)),
            "kept while a stream waits"
        );
        drop((streams, late));
        assert!(hub.inner.answers.lock().unwrap().is_empty());
        // A retry is stored (and read back) like an end, but it answers nobody: the stream is
        // woken as by a state change and reads.
        let retried = Uuid::now_v7();
        let stream = hub.following(retried);
        let watch = hub.watch_job(retried);
        let asked = hub.waited(&[retried]);
        let mut scheduled = finished(retried);
        scheduled.0.state = JobState::Scheduled;
        hub.stored_locally(
            &[],
            &[(retried, JobState::Scheduled)],
            &asked,
            vec![scheduled],
        );
        assert!(matches!(hub.final_record(retried), Taken::Read));
        let s = *watch.rx.borrow();
        assert_eq!((s.state_changes, s.finished), (1, false));
        drop(stream);
    }

    #[test]
    fn watchers_are_removed_when_the_last_one_leaves() {
        let hub = Hub::default();
        let id = Uuid::now_v7();
        let a = hub.watch_job(id);
        let b = hub.watch_job(id);
        hub.bump(id);
        assert!(a.rx.has_changed().unwrap());
        drop(a);
        assert_eq!(hub.inner.jobs.lock().unwrap().len(), 1);
        drop(b);
        assert!(hub.inner.jobs.lock().unwrap().is_empty());
    }
}
