//! Job records as the API reads them: submit (single and batch, with idempotency keys), read,
//! list with keyset pagination, cancel.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use super::logs::StoredChunk;
use super::{CHANNEL_CANCEL, CHANNEL_STATE, StoreError};
use crate::model::tenancy::Tenant;
use crate::model::{
    BatchRecord, JobOutcome, JobRecord, JobState, OutcomeReason, OutputStream, Usage,
};

/// A validated job ready to be stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub queue: String,
    pub priority: i16,
    pub max_attempts: i32,
    pub labels: serde_json::Value,
    /// The module digest or image reference.
    pub program: String,
    /// The resolved spec (defaults applied) the worker will run.
    pub spec: serde_json::Value,
    /// sha256 of the request as the client sent it (for idempotency checks).
    pub spec_hash: Vec<u8>,
    /// A module (digest) the tenant must have stored, checked by [`submit`] in the statement that
    /// stores the job rather than by a round trip of its own before it; None when the caller
    /// checked already (a batch checks each digest once) or the job runs an image.
    pub required_module: Option<String>,
    pub idempotency_key: Option<String>,
    /// The W3C trace context the job keeps (`00-<trace id>-<job.submit span id>-<flags>`,
    /// docs/operations.md "Tracing"); the worker's spans of the job are its children.
    pub traceparent: Option<String>,
}

impl NewJob {
    /// Whether the stored spec is a test suite (`job_specs.suite`, read by listings without
    /// touching the spec itself).
    pub fn is_suite(&self) -> bool {
        self.spec.get("tests").is_some()
    }
}

/// What a submission did.
#[derive(Debug)]
pub enum Submitted {
    Created(Box<JobRecord>),
    /// The idempotency key was seen before with the same request: the original job.
    Replayed(Box<JobRecord>),
    /// The idempotency key was seen before with a different request.
    KeyConflict {
        existing: Uuid,
    },
    /// The tenant's quotas refused it; nothing was stored.
    Refused(super::tenants::Refused),
    /// [`NewJob::required_module`] is not stored for the tenant; nothing was stored.
    ModuleMissing {
        digest: String,
    },
}

const JOB_COLUMNS: &str = "j.id, j.state, j.attempt, j.max_attempts, j.queue, j.priority, j.batch_id, \
    j.cancel_requested, j.created_at, j.started_at, j.finished_at, j.run_at, s.program, s.labels, \
    a.reason, a.exit_code, a.signal, a.detail, a.usage, a.tests, s.suite, s.traceparent";
const JOB_FROM: &str = "FROM jobs j JOIN job_specs s ON s.job_id = j.id \
    LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt";

fn job_from_row(row: &PgRow) -> Result<JobRecord, StoreError> {
    let labels: serde_json::Value = row.try_get("labels")?;
    let labels: BTreeMap<String, String> = serde_json::from_value(labels)
        .map_err(|e| StoreError::Corrupt(format!("job labels: {e}")))?;
    let reason: Option<String> = row.try_get("reason")?;
    let outcome = reason.map(|reason| -> Result<JobOutcome, StoreError> {
        Ok(JobOutcome {
            reason: OutcomeReason::parse(&reason).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "job attempt reason `{reason}` is not one this version knows (written by a \
                     newer nekton? upgrade this process)"
                ))
            })?,
            exit_code: row.try_get("exit_code")?,
            signal: row.try_get("signal")?,
            detail: row.try_get("detail")?,
            tests: row
                .try_get::<Option<serde_json::Value>, _>("tests")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("job test summary: {e}")))?,
        })
    });
    let usage: Option<serde_json::Value> = row.try_get("usage")?;
    let usage = usage
        .map(serde_json::from_value::<Usage>)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("job usage: {e}")))?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        state: row.try_get("state")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        queue: row.try_get("queue")?,
        priority: row.try_get("priority")?,
        labels,
        batch_id: row.try_get("batch_id")?,
        program: row.try_get("program")?,
        cancel_requested: row.try_get("cancel_requested")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: outcome.transpose()?,
        usage,
        suite: row.try_get("suite")?,
        // Jobs stored before tracing have none; a value nekton did not write is not shown.
        trace_id: row
            .try_get::<Option<String>, _>("traceparent")?
            .as_deref()
            .and_then(crate::telemetry::TraceParent::parse)
            .map(|t| t.trace_id_hex()),
    })
}

/// True if a job's program is an image reference (modules are `sha256:<hex>` digests).
fn is_image(program: &str) -> bool {
    !program.starts_with("sha256:")
}

/// A worker a lone submission may be stored `running` on, without a claim: the worker of the
/// submitting process, which has set a slot aside for the job ([`submit`]).
#[derive(Debug, Clone, Copy)]
pub struct HandTo<'a> {
    pub worker: Uuid,
    /// The queues that worker serves: nothing may be waiting in any of them.
    pub queues: &'a [String],
    /// The lease the job starts with, as a claim would give it.
    pub lease: std::time::Duration,
}

/// When a submission's commit waits for its WAL flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitCommit {
    /// Before [`submit`] returns: the answer that names the job may go out at once.
    Flushed,
    /// Later (`synchronous_commit` off for the submission's transaction), for a `?wait=`
    /// submission without an idempotency key: nobody learns the job's id before its answer, and
    /// the answer goes out only after a later flush — the commit that stores the job's end
    /// (which flushes all WAL before it), or [`flush_wal`] when the wait runs out first. A crash
    /// in between loses a job nobody was told of. Only the one-statement path defers; a
    /// submission that takes the transaction path (a tenant with quotas) flushes as before.
    Deferred,
}

/// Makes every commit before it durable: a transaction that writes one WAL record (a logical
/// decoding message, prefix `nekton`, which no table sees) and commits as the server's
/// `synchronous_commit` says, so its commit's flush covers all WAL inserted before it — a
/// [`SubmitCommit::Deferred`] submission's included.
pub async fn flush_wal(db: impl sqlx::PgExecutor<'_>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_logical_emit_message(true, 'nekton', 'flush')")
        .execute(db)
        .await?;
    Ok(())
}

/// Stores one job. With an idempotency key already used by this tenant, nothing is written and
/// the original job (same request) or a conflict (different request) is returned.
/// `wake`: the payload of the wake-up NOTIFY to send inside the insert transaction
/// ([`super::wake_payload`]); None sends none.
///
/// `hand`: a worker that set a slot aside for this job. A plain submission (no quota of its
/// tenant's; a module or an image, with or without an idempotency key) is then stored already
/// `running` on it — attempt 1, its lease, no wake-up — when a claim would have taken it at once
/// anyway (`nekton_may_hand`, migrations/0017: nothing a claim could take now waits in the
/// worker's queues, and the tenant has no `max_running` cap); the returned record says `running`
/// then, and the caller passes the job to that worker. Otherwise the job is stored waiting, as
/// without `hand`.
///
/// `commit`: [`SubmitCommit::Deferred`] lets a plain submission without an idempotency key
/// commit without waiting for its WAL flush; the caller then owes the flush before any answer.
pub async fn submit(
    db: &super::Warm,
    tenant_quota: &Tenant,
    job: NewJob,
    wake: Option<&str>,
    hand: Option<HandTo<'_>>,
    commit: SubmitCommit,
) -> Result<Submitted, StoreError> {
    let pool = db.pool();
    let tenant = tenant_quota.id.as_str();
    let deferred = commit == SubmitCommit::Deferred && job.idempotency_key.is_none();
    if may_be_handed(tenant_quota) {
        // The one statement runs on a connection the API's handlers share, the most recently
        // used (`store::Warm`); after an error it goes back to the pool instead.
        let mut conn = db.conn().await?;
        let submitted = submit_plain(&mut conn, tenant, &job, wake, hand, deferred).await?;
        conn.done();
        if let Some(submitted) = submitted {
            return Ok(submitted);
        }
    }
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "INSERT INTO jobs (id, tenant_id, queue, priority, max_attempts, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
         DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key \
         RETURNING id, (xmax <> 0) AS existed",
    )
    .bind(job.id)
    .bind(tenant)
    .bind(&job.queue)
    .bind(job.priority)
    .bind(job.max_attempts)
    .bind(&job.idempotency_key)
    .fetch_one(&mut *tx)
    .await?;
    let id: Uuid = row.try_get("id")?;
    let existed: bool = row.try_get("existed")?;
    if existed {
        let hash: Vec<u8> = sqlx::query_scalar("SELECT spec_hash FROM job_specs WHERE job_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        if hash != job.spec_hash {
            return Ok(Submitted::KeyConflict { existing: id });
        }
        let existing = get(pool, tenant, id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("job {id} vanished during an idempotent replay"))
        })?;
        return Ok(Submitted::Replayed(Box::new(existing)));
    }
    if let Some(digest) = &job.required_module
        && !super::modules::exists(&mut *tx, tenant, digest).await?
    {
        tx.rollback().await?;
        return Ok(Submitted::ModuleMissing {
            digest: digest.clone(),
        });
    }
    if let Err(r) = super::tenants::admit(&mut tx, tenant_quota, 1).await? {
        tx.rollback().await?;
        return Ok(Submitted::Refused(r));
    }
    if is_image(&job.program) {
        super::tenants::record_images(&mut tx, tenant, std::slice::from_ref(&job.program)).await?;
    }
    sqlx::query(
        "INSERT INTO job_specs (job_id, spec, spec_hash, program, labels, suite, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&job.spec)
    .bind(&job.spec_hash)
    .bind(&job.program)
    .bind(&job.labels)
    .bind(job.is_suite())
    .bind(&job.traceparent)
    .execute(&mut *tx)
    .await?;
    if let Some(payload) = wake {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::CHANNEL_JOBS)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let created = get(pool, tenant, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {id} missing right after insert")))?;
    Ok(Submitted::Created(Box::new(created)))
}

/// Whether [`submit`] tries to store a job of this tenant with one statement — no quota of the
/// tenant's to check — the only path that may hand it to a worker ([`HandTo`]); a caller sets a slot
/// aside only for such a job.
pub fn may_be_handed(tenant_quota: &Tenant) -> bool {
    tenant_quota.submit_rate.is_none() && tenant_quota.max_queued.is_none()
}

/// [`submit`] of a job with nothing to check inside a transaction — no quota of its tenant's — as
/// one statement, committed on its own: the job's row, its spec, its image in the tenant's images
/// (as [`super::tenants::record_images`] does) and the wake-up NOTIFY, returning the record as
/// stored. One round trip and one commit instead of BEGIN, two INSERTs, the NOTIFY, COMMIT and a
/// re-read (the latency of a lone job, load-tests/README.md "Latency floor"). The job's module is
/// checked in the same statement: without it nothing is inserted and no row comes back. With
/// `hand` the same statement decides whether the job starts `running` on that worker (see
/// [`submit`]); a handed job sends no wake-up.
///
/// An idempotency key goes in with the row (`ON CONFLICT DO NOTHING`): a key this tenant used
/// before also stores nothing. `None` then — the job has a key and nothing was stored, for its
/// key or its module — and [`submit`] goes the transactional way, which tells a replay, a key
/// conflict and a missing module apart (a resubmission or a mistake: off the fast path).
async fn submit_plain(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
    job: &NewJob,
    wake: Option<&str>,
    hand: Option<HandTo<'_>>,
    deferred: bool,
) -> Result<Option<Submitted>, StoreError> {
    // The record's columns are `get`'s (the new job has no attempt: its `a` columns are NULL).
    // `deferred` turns `synchronous_commit` off for this statement's transaction only, evaluated
    // with the stored row (no row: nothing was written).
    let sql = format!(
        "WITH h AS ( \
             SELECT $15::uuid AS worker WHERE $15::uuid IS NOT NULL AND nekton_may_hand($16, $2) \
         ), j AS ( \
             INSERT INTO jobs (id, tenant_id, queue, priority, max_attempts, state, attempt, \
                               worker_id, started_at, lease_expires_at, idempotency_key) \
             SELECT $1, $2, $3, $4, $5, \
                    CASE WHEN h.worker IS NULL THEN 'queued' ELSE 'running' END::job_state, \
                    CASE WHEN h.worker IS NULL THEN 0 ELSE 1 END, h.worker, \
                    CASE WHEN h.worker IS NULL THEN NULL ELSE now() END, \
                    CASE WHEN h.worker IS NULL THEN NULL \
                         ELSE now() + $17::bigint * interval '1 millisecond' END, $18 \
             FROM (SELECT 1) one LEFT JOIN h ON true \
             WHERE $14::text IS NULL \
                OR EXISTS (SELECT 1 FROM modules WHERE tenant_id = $2 AND digest = $14) \
             ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING * \
         ), s AS ( \
             INSERT INTO job_specs (job_id, spec, spec_hash, program, labels, suite, traceparent) \
             SELECT j.id, $6, $7, $8, $9, $10, $11 FROM j \
             RETURNING job_id, program, labels, suite, traceparent \
         ), img AS ( \
             INSERT INTO tenant_images (tenant_id, reference) \
             SELECT $2, s.program FROM s WHERE NOT starts_with(s.program, 'sha256:') \
             ON CONFLICT DO NOTHING \
         ), n AS ( \
             SELECT pg_notify($12, $13) FROM j WHERE $13::text IS NOT NULL AND j.state = 'queued' \
         ) \
         SELECT {JOB_COLUMNS}, (SELECT count(*) FROM n) AS notified, \
                CASE WHEN $19 THEN set_config('synchronous_commit', 'off', true) END AS deferred \
         FROM j JOIN s ON s.job_id = j.id \
         LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job.id)
        .bind(tenant)
        .bind(&job.queue)
        .bind(job.priority)
        .bind(job.max_attempts)
        .bind(&job.spec)
        .bind(&job.spec_hash)
        .bind(&job.program)
        .bind(&job.labels)
        .bind(job.is_suite())
        .bind(&job.traceparent)
        .bind(super::CHANNEL_JOBS)
        .bind(wake)
        .bind(&job.required_module)
        .bind(hand.map(|h| h.worker))
        .bind(hand.map(|h| h.queues))
        .bind(hand.map(|h| super::queue::ms(h.lease)))
        .bind(&job.idempotency_key)
        .bind(deferred)
        .fetch_optional(&mut *conn)
        .await?;
    match (row, &job.required_module) {
        (Some(row), _) => Ok(Some(Submitted::Created(Box::new(job_from_row(&row)?)))),
        (None, _) if job.idempotency_key.is_some() => Ok(None),
        (None, Some(digest)) => Ok(Some(Submitted::ModuleMissing {
            digest: digest.clone(),
        })),
        (None, None) => Err(StoreError::Corrupt(format!(
            "job {} was not stored and nothing refused it",
            job.id
        ))),
    }
}

/// What a batch submission did.
#[derive(Debug)]
pub enum BatchSubmitted {
    Created {
        id: Uuid,
        job_ids: Vec<Uuid>,
    },
    Replayed {
        id: Uuid,
        job_ids: Vec<Uuid>,
    },
    KeyConflict {
        existing: Uuid,
    },
    /// The tenant's quotas refused it; nothing was stored.
    Refused(super::tenants::Refused),
}

/// A validated batch ready to be stored.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: Uuid,
    pub labels: serde_json::Value,
    /// sha256 of the request as the client sent it (for idempotency checks).
    pub spec_hash: Vec<u8>,
    pub idempotency_key: Option<String>,
    pub jobs: Vec<NewJob>,
    /// Payloads of the wake-up NOTIFYs to send inside the transaction, one per queue
    /// ([`super::wake_payload`]).
    pub wakes: Vec<String>,
}

/// Stores a batch and all its jobs in one transaction (all or nothing).
pub async fn submit_batch(
    pool: &PgPool,
    tenant_quota: &Tenant,
    batch: &NewBatch,
) -> Result<BatchSubmitted, StoreError> {
    let tenant = tenant_quota.id.as_str();
    let NewBatch {
        id: batch_id,
        labels,
        spec_hash,
        idempotency_key,
        jobs,
        wakes,
    } = batch;
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "INSERT INTO batches (id, tenant_id, total, labels, idempotency_key, spec_hash) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
         DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key \
         RETURNING id, spec_hash, (xmax <> 0) AS existed",
    )
    .bind(batch_id)
    .bind(tenant)
    .bind(jobs.len() as i32)
    .bind(labels)
    .bind(idempotency_key)
    .bind(spec_hash)
    .fetch_one(&mut *tx)
    .await?;
    let id: Uuid = row.try_get("id")?;
    if row.try_get::<bool, _>("existed")? {
        let stored: Vec<u8> = row.try_get("spec_hash")?;
        tx.rollback().await?;
        if &stored != spec_hash {
            return Ok(BatchSubmitted::KeyConflict { existing: id });
        }
        let job_ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE batch_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(pool)
                .await?;
        return Ok(BatchSubmitted::Replayed { id, job_ids });
    }
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.priority).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, queue, priority, max_attempts, batch_id) \
         SELECT t.id, $1, t.queue, t.priority, t.max_attempts, $2 \
         FROM UNNEST($3::uuid[], $4::text[], $5::smallint[], $6::int[]) AS t(id, queue, priority, max_attempts)",
    )
    .bind(tenant)
    .bind(id)
    .bind(&ids)
    .bind(&queues)
    .bind(&priorities)
    .bind(&attempts)
    .execute(&mut *tx)
    .await?;
    if let Err(r) = super::tenants::admit(&mut tx, tenant_quota, ids.len() as i64).await? {
        tx.rollback().await?;
        return Ok(BatchSubmitted::Refused(r));
    }
    let mut images: Vec<String> = jobs
        .iter()
        .filter(|j| is_image(&j.program))
        .map(|j| j.program.clone())
        .collect();
    images.sort();
    images.dedup();
    super::tenants::record_images(&mut tx, tenant, &images).await?;
    let specs: Vec<String> = jobs.iter().map(|j| j.spec.to_string()).collect();
    let hashes: Vec<Vec<u8>> = jobs.iter().map(|j| j.spec_hash.clone()).collect();
    let programs: Vec<&str> = jobs.iter().map(|j| j.program.as_str()).collect();
    let job_labels: Vec<String> = jobs.iter().map(|j| j.labels.to_string()).collect();
    let suites: Vec<bool> = jobs.iter().map(NewJob::is_suite).collect();
    let traces: Vec<Option<&str>> = jobs.iter().map(|j| j.traceparent.as_deref()).collect();
    sqlx::query(
        "INSERT INTO job_specs (job_id, spec, spec_hash, program, labels, suite, traceparent) \
         SELECT t.id, t.spec::jsonb, t.hash, t.program, t.labels::jsonb, t.suite, t.traceparent \
         FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::bool[], \
             $7::text[]) \
         AS t(id, spec, hash, program, labels, suite, traceparent)",
    )
    .bind(&ids)
    .bind(&specs)
    .bind(&hashes)
    .bind(&programs)
    .bind(&job_labels)
    .bind(&suites)
    .bind(&traces)
    .execute(&mut *tx)
    .await?;
    for payload in wakes {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::CHANNEL_JOBS)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(BatchSubmitted::Created { id, job_ids: ids })
}

/// One job of a tenant.
pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} {JOB_FROM} WHERE j.id = $1 AND j.tenant_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

/// Job `id` of `tenant` and the first `limit` output chunks (stdout and stderr: `seq`, stream,
/// bytes, in order) of its current attempt, in one statement — what the answer of a finished job
/// waited for (`POST /v1/jobs?wait=`) reads, instead of a read of the job beside a read of its
/// chunks.
pub async fn get_with_output(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
    limit: i64,
) -> Result<Option<Answer>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS}, o.seqs, o.streams, o.datas {JOB_FROM} \
         LEFT JOIN LATERAL ( \
             SELECT array_agg(c.seq ORDER BY c.seq) AS seqs, \
                    array_agg(c.stream ORDER BY c.seq) AS streams, \
                    array_agg(c.data ORDER BY c.seq) AS datas \
             FROM (SELECT seq, stream, data FROM log_chunks \
                   WHERE job_id = j.id AND attempt = j.attempt AND stream < 3 \
                   ORDER BY seq LIMIT $3) c \
         ) o ON true \
         WHERE j.id = $1 AND j.tenant_id = $2"
    );
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(tenant)
        .bind(limit)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    answer_from_row(&row).map(Some)
}

/// Job `id` of `tenant` and up to `limit` of its chunks (output and test-suite events, of every
/// attempt) strictly after position `after`, in one statement: a log stream's first read
/// (docs/queue.md §9), instead of a read of the job and then one of its chunks. One snapshot: when
/// the record is final, the chunks are all of the job's output after `after` (up to `limit`).
pub async fn get_with_chunks_after(
    db: impl sqlx::PgExecutor<'_>,
    tenant: &str,
    id: Uuid,
    after: (i32, i32),
    limit: i64,
) -> Result<Option<(JobRecord, Vec<StoredChunk>)>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS}, c.attempts, c.seqs, c.streams, c.datas, c.stored_ats {JOB_FROM} \
         LEFT JOIN LATERAL ( \
             SELECT array_agg(l.attempt ORDER BY l.attempt, l.seq) AS attempts, \
                    array_agg(l.seq ORDER BY l.attempt, l.seq) AS seqs, \
                    array_agg(l.stream ORDER BY l.attempt, l.seq) AS streams, \
                    array_agg(l.data ORDER BY l.attempt, l.seq) AS datas, \
                    array_agg(l.stored_at ORDER BY l.attempt, l.seq) AS stored_ats \
             FROM (SELECT attempt, seq, stream, data, stored_at FROM log_chunks \
                   WHERE job_id = j.id AND (attempt, seq) > ($3, $4) \
                   ORDER BY attempt, seq LIMIT $5) l \
         ) c ON true \
         WHERE j.id = $1 AND j.tenant_id = $2"
    );
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(tenant)
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_optional(db)
        .await?
    else {
        return Ok(None);
    };
    let job = job_from_row(&row)?;
    let attempts: Vec<i32> = row.try_get::<Option<_>, _>("attempts")?.unwrap_or_default();
    let seqs: Vec<i32> = row.try_get::<Option<_>, _>("seqs")?.unwrap_or_default();
    let streams: Vec<i16> = row.try_get::<Option<_>, _>("streams")?.unwrap_or_default();
    let datas: Vec<Vec<u8>> = row.try_get::<Option<_>, _>("datas")?.unwrap_or_default();
    let stored_ats: Vec<Option<DateTime<Utc>>> = row
        .try_get::<Option<_>, _>("stored_ats")?
        .unwrap_or_default();
    let n = attempts.len();
    if [seqs.len(), streams.len(), datas.len(), stored_ats.len()] != [n; 4] {
        return Err(StoreError::Corrupt(format!(
            "job {id}: the chunk read returned arrays of different lengths"
        )));
    }
    let chunks = attempts
        .into_iter()
        .zip(seqs)
        .zip(streams)
        .zip(datas)
        .zip(stored_ats)
        .map(|((((attempt, seq), fd), data), stored_at)| {
            StoredChunk::from_columns(attempt, seq, fd, data, stored_at)
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Some((job, chunks)))
}

/// A job's record and its first chunks of output from a row of [`JOB_COLUMNS`] and the arrays
/// `seqs`, `streams` and `datas` (as [`get_with_output`] and the flush that answers,
/// [`super::queue::flush`], read them).
pub(crate) fn answer_from_row(row: &PgRow) -> Result<Answer, StoreError> {
    let job = job_from_row(row)?;
    let id = job.id;
    let seqs: Vec<i32> = row.try_get::<Option<_>, _>("seqs")?.unwrap_or_default();
    let streams: Vec<i16> = row.try_get::<Option<_>, _>("streams")?.unwrap_or_default();
    let datas: Vec<Vec<u8>> = row.try_get::<Option<_>, _>("datas")?.unwrap_or_default();
    if seqs.len() != streams.len() || seqs.len() != datas.len() {
        return Err(StoreError::Corrupt(format!(
            "job {id}: the output read returned {} seqs, {} streams and {} chunks",
            seqs.len(),
            streams.len(),
            datas.len()
        )));
    }
    let chunks = seqs
        .into_iter()
        .zip(streams)
        .zip(datas)
        .map(|((seq, fd), data)| {
            let stream = OutputStream::from_fd(fd).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "job {id}: output chunk {seq} has stream {fd} (expected 1 or 2)"
                ))
            })?;
            Ok(OutputChunk { seq, stream, data })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((job, chunks))
}

/// A finished job's record and the first chunks of its latest attempt's output.
pub type Answer = (JobRecord, Vec<OutputChunk>);

/// One chunk of a job's output, as [`get_with_output`] reads it.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub seq: i32,
    pub stream: OutputStream,
    pub data: Vec<u8>,
}

/// A job's stored spec (`job_specs.spec`, see [`crate::model::ResolvedJob::from_stored`]), if
/// the tenant has the job.
pub async fn stored_spec(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<serde_json::Value>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT s.spec FROM job_specs s JOIN jobs j ON j.id = s.job_id \
         WHERE s.job_id = $1 AND j.tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?)
}

/// Filters of a job listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<JobState>,
    pub batch: Option<Uuid>,
    /// A JSON object the job's labels must contain.
    pub labels: Option<serde_json::Value>,
    /// Return jobs older than this id (the previous page's last id).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Jobs of a tenant, newest first (keyset pagination on the UUIDv7 id).
pub async fn list(
    pool: &PgPool,
    tenant: &str,
    filter: &ListFilter,
) -> Result<Vec<JobRecord>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} {JOB_FROM} \
         WHERE j.tenant_id = $1 \
           AND ($2::text IS NULL OR j.state = $2::job_state) \
           AND ($3::uuid IS NULL OR j.batch_id = $3) \
           AND ($4::jsonb IS NULL OR s.labels @> $4) \
           AND ($5::uuid IS NULL OR j.id < $5) \
         ORDER BY j.id DESC LIMIT $6"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.batch)
        .bind(&filter.labels)
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(job_from_row).collect()
}

/// What a cancel request found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelResult {
    NotFound,
    /// Already in a final state: nothing changed.
    AlreadyFinished(JobState),
    /// Was queued or scheduled: now `cancelled`.
    CancelledNow,
    /// Is running: flagged; its worker kills it and records `cancelled`.
    Requested,
}

/// Cancels waiting (`queued`/`scheduled`) jobs `$1` at once, each with a `cancelled` record
/// whose detail is `$2`. Attempt history is append-only: a job waiting for a retry already has
/// the record of the attempt it lost or failed, so its cancel is the record of the next attempt
/// (the one that never started), and the earlier record stays as it was.
const CANCEL_WAITING: &str = "WITH upd AS ( \
        UPDATE jobs SET state = 'cancelled', cancel_requested = true, finished_at = now(), \
            worker_id = NULL, \
            attempt = jobs.attempt + (EXISTS (SELECT 1 FROM job_attempts a \
                WHERE a.job_id = jobs.id AND a.attempt = jobs.attempt))::int \
        WHERE id = ANY($1) AND state IN ('queued', 'scheduled') RETURNING id, attempt) \
    INSERT INTO job_attempts (job_id, attempt, reason, detail) \
    SELECT id, attempt, 'cancelled', $2 FROM upd \
    ON CONFLICT (job_id, attempt) DO NOTHING";

/// Cancels a job: queued → cancelled at once; running → flag + NOTIFY to its worker.
/// The cancel is recorded in the audit log as `job.cancel` by `actor`.
pub async fn cancel(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
    actor: &super::tenants::Actor,
) -> Result<CancelResult, StoreError> {
    let mut tx = pool.begin().await?;
    let current: Option<JobState> =
        sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1 AND tenant_id = $2 FOR UPDATE")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(state) = current else {
        return Ok(CancelResult::NotFound);
    };
    let result = match state {
        s if s.is_terminal() => CancelResult::AlreadyFinished(s),
        JobState::Running => {
            sqlx::query("UPDATE jobs SET cancel_requested = true WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL_CANCEL)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            CancelResult::Requested
        }
        _ => {
            sqlx::query(CANCEL_WAITING)
                .bind(std::slice::from_ref(&id))
                .bind("cancelled before it started")
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL_STATE)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            CancelResult::CancelledNow
        }
    };
    if matches!(result, CancelResult::Requested | CancelResult::CancelledNow) {
        super::tenants::audit(
            &mut tx,
            actor,
            "job.cancel",
            &id.to_string(),
            serde_json::json!({ "tenant": tenant, "was": state.as_str() }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(result)
}

/// A batch's summary, or `None` if the tenant has no such batch.
pub async fn batch(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<BatchRecord>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT id, total, labels, created_at FROM batches WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    Ok(batches_with_counts(pool, &[row]).await?.pop())
}

/// Batch summaries from `batches` rows (id, total, labels, created_at), with their jobs counted
/// by state in one query.
async fn batches_with_counts(
    pool: &PgPool,
    rows: &[PgRow],
) -> Result<Vec<BatchRecord>, StoreError> {
    let ids: Vec<Uuid> = rows
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    let mut counts_of: std::collections::HashMap<Uuid, BTreeMap<JobState, i64>> =
        std::collections::HashMap::new();
    if !ids.is_empty() {
        let counted = sqlx::query(
            "SELECT batch_id, state, count(*) AS n FROM jobs \
             WHERE batch_id = ANY($1) GROUP BY batch_id, state",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await?;
        for r in counted {
            counts_of
                .entry(r.try_get("batch_id")?)
                .or_default()
                .insert(r.try_get("state")?, r.try_get("n")?);
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: Uuid = row.try_get("id")?;
        let labels: serde_json::Value = row.try_get("labels")?;
        let labels: BTreeMap<String, String> = serde_json::from_value(labels)
            .map_err(|e| StoreError::Corrupt(format!("batch labels: {e}")))?;
        let created_at: DateTime<Utc> = row.try_get("created_at")?;
        let total: i32 = row.try_get("total")?;
        let mut counts: BTreeMap<JobState, i64> = JobState::ALL.iter().map(|&s| (s, 0)).collect();
        let mut finished = 0;
        for (state, n) in counts_of.remove(&id).unwrap_or_default() {
            if state.is_terminal() {
                finished += n;
            }
            counts.insert(state, n);
        }
        out.push(BatchRecord {
            id,
            created_at,
            total: total.into(),
            labels,
            counts,
            finished: finished >= i64::from(total),
        });
    }
    Ok(out)
}

/// Filters of a batch listing.
#[derive(Debug, Clone, Default)]
pub struct BatchFilter {
    /// A JSON object the batch's labels must contain.
    pub labels: Option<serde_json::Value>,
    /// Only finished batches (`true`) or only unfinished ones (`false`).
    pub done: Option<bool>,
    /// Return batches older than this id (the previous page's last id).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Batches of a tenant, newest first (keyset pagination on the UUIDv7 id).
pub async fn list_batches(
    pool: &PgPool,
    tenant: &str,
    filter: &BatchFilter,
) -> Result<Vec<BatchRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, total, labels, created_at FROM batches \
         WHERE tenant_id = $1 \
           AND ($2::jsonb IS NULL OR labels @> $2) \
           AND ($3::boolean IS NULL OR (finished >= total) = $3) \
           AND ($4::uuid IS NULL OR id < $4) \
         ORDER BY id DESC LIMIT $5",
    )
    .bind(tenant)
    .bind(&filter.labels)
    .bind(filter.done)
    .bind(filter.before)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    batches_with_counts(pool, &rows).await
}

/// What cancelling a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCancelled {
    /// Jobs that were waiting (queued or scheduled) and are now `cancelled`.
    pub cancelled: i64,
    /// Running jobs flagged for cancel: their workers kill them and record `cancelled`.
    pub cancel_requested: i64,
}

/// Cancels every unfinished job of a tenant's batch (`None`: no such batch): waiting jobs at
/// once, running ones through the flag and NOTIFY their workers act on, as [`cancel`] does for one
/// job. The job rows are locked in id order first. Recorded in the audit log as `batch.cancel`
/// by `actor` when it changed anything.
pub async fn cancel_batch(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
    actor: &super::tenants::Actor,
) -> Result<Option<BatchCancelled>, StoreError> {
    let mut tx = pool.begin().await?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM batches WHERE id = $1 AND tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Ok(None);
    }
    let open = sqlx::query(
        "SELECT id, state FROM jobs WHERE batch_id = $1 AND tenant_id = $2 \
         AND state IN ('queued', 'scheduled', 'running') ORDER BY id FOR UPDATE",
    )
    .bind(id)
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let mut running = Vec::new();
    let mut waiting = Vec::new();
    for r in &open {
        let job: Uuid = r.try_get("id")?;
        if r.try_get::<JobState, _>("state")? == JobState::Running {
            running.push(job);
        } else {
            waiting.push(job);
        }
    }
    if !running.is_empty() {
        sqlx::query("UPDATE jobs SET cancel_requested = true WHERE id = ANY($1)")
            .bind(&running)
            .execute(&mut *tx)
            .await?;
        notify_ids(&mut tx, CHANNEL_CANCEL, &running).await?;
    }
    if !waiting.is_empty() {
        sqlx::query(CANCEL_WAITING)
            .bind(&waiting)
            .bind("cancelled before it started (its batch was cancelled)")
            .execute(&mut *tx)
            .await?;
        notify_ids(&mut tx, CHANNEL_STATE, &waiting).await?;
    }
    let done = BatchCancelled {
        cancelled: waiting.len() as i64,
        cancel_requested: running.len() as i64,
    };
    if done.cancelled + done.cancel_requested > 0 {
        super::tenants::audit(
            &mut tx,
            actor,
            "batch.cancel",
            &id.to_string(),
            serde_json::json!({
                "tenant": tenant,
                "cancelled": done.cancelled,
                "cancel_requested": done.cancel_requested,
            }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(done))
}

/// NOTIFYs job ids on `channel`, comma-separated, in payloads well under PostgreSQL's 8000-byte
/// limit.
async fn notify_ids(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    channel: &str,
    ids: &[Uuid],
) -> Result<(), StoreError> {
    for part in ids.chunks(150) {
        let payload = part
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The finished jobs of a batch in the order they finished, after position `after_seq` (each
/// with its position, 1..total; see migration 0007), at most `limit`.
pub async fn finished_batch_jobs(
    pool: &PgPool,
    tenant: &str,
    batch: Uuid,
    after_seq: i32,
    limit: i64,
) -> Result<Vec<(i32, JobRecord)>, StoreError> {
    let sql = format!(
        "SELECT f.seq, {JOB_COLUMNS} FROM batch_finishes f JOIN jobs j ON j.id = f.job_id \
         JOIN job_specs s ON s.job_id = j.id \
         LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt \
         WHERE f.batch_id = $1 AND j.tenant_id = $2 AND f.seq > $3 ORDER BY f.seq LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(batch)
        .bind(tenant)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("seq")?, job_from_row(r)?)))
        .collect()
}
