//! The worker's side of the queue: claim, heartbeat, complete, log chunks, rescue, requeue on
//! shutdown, retention. Every statement here is a single round trip; every write a worker makes
//! is fenced by `(job, attempt, worker_id, state = 'running')`.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::jobs::Answer;
use super::{CHANNEL_JOBS, CHANNEL_LOGS, CHANNEL_STATE, StoreError};
use crate::model::{ChunkKind, JobState, OutcomeReason, Usage};

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A job a worker now owns for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub attempt: i32,
    pub max_attempts: i32,
    pub queue_wait: Duration,
    pub spec: serde_json::Value,
    /// The job's tenant (the worker's writer lanes are chosen by it).
    pub tenant: String,
    /// The job's trace context: its `job.submit` span (None for jobs stored before tracing).
    pub trace: Option<crate::telemetry::TraceParent>,
}

impl Claimed {
    /// Whether the job may run in a container, and so takes a container slot
    /// ([`runs_in_container`]).
    pub fn runs_in_container(&self) -> bool {
        runs_in_container(&self.spec)
    }
}

/// Whether a stored job spec may run in a container, and so takes a container slot: an image job
/// (`program.kind` is `image`, or, in rows written before the spec was versioned, an `image`
/// field) whose `runtime` is not `wasm`. An image on `auto` counts although it may turn out to
/// hold a Wasm module: that is known only once it is pulled, after the claim. The claim's
/// container cap reads the spec by the same rule (migrations/0019_container_slots.sql).
pub fn runs_in_container(spec: &serde_json::Value) -> bool {
    let image = spec.pointer("/program/kind").and_then(|k| k.as_str()) == Some("image")
        || spec.get("image").is_some();
    image && spec.get("runtime").and_then(|r| r.as_str()) != Some("wasm")
}

/// Claims up to `limit` runnable jobs from `queue` for `worker`, each with a lease of `lease`,
/// sharing them fairly among the tenants with work there (docs/queue.md, "Fair claims across
/// tenants"): by weight, least-served first, never past a tenant's `max_running` however many
/// workers claim at once; priority, then `run_at`, then id within a tenant. One statement: the
/// SQL function `nekton_claim` (migrations/0005_fair_claim.sql, 0015) locks the capped tenants it
/// may serve, then, with a snapshot taken after those locks, picks with SKIP LOCKED, moves the
/// jobs to `running` with `attempt + 1` and their lease (`jobs.lease_expires_at`) and returns the
/// specs.
///
/// A claim that took jobs commits without waiting for its WAL flush (`synchronous_commit` off
/// for its transaction only): the job's next durable write — its output or its completion, whose
/// commits wait for the flush of all WAL before them, the claim's included — makes it durable.
/// A crash of PostgreSQL before that loses the claim, never a job or a result: the job is
/// waiting again as before, and the worker's writes for the lost attempt match no row (the
/// fence), like after a rescue (docs/operations.md, "Delivery guarantees"). The job's start
/// then costs no fsync (~3 ms on the machine of load-tests/README.md).
pub async fn claim<'e>(
    db: impl sqlx::PgExecutor<'e>,
    worker: Uuid,
    queue: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    claim_kinds(db, worker, queue, limit, None, lease).await
}

/// [`claim`] with at most `containers` image (container) jobs among the jobs claimed (`None`: no
/// cap): the claim picks and shares as [`claim`] does, then leaves the image jobs past the cap
/// waiting in their place (migrations/0019_container_slots.sql). A worker passes its free
/// container slots here ([`runs_in_container`] tells which jobs take one).
pub async fn claim_kinds<'e>(
    db: impl sqlx::PgExecutor<'e>,
    worker: Uuid,
    queue: &str,
    limit: i64,
    containers: Option<i64>,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let containers = containers.map(|c| i32::try_from(c.max(0)).unwrap_or(i32::MAX));
    let rows = sqlx::query(
        "SELECT id, attempt, max_attempts, wait_ms, spec, tenant_id, traceparent, \
             set_config('synchronous_commit', 'off', true) AS async_commit \
         FROM nekton_claim($1, $2, $3, $4, $5)",
    )
    .bind(queue)
    .bind(limit)
    .bind(worker)
    .bind(ms(lease))
    .bind(containers)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let wait: i64 = r.try_get("wait_ms")?;
            Ok(Claimed {
                id: r.try_get("id")?,
                attempt: r.try_get("attempt")?,
                max_attempts: r.try_get("max_attempts")?,
                queue_wait: Duration::from_millis(wait.max(0) as u64),
                spec: r.try_get("spec")?,
                tenant: r.try_get("tenant_id")?,
                trace: r
                    .try_get::<Option<String>, _>("traceparent")?
                    .as_deref()
                    .and_then(crate::telemetry::TraceParent::parse),
            })
        })
        .collect()
}

/// Renews the leases of `jobs` held by `worker`. Returns, for each job whose lease is still this
/// worker's, whether a cancel was requested. A job missing from the answer was taken away (its
/// lease expired and it was rescued): the worker must stop it; its writes apply nothing anyway.
/// The lease is the job row's `lease_expires_at` (migration 0015), which no index covers, so a
/// renewal is a HOT update.
pub async fn heartbeat(
    pool: &PgPool,
    worker: Uuid,
    jobs: &[Uuid],
    lease: Duration,
) -> Result<Vec<(Uuid, bool)>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() + $3 * interval '1 millisecond' \
         WHERE id = ANY($2) AND worker_id = $1 AND state = 'running' \
         RETURNING id AS job_id, cancel_requested",
    )
    .bind(worker)
    .bind(jobs)
    .bind(ms(lease))
    // Planned at every execution: a generic plan made while `jobs` was small would scan it (see
    // `FLUSH`; the heartbeat's statement is not worth a function of its own).
    .persistent(false)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("job_id")?, r.try_get("cancel_requested")?)))
        .collect()
}

/// Among `jobs`, those whose cancel was requested (the cheap, frequent backup to NOTIFY).
pub async fn cancel_requested(pool: &PgPool, jobs: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1) AND cancel_requested")
            .bind(jobs)
            .fetch_all(pool)
            .await?,
    )
}

/// The end of one attempt, as the worker reports it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub job_id: Uuid,
    pub attempt: i32,
    /// The state to move to: a final state, or `scheduled` for a retry.
    pub state: JobState,
    /// For `scheduled`: how long until the retry may run.
    pub retry_after: Option<Duration>,
    pub reason: OutcomeReason,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub detail: Option<String>,
    /// The usage bill (stored as JSON).
    pub usage: Usage,
    /// A test suite's summary (stored as JSON in `job_attempts.tests`).
    pub tests: Option<crate::grading::SuiteSummary>,
}

/// Most completions per statement (keeps the NOTIFY payload under PostgreSQL's 8000 bytes: at
/// most 150 × `state,id,` = 150 × 47 bytes).
pub const MAX_COMPLETIONS_PER_STATEMENT: usize = 150;

/// The writer's one statement (migration 0016, `nekton_flush`): completions `$2`..`$10`, `$12`
/// (one array element per completion) of worker `$1`, applied where the fence holds, and chunks
/// `$13`..`$17` stored under the same fence; NOTIFYs on `$18` (logs) then `$11` (state). Returns
/// `ids` (the completions applied) and `chunks` (the chunks stored). [`flush`], [`complete`] and
/// [`insert_chunks`] are all this statement (the latter two with the other side empty), bound
/// by [`bind_completions`], [`bind_chunks`] and the logs channel.
///
/// # Planning
///
/// The statement is a function so that its plan is cached per connection and stays on the
/// indexes: sent as a named statement it got a cached generic plan after five executions, and a
/// connection that made it while `jobs` was small kept `Seq Scan on jobs` (the `worker_id`/`state`
/// filter) after the table had grown to hundreds of thousands of rows (load-tests/README.md,
/// issue 4); sent unnamed it was parsed and planned at every execution. The function's settings
/// (`enable_seqscan` off) keep its generic plan on `jobs_pkey`. Checked by
/// `services/tests/queue.rs::the_writers_statements_stay_on_the_indexes_as_jobs_grows`.
///
/// `$19`, `$20`: the completed jobs whose ends the caller wants read back ([`Ask`], migrations
/// 0021 and 0022): their final records (and for `$19` the first [`ANSWER_CHUNKS`] chunks of
/// output) come back as rows after the first.
const FLUSH: &str = "SELECT * FROM nekton_flush($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                     $13, $14, $15, $16, $17, $18, $19, $20)";

/// The chunks of output an answer read by the flush carries at most (its `LIMIT`, migration
/// 0021): the same first page as `POST /v1/jobs?wait=` reads itself.
pub const ANSWER_CHUNKS: i64 = 256;

/// The completed jobs of a flush whose ends its caller wants read back by the flush itself, in the
/// same statement, instead of reading them after the commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Each one's final record and first [`ANSWER_CHUNKS`] chunks of output (a
    /// `POST /v1/jobs?wait=` request waits for it).
    pub output: Vec<Uuid>,
    /// Each one's final record alone (an SSE stream follows the job: it sends the record as its
    /// `exit` event and reads the chunks after its own position itself). Its answer carries no
    /// output.
    pub records: Vec<Uuid>,
}

impl Ask {
    pub fn is_empty(&self) -> bool {
        self.output.is_empty() && self.records.is_empty()
    }
}

/// What one flush stored, and the answers it read back.
#[derive(Debug, Default)]
pub struct Flushed {
    /// The jobs whose completions applied (the others were fenced).
    pub applied: Vec<Uuid>,
    /// For each job asked about whose completion applied: its final record and (asked for in
    /// [`Ask::output`]) first [`ANSWER_CHUNKS`] chunks of output, as stored.
    pub answers: Vec<Answer>,
}

/// Whom a worker's writes tell of the output and the state changes they store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notices {
    /// NOTIFY `nekton_logs` and `nekton_state` in the statement: followers may be in any
    /// process.
    Notify,
    /// No NOTIFY: every follower of the database is in the writer's process and is told there,
    /// after the commit (`nekton serve` on its embedded database; docs/queue.md §3). A NOTIFY
    /// would only make PostgreSQL signal every listening backend at the commit.
    InProcess,
}

impl Notices {
    /// The channel to bind for `channel` (NULL: no NOTIFY there, migration 0021).
    fn channel(self, channel: &'static str) -> Option<&'static str> {
        match self {
            Notices::Notify => Some(channel),
            Notices::InProcess => None,
        }
    }
}

/// Runs [`FLUSH`] on `conn`: (completions applied, chunks stored, the answers `ask` asked for).
async fn run_flush(
    conn: &mut sqlx::PgConnection,
    worker: Uuid,
    chunks: &[NewChunk],
    completions: &[Completion],
    notices: Notices,
    ask: &Ask,
) -> Result<(Vec<Uuid>, u64, Vec<Answer>), StoreError> {
    let rows = bind_chunks(
        bind_completions(sqlx::query(FLUSH), worker, completions, notices)?,
        chunks,
    )
    .bind(notices.channel(CHANNEL_LOGS))
    .bind(&ask.output)
    .bind(&ask.records)
    .fetch_all(&mut *conn)
    .await?;
    let Some((first, answers)) = rows.split_first() else {
        return Err(StoreError::Corrupt(
            "the flush function returned no row (migration 0021 always returns one)".into(),
        ));
    };
    let stored: i64 = first.try_get("chunks")?;
    let answers = answers
        .iter()
        .map(super::jobs::answer_from_row)
        .collect::<Result<_, _>>()?;
    Ok((
        first.try_get("ids")?,
        u64::try_from(stored).unwrap_or(0),
        answers,
    ))
}

/// Binds the five chunk arrays of [`FLUSH`] (`$13`..`$17`), in its order.
fn bind_chunks<'q>(query: PgQuery<'q>, chunks: &'q [NewChunk]) -> PgQuery<'q> {
    query
        .bind(chunks.iter().map(|c| c.job_id).collect::<Vec<Uuid>>())
        .bind(chunks.iter().map(|c| c.attempt).collect::<Vec<i32>>())
        .bind(chunks.iter().map(|c| c.seq).collect::<Vec<i32>>())
        .bind(
            chunks
                .iter()
                .map(|c| c.stream.as_fd())
                .collect::<Vec<i16>>(),
        )
        .bind(
            chunks
                .iter()
                .map(|c| c.data.as_slice())
                .collect::<Vec<&[u8]>>(),
        )
}

/// Records the end of attempts, fenced: a completion applies only if the job is still running
/// this very attempt on this worker. Returns the ids it applied to. NOTIFYs `nekton_state` with
/// each job's new state before its id (`succeeded,<id>,…`, see `model::parse_states`): the
/// caller stores the jobs' last output in the same transaction or before, so a follower told of a
/// final state reads the rest of the output and the record once.
///
/// The statement is [`FLUSH`] with no chunks (see there for how it is planned).
pub async fn complete(
    pool: &PgPool,
    worker: Uuid,
    items: &[Completion],
) -> Result<Vec<Uuid>, StoreError> {
    complete_on(&mut *pool.acquire().await?, worker, items, Notices::Notify).await
}

/// [`complete`] on a given connection (or transaction).
async fn complete_on(
    conn: &mut sqlx::PgConnection,
    worker: Uuid,
    items: &[Completion],
    notices: Notices,
) -> Result<Vec<Uuid>, StoreError> {
    let mut applied = Vec::with_capacity(items.len());
    for part in items.chunks(MAX_COMPLETIONS_PER_STATEMENT) {
        let (done, _, _) = run_flush(conn, worker, &[], part, notices, &Ask::default()).await?;
        applied.extend(done);
    }
    Ok(applied)
}

/// `text` with each NUL replaced by U+FFFD: PostgreSQL's text cannot hold NUL (and its jsonb
/// refuses `\u0000`), and a detail or a build's output is partly the job's to choose — a job
/// printing a NUL must not make its result unstorable.
fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A suite summary as the JSON `job_attempts.tests` stores, its strings [`without_nul`].
fn suite_json(summary: &crate::grading::SuiteSummary) -> Result<String, serde_json::Error> {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                if let Cow::Owned(clean) = without_nul(s) {
                    *s = clean;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
            serde_json::Value::Object(map) => {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, mut v)| {
                        scrub(&mut v);
                        (without_nul(&k).into_owned(), v)
                    })
                    .collect();
            }
            _ => {}
        }
    }
    let json = serde_json::to_string(summary)?;
    // serde_json writes a NUL only as this escape (a backslash before it would be doubled and is
    // only a false alarm here).
    if !json.contains("\\u0000") {
        return Ok(json);
    }
    let mut value = serde_json::to_value(summary)?;
    scrub(&mut value);
    serde_json::to_string(&value)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `$1`..`$12` of [`FLUSH`]: the worker, one array per field of `part`, and the state
/// channel (`$11`, NULL for [`Notices::InProcess`]).
fn bind_completions<'q>(
    query: PgQuery<'q>,
    worker: Uuid,
    part: &'q [Completion],
    notices: Notices,
) -> Result<PgQuery<'q>, StoreError> {
    let usages: Vec<String> = part
        .iter()
        .map(|c| serde_json::to_string(&c.usage))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Corrupt(format!("usage bill not serialisable: {e}")))?;
    let tests: Vec<Option<String>> = part
        .iter()
        .map(|c| c.tests.as_ref().map(suite_json).transpose())
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Corrupt(format!("suite summary not serialisable: {e}")))?;
    Ok(query
        .bind(worker)
        .bind(part.iter().map(|c| c.job_id).collect::<Vec<Uuid>>())
        .bind(part.iter().map(|c| c.attempt).collect::<Vec<i32>>())
        .bind(part.iter().map(|c| c.state.as_str()).collect::<Vec<&str>>())
        .bind(
            part.iter()
                .map(|c| c.retry_after.map(ms))
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(
            part.iter()
                .map(|c| c.reason.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(
            part.iter()
                .map(|c| c.exit_code)
                .collect::<Vec<Option<i32>>>(),
        )
        .bind(part.iter().map(|c| c.signal).collect::<Vec<Option<i32>>>())
        .bind(
            part.iter()
                .map(|c| c.detail.as_deref().map(without_nul))
                .collect::<Vec<Option<Cow<'_, str>>>>(),
        )
        .bind(usages)
        .bind(notices.channel(CHANNEL_STATE))
        .bind(tests))
}

/// A worker writer's flush: `chunks`, then `completions`, committed together when there are
/// completions (one commit, so one wait for the WAL flush, per batch of finished jobs; a job's
/// output is stored no later than its end either way). Returns the ids the completions applied to.
///
/// Up to [`MAX_COMPLETIONS_PER_STATEMENT`] completions go with the chunks in **one statement**
/// (autocommit, the function `nekton_flush` of migration 0016): the chunks' insert and the
/// completions' update are sub-statements of one WITH, so one round trip instead of BEGIN, two
/// statements and COMMIT, and a plan cached per connection instead of one made per flush. All its
/// sub-statements see the same snapshot, so the chunks' fence sees the jobs still running, as the
/// separate insert before the completion did; the NOTIFYs are the same two, logs then state, with
/// the same payloads. More completions than that: the chunks and every batch of completions in
/// one transaction, as before. With [`Notices::InProcess`] nothing is NOTIFYed: the caller tells
/// its followers once this returns.
pub async fn flush(
    pool: &PgPool,
    worker: Uuid,
    chunks: &[NewChunk],
    completions: &[Completion],
    notices: Notices,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(
        flush_answering(pool, worker, chunks, completions, notices, &Ask::default())
            .await?
            .applied,
    )
}

/// [`flush`], reading back the answers of the completed jobs `ask` names (a request or a stream
/// in this process waits for them) in the same statement: each one's final record and, for
/// [`Ask::output`], first [`ANSWER_CHUNKS`] chunks of output as stored, without a read after the
/// commit. Only a flush
/// of at most [`MAX_COMPLETIONS_PER_STATEMENT`] completions answers; a larger one leaves its
/// waiters to read.
pub async fn flush_answering(
    pool: &PgPool,
    worker: Uuid,
    chunks: &[NewChunk],
    completions: &[Completion],
    notices: Notices,
    ask: &Ask,
) -> Result<Flushed, StoreError> {
    flush_answering_on(
        &mut *pool.acquire().await?,
        worker,
        chunks,
        completions,
        notices,
        ask,
    )
    .await
}

/// [`flush_answering`] on a given connection (a writer's own: [`super::Held`]).
pub async fn flush_answering_on(
    conn: &mut sqlx::PgConnection,
    worker: Uuid,
    chunks: &[NewChunk],
    completions: &[Completion],
    notices: Notices,
    ask: &Ask,
) -> Result<Flushed, StoreError> {
    if completions.is_empty() {
        if !chunks.is_empty() {
            insert_chunks_on(conn, worker, chunks, notices).await?;
        }
        return Ok(Flushed::default());
    }
    if completions.len() <= MAX_COMPLETIONS_PER_STATEMENT {
        let (applied, _, answers) =
            run_flush(conn, worker, chunks, completions, notices, ask).await?;
        return Ok(Flushed { applied, answers });
    }
    let mut tx = sqlx::Connection::begin(conn).await?;
    insert_chunks_on(&mut tx, worker, chunks, notices).await?;
    let applied = complete_on(&mut tx, worker, completions, notices).await?;
    tx.commit().await?;
    Ok(Flushed {
        applied,
        answers: Vec::new(),
    })
}

/// A piece of a job's output, numbered per attempt from 1.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub job_id: Uuid,
    pub attempt: i32,
    pub seq: i32,
    pub stream: ChunkKind,
    pub data: Vec<u8>,
}

/// Stores output chunks of many jobs in one statement ([`FLUSH`] with no completions), fenced
/// like every worker write, and NOTIFYs the ids of the jobs that got output. Returns the number
/// of chunks stored.
pub async fn insert_chunks(
    pool: &PgPool,
    worker: Uuid,
    chunks: &[NewChunk],
) -> Result<u64, StoreError> {
    if chunks.is_empty() {
        return Ok(0);
    }
    insert_chunks_on(&mut *pool.acquire().await?, worker, chunks, Notices::Notify).await
}

/// [`insert_chunks`] on a given connection (or transaction).
async fn insert_chunks_on(
    conn: &mut sqlx::PgConnection,
    worker: Uuid,
    chunks: &[NewChunk],
    notices: Notices,
) -> Result<u64, StoreError> {
    if chunks.is_empty() {
        return Ok(0);
    }
    let (_, stored, _) = run_flush(conn, worker, chunks, &[], notices, &Ask::default()).await?;
    Ok(stored)
}

/// A job the rescuer moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    pub id: Uuid,
    pub attempt: i32,
    pub state: JobState,
}

/// Takes back up to `limit` jobs whose lease expired (their worker died or hung): back to
/// `scheduled` at their place in the queue — `run_at` moves by the backoff (1 s doubling with each
/// loss) from where it was, not from now, so a rescued job is not put behind everything submitted
/// while it ran — while attempts remain and fewer than `max_lost` attempts were lost,
/// else `error` / `worker_lost`; a job whose cancel was requested becomes `cancelled`. Safe to run
/// on every node at once (SKIP LOCKED, state and attempt re-checked in the UPDATE).
///
/// The expired leases are found among the running jobs (`jobs_tenant_running`, a partial index of
/// exactly those rows). The statement is planned at every execution (see [`FLUSH`] for why): a
/// generic plan made while `jobs` was small would scan the whole table at every pass once it has
/// grown.
pub async fn rescue(pool: &PgPool, limit: i64, max_lost: i32) -> Result<Vec<Rescued>, StoreError> {
    let rows = sqlx::query(
        "WITH expired AS ( \
             SELECT id AS job_id, attempt, worker_id FROM jobs \
             WHERE state = 'running' AND lease_expires_at < now() \
             ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED \
         ), moved AS ( \
             UPDATE jobs j SET \
                 lost_count = j.lost_count + 1, worker_id = NULL, lease_expires_at = NULL, \
                 state = (CASE WHEN j.cancel_requested THEN 'cancelled' \
                     WHEN j.attempt < j.max_attempts AND j.lost_count + 1 < $2 THEN 'scheduled' \
                     ELSE 'error' END)::job_state, \
                 run_at = j.run_at + least(300, power(2, j.lost_count)) * interval '1 second', \
                 finished_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts \
                     OR j.lost_count + 1 >= $2 THEN now() END \
             FROM expired e \
             WHERE j.id = e.job_id AND j.attempt = e.attempt AND j.state = 'running' \
             RETURNING j.id, j.attempt, j.state, j.started_at, e.worker_id \
         ), att AS ( \
             INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, reason, detail) \
             SELECT id, attempt, worker_id, started_at, \
                 CASE WHEN state = 'cancelled' THEN 'cancelled' ELSE 'worker_lost' END, \
                 'the worker running this attempt stopped renewing its lease' FROM moved \
             ON CONFLICT (job_id, attempt) DO NOTHING \
         ) \
         SELECT id, attempt, state::text AS state FROM moved",
    )
    .bind(limit)
    .bind(max_lost)
    // Planned at every execution (see above). The state comes back as text: an unnamed statement
    // must not return a type sqlx has not met on this connection yet (`job_state`), since sqlx
    // looks such types up between preparing and running it, which discards the unnamed statement
    // ("unnamed prepared statement does not exist").
    .persistent(false)
    .fetch_all(pool)
    .await?;
    let rescued: Vec<Rescued> = rows
        .iter()
        .map(|r| {
            let state: String = r.try_get("state")?;
            Ok(Rescued {
                id: r.try_get("id")?,
                attempt: r.try_get("attempt")?,
                state: JobState::parse(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!("rescued job in unknown state `{state}`"))
                })?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    if !rescued.is_empty() {
        let ids: Vec<String> = rescued.iter().map(|r| r.id.to_string()).collect();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_STATE)
            .bind(ids.join(","))
            .execute(pool)
            .await?;
    }
    Ok(rescued)
}

/// Puts jobs this worker could not finish (it is shutting down) back in their queue at once, at
/// their place (`run_at` unchanged). The interrupted attempt does not count against
/// `max_attempts`. Returns the ids requeued.
pub async fn requeue(pool: &PgPool, worker: Uuid, jobs: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "WITH moved AS ( \
             UPDATE jobs SET state = 'queued', worker_id = NULL, lease_expires_at = NULL, \
                 max_attempts = max_attempts + 1 \
             WHERE id = ANY($2) AND worker_id = $1 AND state = 'running' \
             RETURNING id, attempt, queue, started_at \
         ), att AS ( \
             INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, reason, detail) \
             SELECT id, attempt, $1, started_at, 'worker_lost', 'the worker shut down before the job finished; requeued' \
             FROM moved ON CONFLICT (job_id, attempt) DO NOTHING \
         ) \
         SELECT id, queue FROM moved",
    )
    .bind(worker)
    .bind(jobs)
    .fetch_all(pool)
    .await?;
    back_in_queue(pool, &rows).await
}

/// Puts jobs handed to `worker` by the API in its process (stored `running` as attempt 1, see
/// [`super::handoff`]) that it never started — it stopped taking jobs first — back in
/// their queue as they were before: waiting, attempt 0, no trace of the handing. Returns the ids
/// put back.
pub async fn return_unstarted(
    pool: &PgPool,
    worker: Uuid,
    jobs: &[Uuid],
) -> Result<Vec<Uuid>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "UPDATE jobs SET state = 'queued', attempt = 0, worker_id = NULL, started_at = NULL, \
             lease_expires_at = NULL \
         WHERE id = ANY($2) AND worker_id = $1 AND state = 'running' AND attempt = 1 \
         RETURNING id, queue",
    )
    .bind(worker)
    .bind(jobs)
    .fetch_all(pool)
    .await?;
    back_in_queue(pool, &rows).await
}

/// The ids of jobs just put back in their queues (rows of `id`, `queue`), after waking the
/// workers of those queues.
async fn back_in_queue(pool: &PgPool, rows: &[PgRow]) -> Result<Vec<Uuid>, StoreError> {
    let mut ids = Vec::new();
    let mut queues = std::collections::BTreeSet::new();
    for r in rows {
        ids.push(r.try_get::<Uuid, _>("id")?);
        queues.insert(r.try_get::<String, _>("queue")?);
    }
    for q in queues {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_JOBS)
            .bind(q)
            .execute(pool)
            .await?;
    }
    Ok(ids)
}

/// The tables holding a job's rows besides `jobs`, by their `job_id`: none has a foreign key to
/// its job (migrations 0010, 0023), so [`prune`] deletes from each of them with the job. Log chunks
/// only from the DEFAULT partition of `log_chunks`: a range partition's chunks go with the whole
/// partition when [`super::partitions::retire`] drops it (nothing reads a job's output once the job
/// is gone).
pub const JOB_CHILDREN: [&str; 7] = [
    "log_chunks_default",
    "job_artifacts",
    "job_artifacts_skipped",
    "artifact_chunks",
    "job_specs",
    "job_attempts",
    "batch_finishes",
];

/// Deletes up to `limit` jobs that finished more than `age` ago with their rows in
/// [`JOB_CHILDREN`] (one statement, the only one that deletes jobs), then the batches left empty.
/// Returns the number of jobs deleted.
pub async fn prune(pool: &PgPool, age: Duration, limit: i64) -> Result<u64, StoreError> {
    let children: String = JOB_CHILDREN
        .iter()
        .enumerate()
        .map(|(i, table)| {
            format!("c{i} AS (DELETE FROM {table} c USING victims v WHERE c.job_id = v.id), ")
        })
        .collect();
    let deleted: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH victims AS ( \
             SELECT id FROM jobs WHERE finished_at < now() - $1 * interval '1 millisecond' \
             ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED \
         ), {children}gone AS ( \
             DELETE FROM jobs j USING victims v WHERE j.id = v.id RETURNING j.id \
         ) \
         SELECT count(*) FROM gone"
    )))
    .bind(ms(age))
    .bind(limit)
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "DELETE FROM batches b WHERE b.created_at < now() - $1 * interval '1 millisecond' \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id)",
    )
    .bind(ms(age))
    .execute(pool)
    .await?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::runs_in_container;

    #[test]
    fn image_jobs_run_in_containers_whichever_version_stored_them() {
        let v1_image = json!({"v": 1, "program": {"kind": "image", "reference": "busybox"}});
        let v1_module = json!({"v": 1, "program": {"kind": "module", "digest": "sha256:00"}});
        let legacy_image = json!({"image": "busybox", "runtime": "container"});
        let legacy_module = json!({"module": "sha256:00", "runtime": "wasm"});
        let wasm_image =
            json!({"v": 1, "program": {"kind": "image", "reference": "w"}, "runtime": "wasm"});
        let auto_image =
            json!({"v": 1, "program": {"kind": "image", "reference": "w"}, "runtime": "auto"});
        assert!(
            !runs_in_container(&wasm_image),
            "a Wasm image named as such runs in-process"
        );
        assert!(
            runs_in_container(&auto_image),
            "an image on auto may be a container"
        );
        assert!(runs_in_container(&v1_image));
        assert!(runs_in_container(&legacy_image));
        assert!(!runs_in_container(&v1_module));
        assert!(!runs_in_container(&legacy_module));
        assert!(!runs_in_container(&json!("not an object")));
    }
}
