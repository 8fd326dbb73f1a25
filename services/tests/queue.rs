//! The PostgreSQL queue's rules (docs/queue.md), exercised directly against a real
//! database: claims, fencing, rescue, retries, cancel flags, retention, and the fair claim
//! across tenants (weights, max_running under concurrent claims, pauses, cost with a backlog).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use nekton::api::types::{Job, JobState};
use nekton::store::jobs::{self, NewJob, Submitted};
use nekton::store::queue::{self, Claimed, Completion, NewChunk, Notices};
use nekton::testing::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

const TENANT: &str = "default";
const LEASE: Duration = Duration::from_secs(30);

async fn db() -> TestDb {
    let db = TestDb::new().await;
    nekton::store::migrate(&db.pool)
        .await
        .expect("migrations apply");
    db
}

fn new_job(queue: &str, priority: i16, max_attempts: i32) -> NewJob {
    NewJob {
        id: Uuid::now_v7(),
        queue: queue.into(),
        priority,
        max_attempts,
        labels: serde_json::json!({}),
        program: "sha256:test".into(),
        spec: serde_json::json!({"module": "sha256:test"}),
        spec_hash: vec![1, 2, 3],
        required_module: None,
        idempotency_key: None,
        traceparent: None,
    }
}

async fn insert(pool: &PgPool, job: NewJob) -> Uuid {
    insert_for(pool, TENANT, job).await
}

/// Submits `job` as `tenant` (which must exist), like the API does.
async fn insert_for(pool: &PgPool, tenant: &str, job: NewJob) -> Uuid {
    let tenant = nekton::store::tenants::get_tenant(pool, tenant)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("tenant {tenant} exists"));
    let wake = job.queue.clone();
    match jobs::submit(
        &nekton::store::Warm::new(pool.clone()),
        &tenant,
        job,
        Some(&wake),
        None,
        jobs::SubmitCommit::Flushed,
    )
    .await
    .unwrap()
    {
        Submitted::Created(j) => j.id,
        other => panic!("not created: {other:?}"),
    }
}

async fn state(pool: &PgPool, id: Uuid) -> (JobState, i32) {
    sqlx::query_as("SELECT state, attempt FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn done(id: Uuid, attempt: i32, state: JobState) -> Completion {
    Completion {
        job_id: id,
        attempt,
        state,
        retry_after: None,
        reason: nekton::model::OutcomeReason::Exited,
        exit_code: Some(0),
        signal: None,
        detail: None,
        usage: nekton::model::Usage::default(),
        tests: None,
    }
}

/// A claim told how many container slots are free keeps to them: it takes the Wasm jobs and the
/// first image jobs up to that many, in queue order, and leaves the other image jobs waiting in
/// their place for a later claim. An image job on `runtime: wasm` takes no container slot; an
/// image on `auto`, and one stored before specs were versioned, do.
#[tokio::test]
async fn a_claim_takes_no_more_container_jobs_than_it_has_container_slots() {
    let db = db().await;
    let pool = &db.pool;
    let job = |spec: serde_json::Value| NewJob {
        spec,
        ..new_job("kinds", 0, 1)
    };
    let image = |runtime: &str| {
        job(serde_json::json!({
            "v": 1, "program": {"kind": "image", "reference": "busybox"}, "runtime": runtime
        }))
    };
    let c1 = insert(pool, image("auto")).await;
    let w1 = insert(pool, new_job("kinds", 0, 1)).await;
    let c2 = insert(pool, job(serde_json::json!({"image": "busybox"}))).await;
    let wi = insert(pool, image("wasm")).await;
    let w2 = insert(pool, new_job("kinds", 0, 1)).await;
    let c3 = insert(pool, image("container")).await;

    let ids = |claimed: Vec<Claimed>| claimed.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let first = queue::claim_kinds(pool, Uuid::now_v7(), "kinds", 10, Some(1), LEASE)
        .await
        .unwrap();
    assert_eq!(
        first.iter().filter(|c| c.runs_in_container()).count(),
        1,
        "the worker tells container jobs by the claim's own rule"
    );
    assert_eq!(
        ids(first),
        vec![c1, w1, wi, w2],
        "one container job, in queue order"
    );
    for waiting in [c2, c3] {
        assert_eq!(
            state(pool, waiting).await,
            (JobState::Queued, 0),
            "left waiting, untouched"
        );
    }
    let none = queue::claim_kinds(pool, Uuid::now_v7(), "kinds", 10, Some(0), LEASE)
        .await
        .unwrap();
    assert!(none.is_empty(), "no container slot free: {:?}", ids(none));
    let rest = queue::claim_kinds(pool, Uuid::now_v7(), "kinds", 10, Some(2), LEASE)
        .await
        .unwrap();
    assert_eq!(ids(rest), vec![c2, c3]);
}

/// A lone uncapped tenant's claim is one statement (migration 0026, step 0); with another tenant
/// waiting anywhere the claim takes the long way (steps 1 to 3). Both take the same jobs in the
/// same order — priority, age, the container cap — with the same attempts and specs. Each claim
/// is rolled back, so both see the same queue.
#[tokio::test]
async fn a_lone_tenants_claim_in_one_statement_takes_what_the_long_way_takes() {
    let db = db().await;
    let pool = &db.pool;
    for i in 0..30i16 {
        let spec = match i % 4 {
            0 => {
                serde_json::json!({"v": 1, "program": {"kind": "image", "reference": "busybox"}, "runtime": "auto"})
            }
            1 => {
                serde_json::json!({"v": 1, "program": {"kind": "image", "reference": "busybox"}, "runtime": "wasm"})
            }
            2 => serde_json::json!({"image": "busybox"}),
            _ => serde_json::json!({"module": "sha256:test"}),
        };
        insert(
            pool,
            NewJob {
                spec,
                ..new_job("lone", i % 3, 2)
            },
        )
        .await;
    }
    let cases = [
        (8, None),
        (12, Some(2)),
        (40, Some(0)),
        (100, Some(5)),
        (1, Some(0)),
    ];
    let claims = |pool: PgPool| async move {
        let mut all = Vec::new();
        for (limit, containers) in cases {
            let mut tx = pool.begin().await.unwrap();
            let got = queue::claim_kinds(&mut *tx, Uuid::nil(), "lone", limit, containers, LEASE)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            all.push(
                got.into_iter()
                    .map(|c| (c.id, c.attempt, c.tenant, c.spec))
                    .collect::<Vec<_>>(),
            );
        }
        all
    };
    let alone = claims(pool.clone()).await;
    assert_eq!(
        alone.iter().map(Vec::len).collect::<Vec<_>>(),
        // 15 of the 30 take a container slot; the first by priority is one of them.
        vec![8, 8, 15, 20, 0],
        "limits and the container cap: {alone:?}"
    );

    // Another tenant waiting in another queue: this queue's claim now takes the long way.
    tenant(pool, "other", 1, None).await;
    backlog(pool, "other", "elsewhere", 1, 0.0).await;
    let long_way = claims(pool.clone()).await;
    assert_eq!(alone, long_way);
}

#[tokio::test]
async fn claims_respect_the_limit_priority_and_queue_and_never_overlap() {
    let db = db().await;
    let pool = &db.pool;
    let low = insert(pool, new_job("q", 0, 1)).await;
    let high = insert(pool, new_job("q", 5, 1)).await;
    for _ in 0..20 {
        insert(pool, new_job("q", 0, 1)).await;
    }
    insert(pool, new_job("other", 100, 1)).await;
    let queues = "q";
    let first = queue::claim(pool, Uuid::now_v7(), queues, 2, LEASE)
        .await
        .unwrap();
    assert_eq!(first.len(), 2, "never more than the free slots");
    assert_eq!(first[0].id, high, "highest priority first");
    assert_eq!(first[1].id, low, "then oldest");
    assert!(first.iter().all(|c| c.attempt == 1));

    // Many concurrent claimers: every job claimed exactly once.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let w = Uuid::now_v7();
            let mut mine = Vec::new();
            loop {
                let got = queue::claim(&pool, w, queues, 3, LEASE).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 20);
    assert_eq!(unique.len(), 20, "no job claimed twice");
    let leases: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE lease_expires_at IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(leases, 22);
}

/// A job's trace context is written by the submission's INSERT (single and batch) and comes back
/// with the claim (docs/operations.md, "Tracing"); the job record shows its trace id.
#[tokio::test]
async fn the_claim_returns_the_trace_context_the_submission_stored() {
    use nekton::telemetry::TraceParent;
    let db = db().await;
    let pool = &db.pool;
    let single =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let one = insert(
        pool,
        NewJob {
            traceparent: Some(single.to_string()),
            ..new_job("t", 2, 1)
        },
    )
    .await;
    let untraced = insert(pool, new_job("t", 1, 1)).await;
    let batched = TraceParent::random();
    let tenant = nekton::store::tenants::get_tenant(pool, TENANT)
        .await
        .unwrap()
        .unwrap();
    let batch = jobs::NewBatch {
        id: Uuid::now_v7(),
        labels: serde_json::json!({}),
        spec_hash: vec![9],
        idempotency_key: None,
        jobs: (0..2)
            .map(|_| NewJob {
                traceparent: Some(batched.to_string()),
                ..new_job("t", 0, 1)
            })
            .collect(),
        wakes: vec!["t".into()],
    };
    let jobs::BatchSubmitted::Created { job_ids, .. } =
        jobs::submit_batch(pool, &tenant, &batch).await.unwrap()
    else {
        panic!("the batch was not created");
    };

    let claimed = queue::claim(pool, Uuid::now_v7(), "t", 10, LEASE)
        .await
        .unwrap();
    let trace_of: HashMap<Uuid, Option<TraceParent>> =
        claimed.iter().map(|c| (c.id, c.trace)).collect();
    assert_eq!(trace_of.len(), 4);
    assert_eq!(trace_of[&one], Some(single));
    assert_eq!(trace_of[&untraced], None, "a job stored without one");
    for id in &job_ids {
        assert_eq!(trace_of[id], Some(batched), "one trace per batch");
    }
    let record = jobs::get(pool, TENANT, one).await.unwrap().unwrap();
    assert_eq!(
        record.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(
        jobs::get(pool, TENANT, untraced)
            .await
            .unwrap()
            .unwrap()
            .trace_id,
        None
    );
}

/// A claim that took jobs commits without waiting for the WAL flush (only its own
/// transaction): the job's output or completion, which wait for the flush of everything before
/// them, make it durable (docs/operations.md, "Delivery guarantees").
#[tokio::test]
async fn a_claim_commits_without_waiting_for_the_wal_flush() {
    let db = db().await;
    let pool = &db.pool;
    insert(pool, new_job("default", 0, 1)).await;
    let mut tx = pool.begin().await.unwrap();
    // The test server commits asynchronously anyway: make this transaction synchronous first.
    sqlx::query("SET LOCAL synchronous_commit = on")
        .execute(&mut *tx)
        .await
        .unwrap();
    let claimed = queue::claim(&mut *tx, Uuid::now_v7(), "default", 1, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        setting, "off",
        "the claim's transaction commits asynchronously"
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_writes_nothing() {
    let db = db().await;
    let pool = &db.pool;
    let id = insert(pool, new_job("default", 0, 3)).await;
    let queues = "default";
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let claimed = queue::claim(pool, a, queues, 1, LEASE).await.unwrap();
    assert_eq!(claimed[0].attempt, 1);
    let chunk = |attempt, seq| NewChunk {
        job_id: id,
        attempt,
        seq,
        stream: nekton::model::ChunkKind::Output(nekton::model::OutputStream::Stdout),
        data: b"x".to_vec(),
    };
    assert_eq!(
        queue::insert_chunks(pool, a, &[chunk(1, 1)]).await.unwrap(),
        1
    );

    // Worker A goes silent: its lease expires and the rescuer schedules a retry.
    sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'",
    )
    .execute(pool)
    .await
    .unwrap();
    let rescued = queue::rescue(pool, 10, 3).await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, JobState::Scheduled);
    let (reason,): (String,) =
        sqlx::query_as("SELECT reason FROM job_attempts WHERE job_id = $1 AND attempt = 1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(reason, "worker_lost");
    // Retry with backoff: not claimable before run_at.
    assert!(
        queue::claim(pool, b, queues, 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    sqlx::query("UPDATE jobs SET run_at = now()")
        .execute(pool)
        .await
        .unwrap();
    let again = queue::claim(pool, b, queues, 1, LEASE).await.unwrap();
    assert_eq!(again[0].attempt, 2);

    // A's late writes apply nothing: no chunks, no completion, no lease renewal.
    assert_eq!(
        queue::insert_chunks(pool, a, &[chunk(1, 2)]).await.unwrap(),
        0
    );
    assert!(
        queue::complete(pool, a, &[done(id, 1, JobState::Succeeded)])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        queue::heartbeat(pool, a, &[id], LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(pool, id).await, (JobState::Running, 2));
    // B's writes apply.
    assert_eq!(
        queue::heartbeat(pool, b, &[id], LEASE).await.unwrap(),
        vec![(id, false)]
    );
    assert_eq!(
        queue::insert_chunks(pool, b, &[chunk(2, 1)]).await.unwrap(),
        1
    );
    assert_eq!(
        queue::complete(pool, b, &[done(id, 2, JobState::Succeeded)])
            .await
            .unwrap(),
        vec![id]
    );
    assert_eq!(state(pool, id).await, (JobState::Succeeded, 2));
    let leases: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE lease_expires_at IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(leases, 0);
}

#[tokio::test]
async fn lost_jobs_end_in_error_when_attempts_run_out() {
    let db = db().await;
    let pool = &db.pool;
    let id = insert(pool, new_job("default", 0, 2)).await;
    let queues = "default";
    for attempt in 1..=2 {
        let c = queue::claim(pool, Uuid::now_v7(), queues, 1, LEASE)
            .await
            .unwrap();
        assert_eq!(c[0].attempt, attempt);
        sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'")
            .execute(pool)
            .await
            .unwrap();
        queue::rescue(pool, 10, 5).await.unwrap();
        sqlx::query("UPDATE jobs SET run_at = now() WHERE state = 'scheduled'")
            .execute(pool)
            .await
            .unwrap();
    }
    assert_eq!(state(pool, id).await, (JobState::Error, 2));
    let job = Job::from(jobs::get(pool, TENANT, id).await.unwrap().unwrap());
    assert_eq!(job.outcome.unwrap().reason, "worker_lost");
    assert!(job.finished_at.is_some());

    // The lost-count cap holds even with attempts left (a poison job that kills workers).
    let poison = insert(pool, new_job("default", 0, 10)).await;
    for _ in 0..2 {
        queue::claim(pool, Uuid::now_v7(), queues, 1, LEASE)
            .await
            .unwrap();
        sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'")
            .execute(pool)
            .await
            .unwrap();
        queue::rescue(pool, 10, 2).await.unwrap();
        sqlx::query("UPDATE jobs SET run_at = now() WHERE state = 'scheduled'")
            .execute(pool)
            .await
            .unwrap();
    }
    assert_eq!(state(pool, poison).await, (JobState::Error, 2));
}

#[tokio::test]
async fn cancel_flags_reach_the_heartbeat_and_rescue() {
    let db = db().await;
    let pool = &db.pool;
    let id = insert(pool, new_job("default", 0, 3)).await;
    let w = Uuid::now_v7();
    queue::claim(pool, w, "default", 1, LEASE).await.unwrap();
    assert_eq!(
        jobs::cancel(pool, TENANT, id, &Default::default())
            .await
            .unwrap(),
        jobs::CancelResult::Requested
    );
    assert_eq!(
        queue::heartbeat(pool, w, &[id], LEASE).await.unwrap(),
        vec![(id, true)]
    );
    assert_eq!(
        queue::cancel_requested(pool, &[id]).await.unwrap(),
        vec![id]
    );
    // If the worker dies now, the rescuer finishes the cancel instead of retrying.
    sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'",
    )
    .execute(pool)
    .await
    .unwrap();
    queue::rescue(pool, 10, 3).await.unwrap();
    assert_eq!(state(pool, id).await, (JobState::Cancelled, 1));
    assert_eq!(
        jobs::cancel(pool, TENANT, id, &Default::default())
            .await
            .unwrap(),
        jobs::CancelResult::AlreadyFinished(JobState::Cancelled)
    );
}

/// A rescued job keeps its place in the queue: jobs submitted while it ran do not go first.
#[tokio::test]
async fn a_rescued_job_is_claimed_before_the_backlog_submitted_after_it() {
    let db = db().await;
    let pool = &db.pool;
    let lost = insert(pool, new_job("default", 0, 3)).await;
    // It waited 10 s in the queue before a worker took it.
    sqlx::query("UPDATE jobs SET run_at = now() - interval '10 seconds' WHERE id = $1")
        .bind(lost)
        .execute(pool)
        .await
        .unwrap();
    let w = Uuid::now_v7();
    assert_eq!(
        queue::claim(pool, w, "default", 1, LEASE).await.unwrap()[0].id,
        lost
    );
    let mut backlog = Vec::new();
    for _ in 0..20 {
        backlog.push(insert(pool, new_job("default", 0, 3)).await);
    }
    sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'",
    )
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(queue::rescue(pool, 10, 3).await.unwrap()[0].id, lost);
    let next = queue::claim(pool, Uuid::now_v7(), "default", 1, LEASE)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, lost, "the rescued job goes first, at its place");
    assert_eq!(next[0].attempt, 2);
}

/// Attempt history is append-only: cancelling a job that waits for its retry after a lost
/// attempt records the cancel as the next attempt and leaves the lost one as it was.
#[tokio::test]
async fn cancelling_a_retry_keeps_the_lost_attempts_record() {
    let db = db().await;
    let pool = &db.pool;
    let id = insert(pool, new_job("default", 0, 3)).await;
    let w = Uuid::now_v7();
    queue::claim(pool, w, "default", 1, LEASE).await.unwrap();
    sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'",
    )
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(
        queue::rescue(pool, 10, 3).await.unwrap()[0].state,
        JobState::Scheduled
    );
    assert_eq!(
        jobs::cancel(pool, TENANT, id, &Default::default())
            .await
            .unwrap(),
        jobs::CancelResult::CancelledNow
    );
    assert_eq!(state(pool, id).await, (JobState::Cancelled, 2));
    let records: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT attempt, reason, detail FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(
        (records[0].0, records[0].1.as_str()),
        (1, "worker_lost"),
        "the attempt that ran keeps its record: {records:?}"
    );
    assert_eq!(
        (records[1].0, records[1].1.as_str()),
        (2, "cancelled"),
        "{records:?}"
    );
    let job = Job::from(jobs::get(pool, TENANT, id).await.unwrap().unwrap());
    assert_eq!(job.outcome.map(|o| o.reason), Some("cancelled".into()));

    // A job that never ran: its one record is the cancel, at attempt 0.
    let never = insert(pool, new_job("default", 0, 3)).await;
    jobs::cancel(pool, TENANT, never, &Default::default())
        .await
        .unwrap();
    assert_eq!(state(pool, never).await, (JobState::Cancelled, 0));
}

#[tokio::test]
async fn shutdown_requeue_does_not_spend_an_attempt() {
    let db = db().await;
    let pool = &db.pool;
    let id = insert(pool, new_job("default", 0, 1)).await;
    let w = Uuid::now_v7();
    queue::claim(pool, w, "default", 1, LEASE).await.unwrap();
    assert_eq!(queue::requeue(pool, w, &[id]).await.unwrap(), vec![id]);
    let (st, attempt) = state(pool, id).await;
    assert_eq!((st, attempt), (JobState::Queued, 1));
    let c = queue::claim(pool, Uuid::now_v7(), "default", 1, LEASE)
        .await
        .unwrap();
    assert_eq!((c[0].attempt, c[0].max_attempts), (2, 2));
}

/// Submits `job` as the default tenant with a worker's slot set aside for it (`HandTo`): the
/// stored record.
async fn submit_handed(
    pool: &PgPool,
    job: NewJob,
    worker: Uuid,
    queues: &[String],
) -> nekton::model::JobRecord {
    let tenant = nekton::store::tenants::get_tenant(pool, TENANT)
        .await
        .unwrap()
        .unwrap();
    let to = jobs::HandTo {
        worker,
        queues,
        lease: LEASE,
    };
    match jobs::submit(
        &nekton::store::Warm::new(pool.clone()),
        &tenant,
        job,
        Some("default"),
        Some(to),
        jobs::SubmitCommit::Flushed,
    )
    .await
    .unwrap()
    {
        Submitted::Created(j) => *j,
        other => panic!("not created: {other:?}"),
    }
}

/// A lone submission with a worker's free slot (the API beside a worker in `nekton serve`) is
/// stored running on that worker — attempt 1, its lease, started as it was created, no claim
/// needed — only when a claim would have taken it at once: nothing runnable waits in the
/// worker's queues and its tenant has no `max_running` cap. Otherwise it waits like any job, and
/// a job that waits in a queue the worker does not serve, or not before a later time, is no
/// reason to.
#[tokio::test]
async fn a_lone_job_is_stored_running_on_the_worker_beside_the_api_only_when_a_claim_would_take_it_at_once()
 {
    use nekton::model::JobState as St;
    let db = db().await;
    let pool = &db.pool;
    let w = Uuid::now_v7();
    let served = vec!["default".to_string(), "second".to_string()];

    // An idle queue: handed.
    let a = submit_handed(pool, new_job("default", 0, 1), w, &served).await;
    assert_eq!((a.state, a.attempt), (St::Running, 1));
    assert_eq!(
        a.started_at,
        Some(a.created_at),
        "started as it was created"
    );
    let (worker, lease_s): (Option<Uuid>, f64) = sqlx::query_as(
        "SELECT worker_id, extract(epoch FROM lease_expires_at - now())::float8 FROM jobs WHERE id = $1",
    )
    .bind(a.id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(worker, Some(w));
    assert!(
        (25.0..=30.0).contains(&lease_s),
        "a claim's lease: {lease_s} s left"
    );
    // The handed job is the worker's like a claimed one: its completion (fenced on attempt 1 and
    // the worker) is applied, and no claim finds it.
    assert!(
        queue::claim(pool, Uuid::now_v7(), "default", 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let applied = queue::complete(pool, w, &[done(a.id, 1, JobState::Succeeded)])
        .await
        .unwrap();
    assert_eq!(applied, vec![a.id]);

    // Waiting jobs elsewhere are no reason to wait: another queue, or not runnable before later.
    backlog(pool, TENANT, "elsewhere", 2, 0.0).await;
    backlog(pool, TENANT, "later", 1, 0.0).await;
    sqlx::query("UPDATE jobs SET queue = 'second', run_at = now() + interval '1 hour' WHERE queue = 'later'")
        .execute(pool)
        .await
        .unwrap();
    let b = submit_handed(pool, new_job("default", 0, 1), w, &served).await;
    assert_eq!(
        b.state,
        St::Running,
        "runnable jobs wait only in a queue the worker does not serve, and in a served one only a later job"
    );

    // A runnable job waiting in any queue the worker serves: the new one waits behind it.
    backlog(pool, "default", "second", 1, 0.0).await;
    let c = submit_handed(pool, new_job("default", 9, 1), w, &served).await;
    assert_eq!((c.state, c.attempt, c.started_at), (St::Queued, 0, None));
    let (worker, lease): (Option<Uuid>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT worker_id, lease_expires_at FROM jobs WHERE id = $1")
            .bind(c.id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((worker, lease), (None, None));
    let claimed = queue::claim(pool, w, "default", 10, LEASE).await.unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![c.id],
        "it is claimed as usual"
    );
    queue::claim(pool, w, "second", 10, LEASE).await.unwrap();

    // A capped tenant's jobs always go through the claim, which enforces the cap.
    tenant(pool, TENANT, 1, Some(100)).await;
    let d = submit_handed(pool, new_job("default", 0, 1), w, &served).await;
    assert_eq!(d.state, St::Queued, "a max_running cap");
    tenant(pool, TENANT, 1, None).await;
    queue::claim(pool, w, "default", 10, LEASE).await.unwrap();
    let e = submit_handed(pool, new_job("default", 0, 1), w, &served).await;
    assert_eq!(e.state, St::Running, "the cap lifted, nothing waiting");

    // Handed but never started (the worker stopped taking jobs): back as it was before.
    assert_eq!(
        queue::return_unstarted(pool, w, &[e.id]).await.unwrap(),
        vec![e.id]
    );
    let back = jobs::get(pool, TENANT, e.id).await.unwrap().unwrap();
    assert_eq!(
        (
            back.state,
            back.attempt,
            back.started_at,
            back.outcome.is_none()
        ),
        (St::Queued, 0, None, true)
    );
    let again = queue::claim(pool, Uuid::now_v7(), "default", 1, LEASE)
        .await
        .unwrap();
    assert_eq!(
        (again[0].id, again[0].attempt, again[0].max_attempts),
        (e.id, 1, 1),
        "a fresh first attempt"
    );

    // Jobs a claim would pass over are no reason to wait either: those of a tenant paused (a cap
    // of 0) or at its cap. A tenant below its cap is one a claim would serve.
    tenant(pool, "paused", 1, Some(0)).await;
    backlog(pool, "paused", "default", 2, 10.0).await;
    tenant(pool, "full", 1, Some(1)).await;
    backlog(pool, "full", "default", 2, 10.0).await;
    let took = queue::claim(pool, Uuid::now_v7(), "default", 10, LEASE)
        .await
        .unwrap();
    assert_eq!(
        took.iter().map(|j| j.tenant.as_str()).collect::<Vec<_>>(),
        ["full"],
        "full is at its cap now"
    );
    let f = submit_handed(pool, new_job("default", 0, 1), w, &served).await;
    assert_eq!(
        f.state,
        St::Running,
        "waiting jobs of a paused tenant and of one at its cap"
    );
    tenant(pool, "full", 1, Some(2)).await;
    let g = submit_handed(pool, new_job("default", 0, 1), w, &served).await;
    assert_eq!(
        g.state,
        St::Queued,
        "a capped tenant below its cap has a runnable job waiting"
    );
}

/// The usage roll-up (migration 0014: once per statement) adds every attempt a statement records,
/// whatever mix of outcomes and jobs' states one statement carries, exactly as one row per attempt
/// would have: the sums of `usage_hourly` equal the sums over the attempts.
#[tokio::test]
async fn usage_rollup_counts_every_attempt_of_a_statement() {
    use nekton::model::{OutcomeReason, Usage};
    let db = db().await;
    let pool = &db.pool;
    let w = Uuid::now_v7();
    for _ in 0..7 {
        insert(pool, new_job("default", 0, 2)).await;
    }
    let claimed = queue::claim(pool, w, "default", 7, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 7);
    // (state, reason, wall ms, cpu ms, memory peak, stdout bytes)
    let plan = [
        (JobState::Succeeded, OutcomeReason::Exited, 10, 3, 1000, 5),
        (JobState::Succeeded, OutcomeReason::Exited, 20, 4, 2000, 7),
        (JobState::Succeeded, OutcomeReason::Exited, 30, 5, 3000, 11),
        (JobState::Failed, OutcomeReason::Exited, 40, 6, 4000, 13),
        (
            JobState::Failed,
            OutcomeReason::WallTimeout,
            50,
            7,
            5000,
            17,
        ),
        (
            JobState::Scheduled,
            OutcomeReason::InternalError,
            60,
            8,
            6000,
            19,
        ),
        (JobState::Error, OutcomeReason::SpecError, 70, 9, 7000, 23),
    ];
    let items: Vec<Completion> = claimed
        .iter()
        .zip(plan)
        .map(|(c, (state, reason, wall, cpu, mem, out))| Completion {
            state,
            reason,
            retry_after: (state == JobState::Scheduled).then(|| Duration::from_secs(60)),
            usage: Usage {
                wall_ms: Some(wall),
                cpu_user_ms: Some(cpu),
                cpu_system_ms: Some(1),
                memory_peak_bytes: Some(mem),
                stdout_bytes: out,
                stderr_bytes: 1,
                ..Usage::default()
            },
            ..done(c.id, c.attempt, state)
        })
        .collect();
    assert_eq!(queue::complete(pool, w, &items).await.unwrap().len(), 7);
    // One more statement adds to the same rows.
    let late = insert(pool, new_job("default", 0, 1)).await;
    let c = queue::claim(pool, w, "default", 1, LEASE).await.unwrap();
    assert_eq!(c[0].id, late);
    let mut one = done(late, 1, JobState::Succeeded);
    one.usage.wall_ms = Some(100);
    queue::complete(pool, w, &[one]).await.unwrap();

    type Row = (String, i64, i64, i64, i64, i64, i64, String, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT outcome, attempts, jobs_succeeded, jobs_failed, jobs_cancelled, jobs_error, cpu_ms, \
             memory_byte_ms::text, wall_ms, output_bytes \
         FROM usage_hourly WHERE tenant_id = $1 ORDER BY outcome",
    )
    .bind(TENANT)
    .fetch_all(pool)
    .await
    .unwrap();
    let want: Vec<Row> = vec![
        // 3 succeeded + 1 failed (exited), then the late one: wall 100, no cpu or memory.
        (
            "exited".into(),
            5,
            4,
            1,
            0,
            0,
            (3 + 4 + 5 + 6) + 4,
            (10 * 1000 + 20 * 2000 + 30 * 3000 + 40 * 4000).to_string(),
            10 + 20 + 30 + 40 + 100,
            (5 + 7 + 11 + 13) + 4,
        ),
        // A retry: an attempt, but no job in a final state.
        (
            "internal_error".into(),
            1,
            0,
            0,
            0,
            0,
            9,
            (60 * 6000).to_string(),
            60,
            20,
        ),
        (
            "spec_error".into(),
            1,
            0,
            0,
            0,
            1,
            10,
            (70 * 7000).to_string(),
            70,
            24,
        ),
        (
            "wall_timeout".into(),
            1,
            0,
            1,
            0,
            0,
            8,
            (50 * 5000).to_string(),
            50,
            18,
        ),
    ];
    assert_eq!(rows, want);
}

/// What a statement's accounting wrote: the batches' counts, their finish positions, the usage
/// roll-up and the outbox rows (without what differs between two runs: times, delivery ids).
async fn accounting(conn: &mut sqlx::PgConnection) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT jsonb_build_object( \
           'batches', (SELECT jsonb_agg(jsonb_build_array(id, total, finished) ORDER BY id) \
                       FROM batches), \
           'finishes', (SELECT jsonb_agg(jsonb_build_array(batch_id, seq, job_id) \
                                         ORDER BY batch_id, seq) FROM batch_finishes), \
           'usage', (SELECT jsonb_agg(jsonb_build_array(tenant_id, outcome, attempts, \
                         jobs_succeeded, jobs_failed, jobs_cancelled, jobs_error, cpu_ms, \
                         memory_byte_ms, wall_ms, output_bytes) ORDER BY outcome) \
                     FROM usage_hourly), \
           'outbox', (SELECT jsonb_agg(jsonb_build_array(webhook_id, tenant_id, event, \
                          payload #- '{timestamp}' #- '{data,finished_at}') \
                          ORDER BY event, payload->'data'->>'id') FROM webhook_deliveries))",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// The flush does its own accounting (migration 0027: its statement rolls usage up, the batch
/// accounting and `job.completed` rows follow it), and the triggers that account for every other
/// statement do nothing in it. Both ways write the same: the same jobs finished by the flush and
/// by a plain statement (the triggers' way), each in a transaction rolled back afterwards, leave
/// the same counts, finish positions, usage rows and outbox rows — and the flush's are counted
/// once, not once by it and again by the triggers.
#[tokio::test]
async fn the_flush_accounts_for_its_jobs_as_the_triggers_do_for_other_statements() {
    use nekton::model::{OutcomeReason, Usage};
    let db = db().await;
    let pool = &db.pool;
    let w = Uuid::now_v7();
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(insert(pool, new_job("acct", 0, 2)).await);
    }
    // Batch A: three jobs (one of them retried, so A stays open); batch B: two (it completes);
    // two jobs without a batch. An endpoint subscribes to both events.
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "WITH b AS ( \
             INSERT INTO batches (id, tenant_id, total, spec_hash) \
             VALUES ($1, $3, 3, '\\x00'), ($2, $3, 2, '\\x00') \
         ), j AS ( \
             UPDATE jobs SET batch_id = CASE WHEN id = ANY($4) THEN $1 ELSE $2 END \
             WHERE id = ANY($4) OR id = ANY($5) \
         ) \
         INSERT INTO webhooks (id, tenant_id, url, events, secret) VALUES ($6, $3, \
             'http://127.0.0.1:9/hook', ARRAY['job.completed', 'batch.completed'], 'whsec_test')",
    )
    .bind(a)
    .bind(b)
    .bind(TENANT)
    .bind(&ids[0..3])
    .bind(&ids[3..5])
    .bind(Uuid::now_v7())
    .execute(pool)
    .await
    .unwrap();
    let claimed = queue::claim(pool, w, "acct", 7, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 7);
    let items: Vec<Completion> = claimed
        .iter()
        .map(|c| {
            let k = ids.iter().position(|id| *id == c.id).unwrap() as u64;
            let (state, reason) = match k {
                1 => (JobState::Scheduled, OutcomeReason::InternalError),
                4 => (JobState::Failed, OutcomeReason::WallTimeout),
                6 => (JobState::Error, OutcomeReason::SpecError),
                _ => (JobState::Succeeded, OutcomeReason::Exited),
            };
            Completion {
                state,
                reason,
                retry_after: (state == JobState::Scheduled).then(|| Duration::from_secs(60)),
                usage: Usage {
                    wall_ms: Some(10 * (k + 1)),
                    cpu_user_ms: Some(k + 1),
                    memory_peak_bytes: Some(1000 * (k + 1)),
                    stdout_bytes: 3 * k,
                    ..Usage::default()
                },
                ..done(c.id, c.attempt, state)
            }
        })
        .collect();

    let mut tx = pool.begin().await.unwrap();
    let applied = queue::flush_answering_on(
        &mut tx,
        w,
        &[],
        &items,
        Notices::Notify,
        &queue::Ask::default(),
    )
    .await
    .unwrap();
    assert_eq!(applied.applied.len(), 7);
    let by_flush = accounting(&mut tx).await;
    // The attempts as the flush recorded them, for the plain statement to record again.
    type Attempt = (
        Uuid,
        i32,
        String,
        String,
        Option<i32>,
        Option<serde_json::Value>,
    );
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT a.job_id, a.attempt, j.state::text, a.reason, a.exit_code, a.usage \
         FROM job_attempts a JOIN jobs j ON j.id = a.job_id ORDER BY a.job_id",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(attempts.len(), 7);

    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "WITH input AS ( \
             SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::int[], \
                                  $6::jsonb[]) AS t(job_id, attempt, state, reason, exit_code, usage) \
         ), done AS ( \
             UPDATE jobs j SET state = i.state::job_state, worker_id = NULL, \
                 lease_expires_at = NULL, \
                 finished_at = CASE WHEN i.state = 'scheduled' THEN NULL ELSE now() END \
             FROM input i WHERE j.id = i.job_id RETURNING j.id, j.started_at \
         ) \
         INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, reason, exit_code, usage) \
         SELECT i.job_id, i.attempt, $7, d.started_at, i.reason, i.exit_code, i.usage \
         FROM input i JOIN done d ON d.id = i.job_id",
    )
    .bind(attempts.iter().map(|a| a.0).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.1).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.2.clone()).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.3.clone()).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.4).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.5.clone()).collect::<Vec<_>>())
    .bind(w)
    .execute(&mut *tx)
    .await
    .unwrap();
    let by_triggers = accounting(&mut tx).await;
    tx.rollback().await.unwrap();

    // What both must show: A counts its two finished jobs and stays open, B completes; six jobs
    // finished (the retry is not), each counted once.
    let batches = by_flush["batches"].as_array().unwrap();
    let finished: HashMap<String, i64> = batches
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[2].as_i64().unwrap()))
        .collect();
    assert_eq!(finished[&a.to_string()], 2, "{by_flush}");
    assert_eq!(finished[&b.to_string()], 2, "{by_flush}");
    assert_eq!(
        by_flush["finishes"].as_array().unwrap().len(),
        4,
        "{by_flush}"
    );
    let outbox = by_flush["outbox"].as_array().unwrap();
    let events: Vec<&str> = outbox.iter().map(|r| r[2].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "batch.completed",
            "job.completed",
            "job.completed",
            "job.completed",
            "job.completed",
            "job.completed",
            "job.completed"
        ],
        "{by_flush}"
    );
    let attempts_counted: i64 = by_flush["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[2].as_i64().unwrap())
        .sum();
    assert_eq!(attempts_counted, 7, "{by_flush}");
    assert_eq!(by_flush, by_triggers);
}

#[tokio::test]
async fn retention_prunes_old_finished_jobs_with_their_logs() {
    let db = db().await;
    let pool = &db.pool;
    let old = insert(pool, new_job("default", 0, 1)).await;
    let recent = insert(pool, new_job("default", 0, 1)).await;
    let queued = insert(pool, new_job("default", 0, 1)).await;
    // The old and the recent job are a batch's: each gets its place in the finish order.
    let batch = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO batches (id, tenant_id, total, spec_hash) VALUES ($1, 'default', 2, '\\x00')",
    )
    .bind(batch)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET batch_id = $1 WHERE id = ANY($2)")
        .bind(batch)
        .bind([old, recent])
        .execute(pool)
        .await
        .unwrap();
    let w = Uuid::now_v7();
    let claimed = queue::claim(pool, w, "default", 2, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    for id in [old, recent] {
        queue::insert_chunks(
            pool,
            w,
            &[NewChunk {
                job_id: id,
                attempt: 1,
                seq: 1,
                stream: nekton::model::ChunkKind::Output(nekton::model::OutputStream::Stdout),
                data: b"x".to_vec(),
            }],
        )
        .await
        .unwrap();
        queue::complete(pool, w, &[done(id, 1, JobState::Succeeded)])
            .await
            .unwrap();
    }
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '8 days' WHERE id = $1")
        .bind(old)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        queue::prune(pool, Duration::from_secs(7 * 86400), 100)
            .await
            .unwrap(),
        1
    );
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, vec![recent, queued]);
    let chunks: Vec<Uuid> = sqlx::query_scalar("SELECT job_id FROM log_chunks")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(chunks, vec![recent]);
    // A job's other rows go with it (they have no foreign key to cascade: migration 0023), and
    // only its own.
    for (table, want) in [
        ("job_specs", vec![recent, queued]),
        ("job_attempts", vec![recent]),
        ("batch_finishes", vec![recent]),
    ] {
        let ids: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT job_id FROM {table} ORDER BY job_id"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        let mut want = want;
        want.sort();
        assert_eq!(ids, want, "{table}");
    }
}

/// Every table with a `job_id` column holds rows of a job, which no foreign key deletes with it:
/// retention must know it (`queue::JOB_CHILDREN`), or its rows would outlive their job. Range
/// partitions of `log_chunks` go whole (`partitions::retire`), so the partitioned parent stands for
/// them.
#[tokio::test]
async fn every_table_with_a_job_id_is_pruned_with_its_job() {
    let db = db().await;
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
         WHERE a.attname = 'job_id' AND NOT a.attisdropped AND c.relkind IN ('r', 'p') \
           AND NOT c.relispartition",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    tables.sort();
    let mut pruned: Vec<String> = queue::JOB_CHILDREN
        .iter()
        .map(|t| match *t {
            "log_chunks_default" => "log_chunks".to_string(),
            t => t.to_string(),
        })
        .collect();
    pruned.sort();
    assert_eq!(tables, pruned);
}

/// Creates or changes a tenant's weight and max_running.
async fn tenant(pool: &PgPool, id: &str, weight: i32, max_running: Option<i32>) {
    sqlx::query(
        "INSERT INTO tenants (id, weight, max_running) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET weight = EXCLUDED.weight, max_running = EXCLUDED.max_running",
    )
    .bind(id)
    .bind(weight)
    .bind(max_running)
    .execute(pool)
    .await
    .unwrap();
}

/// `n` queued jobs of `tenant` in `queue` in one statement (with their specs), as old as `age_s`
/// seconds, in id order.
async fn backlog(pool: &PgPool, tenant: &str, queue: &str, n: i64, age_s: f64) {
    sqlx::query(
        "WITH new AS ( \
             INSERT INTO jobs (id, tenant_id, queue, max_attempts, run_at, created_at) \
             SELECT gen_random_uuid(), $1, $2, 1, now() - $4 * interval '1 second', now() \
             FROM generate_series(1, $3) \
             RETURNING id \
         ) \
         INSERT INTO job_specs (job_id, spec, spec_hash, program) \
         SELECT id, '{\"module\": \"sha256:test\"}', '\\x00', 'sha256:test' FROM new",
    )
    .bind(tenant)
    .bind(queue)
    .bind(n)
    .bind(age_s)
    .execute(pool)
    .await
    .unwrap();
}

/// The tenant of each job.
async fn tenants_of(pool: &PgPool, ids: &[Uuid]) -> HashMap<Uuid, String> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, tenant_id FROM jobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// How many of `claimed` belong to each tenant. The claim's own answer names each job's tenant
/// (the worker chooses its writer lane by it): it must be the stored one.
async fn per_tenant(pool: &PgPool, claimed: &[Claimed]) -> HashMap<String, usize> {
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
    let stored = tenants_of(pool, &ids).await;
    let mut counts = HashMap::new();
    for c in claimed {
        assert_eq!(
            stored.get(&c.id),
            Some(&c.tenant),
            "the claim's tenant of {}",
            c.id
        );
        *counts.entry(c.tenant.clone()).or_insert(0) += 1;
    }
    counts
}

async fn finish(pool: &PgPool, worker: Uuid, claimed: &[Claimed]) {
    let done: Vec<Completion> = claimed
        .iter()
        .map(|c| done(c.id, c.attempt, JobState::Succeeded))
        .collect();
    let applied = queue::complete(pool, worker, &done).await.unwrap();
    assert_eq!(applied.len(), claimed.len(), "every completion applies");
}

async fn running_of(pool: &PgPool, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1 AND state = 'running'")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_lone_job_of_another_tenant_is_claimed_before_a_backlog_drains() {
    let db = db().await;
    let pool = &db.pool;
    tenant(pool, "a", 1, None).await;
    tenant(pool, "b", 1, None).await;
    backlog(pool, "a", "default", 500, 60.0).await;
    let w = Uuid::now_v7();
    let first = queue::claim(pool, w, "default", 8, LEASE).await.unwrap();
    assert_eq!(per_tenant(pool, &first).await.get("a"), Some(&8));

    // B submits one job after A's 500; one of A's jobs ends and frees a slot.
    let b_job = insert_for(pool, "b", new_job("default", 0, 1)).await;
    finish(pool, w, &first[..1]).await;
    let next = queue::claim(pool, w, "default", 1, LEASE).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![b_job],
        "B (0 running) is served before A (7 running), however old A's backlog is"
    );
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE tenant_id = 'a' AND state IN ('queued', 'scheduled')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(waiting, 492, "A's backlog is still there");

    // Both idle with work: one slot each, the oldest work first on a tie.
    finish(pool, w, &first[1..]).await;
    finish(pool, w, &next).await;
    let b2 = insert_for(pool, "b", new_job("default", 0, 1)).await;
    let both = queue::claim(pool, w, "default", 2, LEASE).await.unwrap();
    let counts = per_tenant(pool, &both).await;
    assert_eq!((counts.get("a"), counts.get("b")), (Some(&1), Some(&1)));
    assert!(both.iter().any(|c| c.id == b2));
}

#[tokio::test]
async fn weights_share_the_slots_proportionally() {
    let db = db().await;
    let pool = &db.pool;
    tenant(pool, "heavy", 3, None).await;
    tenant(pool, "light", 1, None).await;
    backlog(pool, "heavy", "default", 100, 10.0).await;
    backlog(pool, "light", "default", 100, 20.0).await;
    let w = Uuid::now_v7();

    // Eight free slots at once: 6 and 2.
    let c = queue::claim(pool, w, "default", 8, LEASE).await.unwrap();
    let counts = per_tenant(pool, &c).await;
    assert_eq!((counts["heavy"], counts["light"]), (6, 2), "{counts:?}");

    // Slots freed one at a time keep the ratio: light's job ends, light gets the slot back (its
    // next job would bring it to 2/1, heavy's to 7/3).
    let light_one: Vec<Claimed> = {
        let t = tenants_of(pool, &c.iter().map(|x| x.id).collect::<Vec<_>>()).await;
        c.iter()
            .filter(|x| t[&x.id] == "light")
            .take(1)
            .cloned()
            .collect()
    };
    finish(pool, w, &light_one).await;
    let again = queue::claim(pool, w, "default", 1, LEASE).await.unwrap();
    assert_eq!(per_tenant(pool, &again).await.get("light"), Some(&1));

    // Forty single claims from nothing running: 30 and 10.
    let running: Vec<Claimed> = c
        .into_iter()
        .chain(again)
        .filter(|x| !light_one.iter().any(|l| l.id == x.id))
        .collect();
    finish(pool, w, &running).await;
    let mut all = Vec::new();
    for _ in 0..40 {
        all.extend(queue::claim(pool, w, "default", 1, LEASE).await.unwrap());
    }
    let counts = per_tenant(pool, &all).await;
    assert_eq!((counts["heavy"], counts["light"]), (30, 10), "{counts:?}");
}

#[tokio::test]
async fn max_running_holds_however_many_workers_claim_at_once() {
    let db = db().await;
    let pool = &db.pool;
    tenant(pool, "capped", 1, Some(2)).await;
    tenant(pool, "free", 1, None).await;
    backlog(pool, "capped", "default", 50, 10.0).await;
    backlog(pool, "free", "default", 50, 5.0).await;

    // Six workers claiming up to 4 each, concurrently, until both backlogs are done; each checks
    // the capped tenant's running count right after every claim it commits, and a sampler checks
    // it all the time.
    let max_seen = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pool, max_seen, stop) = (pool.clone(), max_seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = running_of(&pool, "capped").await;
                max_seen.fetch_max(n, Ordering::Relaxed);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples
        })
    };
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (pool, max_seen) = (pool.clone(), max_seen.clone());
        workers.push(tokio::spawn(async move {
            let w = Uuid::now_v7();
            let mut claimed_capped = 0usize;
            let mut idle_rounds = 0;
            while idle_rounds < 20 {
                let got = queue::claim(&pool, w, "default", 4, LEASE).await.unwrap();
                let n = running_of(&pool, "capped").await;
                max_seen.fetch_max(n, Ordering::Relaxed);
                if got.is_empty() {
                    idle_rounds += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle_rounds = 0;
                claimed_capped += per_tenant(&pool, &got)
                    .await
                    .get("capped")
                    .copied()
                    .unwrap_or(0);
                // "Run" the jobs for a moment, then record them.
                tokio::time::sleep(Duration::from_millis(3)).await;
                finish(&pool, w, &got).await;
            }
            claimed_capped
        }));
    }
    let mut capped_total = 0;
    for h in workers {
        capped_total += h.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let max = max_seen.load(Ordering::Relaxed);
    assert!(
        max <= 2,
        "the capped tenant had {max} jobs running (max_running 2)"
    );
    assert_eq!(
        max, 2,
        "the cap was reached at some point ({samples} samples)"
    );
    assert_eq!(capped_total, 50);
    let left: Vec<(String, JobState, i64)> =
        sqlx::query_as("SELECT tenant_id, state, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![
            ("capped".to_string(), JobState::Succeeded, 50),
            ("free".to_string(), JobState::Succeeded, 50)
        ]
    );
}

#[tokio::test]
async fn max_running_zero_pauses_a_tenant_until_lifted() {
    let db = db().await;
    let pool = &db.pool;
    tenant(pool, "paused", 1, Some(0)).await;
    tenant(pool, "other", 1, None).await;
    backlog(pool, "paused", "default", 3, 60.0).await;
    backlog(pool, "other", "default", 2, 1.0).await;
    let w = Uuid::now_v7();
    let c = queue::claim(pool, w, "default", 10, LEASE).await.unwrap();
    assert_eq!(
        per_tenant(pool, &c).await,
        HashMap::from([("other".to_string(), 2)])
    );
    assert!(
        queue::claim(pool, w, "default", 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    tenant(pool, "paused", 1, None).await;
    let c = queue::claim(pool, w, "default", 10, LEASE).await.unwrap();
    assert_eq!(
        per_tenant(pool, &c).await,
        HashMap::from([("paused".to_string(), 3)])
    );
}

#[tokio::test]
async fn priority_and_fifo_hold_within_each_tenant() {
    let db = db().await;
    let pool = &db.pool;
    tenant(pool, "a", 1, None).await;
    tenant(pool, "b", 1, None).await;
    let a_low1 = insert_for(pool, "a", new_job("q", 0, 1)).await;
    let b_low = insert_for(pool, "b", new_job("q", 0, 1)).await;
    let a_high = insert_for(pool, "a", new_job("q", 5, 1)).await;
    let a_low2 = insert_for(pool, "a", new_job("q", 0, 1)).await;
    let b_top = insert_for(pool, "b", new_job("q", 9, 1)).await;
    insert_for(pool, "a", new_job("elsewhere", 100, 1)).await;
    let w = Uuid::now_v7();
    let ids = |c: Vec<Claimed>| {
        let mut v: Vec<Uuid> = c.into_iter().map(|c| c.id).collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };
    // One slot each, each tenant's first by priority.
    let first = queue::claim(pool, w, "q", 2, LEASE).await.unwrap();
    assert_eq!(ids(first), sorted(vec![a_high, b_top]));
    // Then a's oldest, b's last, a's newest.
    let second = queue::claim(pool, w, "q", 2, LEASE).await.unwrap();
    assert_eq!(ids(second), sorted(vec![a_low1, b_low]));
    let third = queue::claim(pool, w, "q", 2, LEASE).await.unwrap();
    assert_eq!(ids(third), vec![a_low2]);
}

/// Shared buffers one claim of 8 on `conn` touches (the whole function, all its statements);
/// the claim is rolled back.
async fn claim_buffers(conn: &mut sqlx::PgConnection) -> i64 {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await.unwrap();
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM nekton_claim('default', 8, $1, 30000)",
    )
    .bind(Uuid::now_v7())
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let top = &plan[0]["Plan"];
    assert_eq!(top["Actual Rows"].as_f64(), Some(8.0), "{plan}");
    top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap()
}

/// The claim reads each tenant's head of the queue through the partial indexes, whatever the size
/// of the backlog or the number of finished jobs — also when its cached plan was made while the
/// table was young (a plan made then must not scan the table, or a whole index, once it has grown).
#[tokio::test]
async fn the_claims_work_does_not_grow_with_the_backlog_or_finished_jobs() {
    let db = db().await;
    let pool = &db.pool;
    tenant(pool, "a", 1, None).await;
    tenant(pool, "b", 1, None).await;
    // A young table, analyzed as autovacuum would; this connection makes its plans now.
    backlog(pool, "b", "default", 30, 1.0).await;
    sqlx::query("ANALYZE jobs").execute(pool).await.unwrap();
    sqlx::query("ANALYZE job_specs")
        .execute(pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let w = Uuid::now_v7();
    for _ in 0..4 {
        let got: Vec<(Uuid, i32)> =
            sqlx::query_as("SELECT id, attempt FROM nekton_claim('default', 8, $1, 30000)")
                .bind(w)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let done: Vec<Completion> = got
            .iter()
            .map(|(id, attempt)| done(*id, *attempt, JobState::Succeeded))
            .collect();
        queue::complete(pool, w, &done).await.unwrap();
    }

    // Grown: 5,000 waiting jobs of A, 50,000 finished ones (a scan of jobs would touch over
    // 1,000 pages, one of A's backlog in an index hundreds).
    backlog(pool, "a", "default", 5000, 30.0).await;
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, state, queue, max_attempts, attempt, finished_at) \
         SELECT gen_random_uuid(), 'a', 'succeeded', 'default', 1, 1, now() FROM generate_series(1, 50000)",
    )
    .execute(pool)
    .await
    .unwrap();
    let first = claim_buffers(&mut conn).await;
    let buffers = claim_buffers(&mut conn).await;
    eprintln!("a claim of 8: {buffers} buffers ({first} for the first after the growth)");
    // A claim of 8 touches a few index and heap pages per tenant: about 300 buffers here. A plan
    // that reads A's backlog through an index touches thousands (51,000 with a 50,000-job backlog),
    // a sequential scan of jobs over 1,000.
    assert!(
        buffers <= 600,
        "a claim of 8 touched {buffers} buffers with 5,000 waiting and 50,030 finished jobs \
         (the first claim after the growth: {first})"
    );

    // The per-tenant pick, as the planner sees it with 5,000 waiting jobs and fresh statistics:
    // an ordered scan of jobs_tenant_claimable that stops at its limit.
    sqlx::query("ANALYZE jobs").execute(pool).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM jobs WHERE tenant_id = $1 AND queue = $2 \
         AND state IN ('queued', 'scheduled') AND run_at <= now() \
         ORDER BY priority DESC, run_at, id LIMIT 32 FOR UPDATE SKIP LOCKED",
    )
    .bind("a")
    .bind("default")
    .fetch_all(pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Scan using jobs_tenant_claimable"),
        "{plan}"
    );
    assert!(
        !plan.contains("Sort"),
        "the pick must not sort a tenant's backlog:\n{plan}"
    );
}

/// The hot tables are vacuumed and analyzed after a fixed number of changes (migration 0011), not
/// after PostgreSQL's default 20 % / 10 % of their size.
/// (`log_chunks` is partitioned since 0012: its partitions carry the settings, the DEFAULT one here.)
#[tokio::test]
async fn hot_tables_are_vacuumed_after_a_fixed_number_of_changes() {
    let db = db().await;
    let options = |table: &'static str| {
        let pool = db.pool.clone();
        async move {
            let opts: Option<Vec<String>> =
                sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = $1::regclass")
                    .bind(table)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            opts.unwrap_or_default()
        }
    };
    for (table, wanted) in [
        ("jobs", "autovacuum_vacuum_threshold=1000"),
        ("jobs", "autovacuum_analyze_threshold=1000"),
        ("job_attempts", "autovacuum_vacuum_threshold=1000"),
        (
            "log_chunks_default",
            "autovacuum_vacuum_insert_scale_factor=0.05",
        ),
    ] {
        let got = options(table).await;
        assert!(
            got.iter().any(|o| o == wanted),
            "{table}: {wanted} not in {got:?}"
        );
    }
}

/// One backend, as a worker's writer is: a pool of one connection (so every statement shares one
/// backend's cached plans and statistics counters) on a fresh database without autovacuum on `jobs`
/// (its statistics are the test's), and a job claimed there by a new worker: (db, pool, worker, job).
async fn one_backend_with_a_claimed_job() -> (TestDb, PgPool, Uuid, Uuid) {
    let db = db().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.connect_options())
        .await
        .unwrap();
    sqlx::query("ALTER TABLE jobs SET (autovacuum_enabled = off)")
        .execute(&pool)
        .await
        .unwrap();
    let worker = Uuid::now_v7();
    let id = insert(&pool, new_job("default", 0, 3)).await;
    let claimed = queue::claim(&pool, worker, "default", 1, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    (db, pool, worker, id)
}

/// A chunk of attempt 1's output on `stream`.
fn output_chunk(
    job_id: Uuid,
    seq: i32,
    stream: nekton::model::OutputStream,
    data: &[u8],
) -> NewChunk {
    NewChunk {
        job_id,
        attempt: 1,
        seq,
        stream: nekton::model::ChunkKind::Output(stream),
        data: data.to_vec(),
    }
}

/// A one-byte stdout chunk of attempt 1.
fn stdout_chunk(job_id: Uuid, seq: i32) -> NewChunk {
    output_chunk(job_id, seq, nekton::model::OutputStream::Stdout, b"x")
}

/// A stdout chunk of attempt 1, as a message to a writer.
fn stdout_message(job_id: Uuid, seq: i32, data: &[u8]) -> nekton::worker::writer::WriterMsg {
    nekton::worker::writer::WriterMsg::Chunk(output_chunk(
        job_id,
        seq,
        nekton::model::OutputStream::Stdout,
        data,
    ))
}

/// A statistics counter (`sql` reads it) as it stands after this backend's pending counters are
/// flushed into the shared statistics.
async fn counter_now(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The worker's `complete` and `insert_chunks` (and, since migration 0015 reads the leases from
/// `jobs`, the rescuer's `rescue`) are planned for every execution, never from a
/// cached generic plan (see `queue::complete`): a generic plan made while `jobs` was small kept
/// scanning the whole table after it grew. On one connection, both run ten times while `jobs`
/// holds one row and was analyzed so (a named statement switches to its generic plan after
/// five); then `jobs` grows by 20,000 rows (autovacuum off, so no ANALYZE invalidates a plan),
/// and the next executions must not read `jobs` sequentially (`seq_tup_read`). With prepared
/// statements they read all 20,001 rows each.
#[tokio::test]
async fn the_writers_statements_stay_on_the_indexes_as_jobs_grows() {
    let (_db, pool, worker, id) = one_backend_with_a_claimed_job().await;
    // Statistics of the small table, as autovacuum keeps them on a fresh server.
    sqlx::query("ANALYZE jobs").execute(&pool).await.unwrap();
    let chunk = |seq| stdout_chunk(id, seq);
    let stranger = Uuid::now_v7();
    for seq in 1..=10 {
        // The rescuer's pass (nothing expired): planned each time too (migration 0015 reads the
        // leases from `jobs`).
        assert!(queue::rescue(&pool, 100, 3).await.unwrap().is_empty());
        queue::insert_chunks(&pool, worker, &[chunk(seq)])
            .await
            .unwrap();
        // Another job's completion: fenced out, but planned and run all the same.
        queue::complete(&pool, worker, &[done(stranger, 1, JobState::Succeeded)])
            .await
            .unwrap();
        // The writer's one-statement flush (`nekton_flush`, its plan cached per connection):
        // chunks and a completion, fenced out the same way.
        let flushed = queue::flush(
            &pool,
            worker,
            &[NewChunk {
                job_id: stranger,
                ..chunk(seq)
            }],
            &[done(stranger, 1, JobState::Succeeded)],
            Notices::Notify,
        )
        .await
        .unwrap();
        assert!(flushed.is_empty());
    }
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, queue, max_attempts, state, finished_at) \
         SELECT gen_random_uuid(), tenant_id, queue, max_attempts, 'succeeded', now() \
         FROM jobs j, generate_series(1, 20000) WHERE j.id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    // Rows this backend read from `jobs` by sequential scans.
    let seq_read = || {
        counter_now(
            &pool,
            "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass",
        )
    };
    let before = seq_read().await;
    assert!(queue::rescue(&pool, 100, 3).await.unwrap().is_empty());
    queue::insert_chunks(&pool, worker, &[chunk(11)])
        .await
        .unwrap();
    queue::complete(&pool, worker, &[done(stranger, 1, JobState::Succeeded)])
        .await
        .unwrap();
    // The flush, as the writer sends it: the job's last chunk with its completion.
    let done_ids = queue::flush(
        &pool,
        worker,
        &[chunk(12)],
        &[done(id, 1, JobState::Succeeded)],
        Notices::Notify,
    )
    .await
    .unwrap();
    assert_eq!(done_ids, [id]);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM log_chunks WHERE job_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        stored, 12,
        "the flush stored the last chunk with the completion"
    );
    let read = seq_read().await - before;
    assert!(
        read < 1000,
        "the writer's statements read {read} rows of `jobs` sequentially after it grew to 20,001 \
         rows: a generic plan made while it was small"
    );
}

/// A flush reaches its jobs by primary key (migration 0020), however many jobs run: its plan is
/// made once per connection, often while the partial index of running jobs looks empty, and a plan
/// through that index read every running job of every worker for each flush (and rescanned the
/// flush's input for each of them).
#[tokio::test]
async fn a_flush_reads_only_its_own_jobs_however_many_run() {
    let (_db, pool, worker, id) = one_backend_with_a_claimed_job().await;
    // Statistics of a table of finished jobs with one running, as autovacuum takes them on a
    // server between bursts.
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, queue, max_attempts, state, finished_at) \
         SELECT gen_random_uuid(), tenant_id, queue, max_attempts, 'succeeded', now() \
         FROM jobs j, generate_series(1, 5000) WHERE j.id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE jobs").execute(&pool).await.unwrap();
    // The writer's first flush on this connection makes its plan: a stranger's, fenced out.
    let stranger = Uuid::now_v7();
    let flushed = queue::flush(
        &pool,
        worker,
        &[stdout_chunk(stranger, 1)],
        &[done(stranger, 1, JobState::Succeeded)],
        Notices::Notify,
    )
    .await
    .unwrap();
    assert!(flushed.is_empty());
    // Then 500 jobs run on other workers.
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, queue, max_attempts, state, attempt, worker_id, \
                           started_at, lease_expires_at) \
         SELECT gen_random_uuid(), tenant_id, queue, max_attempts, 'running', 1, gen_random_uuid(), \
                now(), now() + interval '1 hour' \
         FROM jobs j, generate_series(1, 500) WHERE j.id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    // Entries this backend read from the running jobs' index.
    let running_read = || {
        counter_now(
            &pool,
            "SELECT idx_tup_read FROM pg_stat_user_indexes \
             WHERE indexrelid = 'jobs_tenant_running'::regclass",
        )
    };
    let before = running_read().await;
    let done_ids = queue::flush(
        &pool,
        worker,
        &[stdout_chunk(id, 1)],
        &[done(id, 1, JobState::Succeeded)],
        Notices::Notify,
    )
    .await
    .unwrap();
    assert_eq!(done_ids, [id]);
    let read = running_read().await - before;
    assert!(
        read < 50,
        "one job's flush read {read} entries of the running jobs' index with 501 jobs running"
    );
}

/// Migration 0015 moves each running job's lease from `leases` into its row, on a database holding
/// jobs in every state: a live lease keeps its expiry (its worker renews and completes as before),
/// an expired one and a running job without a lease row are rescued, every other job keeps its
/// state with no lease, and the waiting ones are claimed as before.
#[tokio::test]
async fn the_lease_migration_keeps_jobs_in_every_state() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    nekton::store::MIGRATOR
        .run_to(14, pool)
        .await
        .expect("migrations up to 0014 apply");
    let mut ids = HashMap::new();
    for name in [
        "live",
        "expired",
        "orphan",
        "queued",
        "scheduled",
        "succeeded",
        "failed",
        "cancelled",
        "error",
    ] {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO jobs (id, tenant_id, queue, max_attempts) VALUES ($1, 'default', 'm', 3)",
        )
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO job_specs (job_id, spec, spec_hash, program) VALUES ($1, '{}', '\\x00', 'p')",
        )
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
        ids.insert(name, id);
    }
    // The claim of 0013 (with `leases` rows) takes the first three, oldest first.
    let worker = Uuid::now_v7();
    let claimed: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM nekton_claim('m', 3, $1, 30000)")
        .bind(worker)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(claimed, [ids["live"], ids["expired"], ids["orphan"]]);
    sqlx::query("UPDATE leases SET expires_at = now() - interval '5 seconds' WHERE job_id = $1")
        .bind(ids["expired"])
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM leases WHERE job_id = $1")
        .bind(ids["orphan"])
        .execute(pool)
        .await
        .unwrap();
    let live_expiry: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM leases WHERE job_id = $1")
            .bind(ids["live"])
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query(
        "UPDATE jobs SET state = 'scheduled', run_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(ids["scheduled"])
    .execute(pool)
    .await
    .unwrap();
    for s in ["succeeded", "failed", "cancelled", "error"] {
        sqlx::query("UPDATE jobs SET state = $2::job_state, finished_at = now() WHERE id = $1")
            .bind(ids[s])
            .bind(s)
            .execute(pool)
            .await
            .unwrap();
    }

    nekton::store::migrate(pool)
        .await
        .expect("0015 and later apply");

    let gone: bool = sqlx::query_scalar("SELECT to_regclass('leases') IS NULL")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(gone, "the leases table is dropped");
    type Row = (String, i32, Option<chrono::DateTime<chrono::Utc>>, bool);
    let row = |id: Uuid| async move {
        sqlx::query_as::<_, Row>(
            "SELECT state::text, attempt, lease_expires_at, coalesce(lease_expires_at <= now(), false) \
             FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let live = row(ids["live"]).await;
    assert_eq!(
        (live.0.as_str(), live.1, live.2),
        ("running", 1, Some(live_expiry))
    );
    for name in ["expired", "orphan"] {
        let r = row(ids[name]).await;
        assert_eq!(
            (r.0.as_str(), r.1, r.3),
            ("running", 1, true),
            "{name}: {r:?}"
        );
    }
    for name in [
        "queued",
        "scheduled",
        "succeeded",
        "failed",
        "cancelled",
        "error",
    ] {
        let r = row(ids[name]).await;
        assert_eq!((r.0.as_str(), r.1, r.2), (name, 0, None), "{name}");
    }

    // The rescuer takes the expired lease and the running job that had none.
    let mut rescued: Vec<Uuid> = queue::rescue(pool, 100, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    rescued.sort();
    let mut want = vec![ids["expired"], ids["orphan"]];
    want.sort();
    assert_eq!(rescued, want);
    // The live lease's worker renews it and records its end; a stranger changes nothing.
    assert!(
        queue::heartbeat(pool, Uuid::now_v7(), &[ids["live"]], LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        queue::heartbeat(pool, worker, &[ids["live"]], LEASE)
            .await
            .unwrap(),
        vec![(ids["live"], false)]
    );
    assert_eq!(
        queue::complete(pool, worker, &[done(ids["live"], 1, JobState::Succeeded)])
            .await
            .unwrap(),
        vec![ids["live"]]
    );
    // The waiting job is claimed as before; nothing finished or scheduled ahead comes back.
    let again = queue::claim(pool, Uuid::now_v7(), "m", 10, LEASE)
        .await
        .unwrap();
    let again: Vec<Uuid> = again.iter().map(|c| c.id).collect();
    assert!(again.contains(&ids["queued"]), "{again:?}");
    for name in [
        "scheduled",
        "succeeded",
        "failed",
        "cancelled",
        "error",
        "live",
    ] {
        assert!(!again.contains(&ids[name]), "{name} claimed: {again:?}");
    }
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE (state = 'running') <> (lease_expires_at IS NOT NULL)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        leased, 0,
        "every running job has a lease, no other job has one"
    );
}

/// A listener on the channels a worker's writer notifies: `nekton_logs`, `nekton_state`.
async fn listen_to_the_writers_channels(pool: &PgPool) -> sqlx::postgres::PgListener {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .unwrap();
    listener
        .listen_all([nekton::store::CHANNEL_LOGS, nekton::store::CHANNEL_STATE])
        .await
        .unwrap();
    listener
}

/// A writer's flush stores chunks and completions in one statement: the chunks of running
/// attempts and the completions whose fence holds apply, a taken-over attempt's chunks and
/// completion apply nothing, and the two NOTIFYs (logs, then state) carry the same payloads as the
/// separate statements did.
#[tokio::test]
async fn a_flush_stores_chunks_and_completions_in_one_statement_fenced() {
    let db = db().await;
    let pool = &db.pool;
    let mut listener = listen_to_the_writers_channels(pool).await;
    let w = Uuid::now_v7();
    let (ending, going_on, lost) = (
        insert(pool, new_job("default", 0, 1)).await,
        insert(pool, new_job("default", 0, 1)).await,
        insert(pool, new_job("default", 0, 1)).await,
    );
    assert_eq!(
        queue::claim(pool, w, "default", 3, LEASE)
            .await
            .unwrap()
            .len(),
        3
    );
    // `lost` was taken over by another worker (attempt 2).
    sqlx::query("UPDATE jobs SET attempt = 2, worker_id = $2 WHERE id = $1")
        .bind(lost)
        .bind(Uuid::now_v7())
        .execute(pool)
        .await
        .unwrap();
    let chunk = |job_id, seq, data: &[u8]| {
        output_chunk(job_id, seq, nekton::model::OutputStream::Stdout, data)
    };
    let chunks = [
        chunk(ending, 1, b"a"),
        chunk(ending, 2, b"b"),
        chunk(going_on, 1, b"c"),
        chunk(lost, 1, b"x"),
    ];
    let applied = queue::flush(
        pool,
        w,
        &chunks,
        &[
            done(ending, 1, JobState::Succeeded),
            done(lost, 1, JobState::Succeeded),
        ],
        Notices::Notify,
    )
    .await
    .unwrap();
    assert_eq!(applied, [ending]);
    let stored: Vec<(Uuid, i32, Vec<u8>)> =
        sqlx::query_as("SELECT job_id, seq, data FROM log_chunks ORDER BY job_id, seq")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [
            (ending, 1, b"a".to_vec()),
            (ending, 2, b"b".to_vec()),
            (going_on, 1, b"c".to_vec())
        ]
    );
    assert_eq!(state(pool, ending).await, (JobState::Succeeded, 1));
    assert_eq!(state(pool, going_on).await, (JobState::Running, 1));
    assert_eq!(state(pool, lost).await, (JobState::Running, 2));
    // Logs first (the jobs that got output), then the state change.
    let first = listener.recv().await.unwrap();
    assert_eq!(first.channel(), nekton::store::CHANNEL_LOGS);
    let mut got: Vec<&str> = first.payload().split(',').collect();
    got.sort();
    let mut want = vec![ending.to_string(), going_on.to_string()];
    want.sort();
    assert_eq!(got, want);
    let second = listener.recv().await.unwrap();
    assert_eq!(second.channel(), nekton::store::CHANNEL_STATE);
    // The completion names the state it moved the job to (`model::parse_states`).
    assert_eq!(second.payload(), format!("succeeded,{ending}"));
    // A flush again with only the stale completion and chunk: nothing applies, nothing is sent.
    assert!(
        queue::flush(
            pool,
            w,
            &[chunk(lost, 2, b"y")],
            &[done(lost, 1, JobState::Failed)],
            Notices::Notify
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "no notification for a flush that applied nothing"
    );
}

/// A flush carrying the output and completions of more jobs than one NOTIFY payload can name
/// (PostgreSQL refuses 8000 bytes or more: ~215 job ids) is stored, and its notifications come
/// in parts — every job id on the logs channel, then every `state,id` pair on the state channel,
/// each payload under the limit. The logs channel's one payload made such a flush fail, and the
/// writer retried it forever (a worker with `--slots=512`).
#[tokio::test]
async fn a_flush_of_hundreds_of_jobs_notifies_them_in_parts() {
    let db = db().await;
    let pool = &db.pool;
    let mut listener = listen_to_the_writers_channels(pool).await;
    let n = 400;
    backlog(pool, TENANT, "default", n, 1.0).await;
    let w = Uuid::now_v7();
    let claimed = queue::claim(pool, w, "default", n, LEASE).await.unwrap();
    assert_eq!(claimed.len(), n as usize);
    let chunks: Vec<NewChunk> = claimed
        .iter()
        .map(|j| NewChunk {
            job_id: j.id,
            attempt: j.attempt,
            seq: 1,
            stream: nekton::model::ChunkKind::Output(nekton::model::OutputStream::Stdout),
            data: b"hello\n".to_vec(),
        })
        .collect();
    let completions: Vec<Completion> = claimed
        .iter()
        .map(|j| done(j.id, j.attempt, JobState::Succeeded))
        .collect();
    let applied = queue::flush(pool, w, &chunks, &completions, Notices::Notify)
        .await
        .unwrap();
    assert_eq!(applied.len(), n as usize);
    let mut logs = std::collections::BTreeSet::new();
    let mut states = std::collections::BTreeSet::new();
    let mut parts = [0; 2];
    while logs.len() < n as usize || states.len() < n as usize {
        let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("every job named within 10 s")
            .unwrap();
        assert!(
            note.payload().len() < 8000,
            "{} bytes",
            note.payload().len()
        );
        if note.channel() == nekton::store::CHANNEL_LOGS {
            assert!(states.is_empty(), "the logs notifications come first");
            parts[0] += 1;
            logs.extend(
                note.payload()
                    .split(',')
                    .map(|s| s.parse::<Uuid>().unwrap()),
            );
        } else {
            parts[1] += 1;
            let words: Vec<&str> = note.payload().split(',').collect();
            for pair in words.chunks(2) {
                assert_eq!(pair[0], "succeeded", "{pair:?}");
                states.insert(pair[1].parse::<Uuid>().unwrap());
            }
        }
    }
    let want: std::collections::BTreeSet<Uuid> = claimed.iter().map(|j| j.id).collect();
    assert_eq!((logs, states), (want.clone(), want));
    assert_eq!(
        parts,
        [3, 3],
        "400 ids and 400 pairs, each in parts of at most 150"
    );
}

/// A writer whose process is the database's only follower (`Notices::InProcess`: `nekton serve`
/// on its embedded database) stores its output and completions as any writer does but sends no
/// NOTIFY: it tells its process instead, after the commit, of the jobs that got output and of the
/// completions applied. A listener sees nothing before a NOTIFY sent afterwards.
#[tokio::test]
async fn a_writer_that_tells_its_process_stores_everything_and_notifies_nothing() {
    use nekton::metrics::Metrics;
    use nekton::worker::writer::{self, WriterMsg};
    let db = db().await;
    let pool = &db.pool;
    let mut listener = listen_to_the_writers_channels(pool).await;
    backlog(pool, TENANT, "default", 2, 1.0).await;
    let w = Uuid::now_v7();
    let claimed = queue::claim(pool, w, "default", 2, LEASE).await.unwrap();
    let (ending, going_on) = (claimed[0].id, claimed[1].id);
    let chunk = stdout_message;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(chunk(ending, 1, b"a")).await.unwrap();
    tx.send(chunk(ending, 2, b"b")).await.unwrap();
    tx.send(chunk(going_on, 1, b"c")).await.unwrap();
    let (ack, answered) = tokio::sync::oneshot::channel();
    tx.send(WriterMsg::Complete(
        Box::new(done(ending, 1, JobState::Succeeded)),
        ack,
    ))
    .await
    .unwrap();
    drop(tx);
    type Told = (Vec<Uuid>, Vec<(Uuid, JobState)>);
    let told: Arc<std::sync::Mutex<Told>> = Arc::default();
    let on_stored: writer::OnStored = {
        let told = told.clone();
        Arc::new(move |stored: writer::Stored<'_>| {
            let mut told = told.lock().unwrap();
            told.0.extend_from_slice(stored.output);
            told.1.extend_from_slice(stored.done);
        })
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        writer::run(
            pool.clone(),
            w,
            rx,
            Duration::from_millis(10),
            Metrics::new(),
            Arc::new(tokio::sync::Notify::new()),
            Some(on_stored),
            Notices::InProcess,
        ),
    )
    .await
    .expect("the writer flushed within 60 s");
    answered.await.expect("the completion's sender is answered");
    // Stored as by any writer.
    let stored: Vec<(Uuid, i32, Vec<u8>)> =
        sqlx::query_as("SELECT job_id, seq, data FROM log_chunks ORDER BY data")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [
            (ending, 1, b"a".to_vec()),
            (ending, 2, b"b".to_vec()),
            (going_on, 1, b"c".to_vec())
        ]
    );
    assert_eq!(state(pool, ending).await, (JobState::Succeeded, 1));
    assert_eq!(state(pool, going_on).await, (JobState::Running, 1));
    // Told in the process: each job with output once, and the completion.
    let (mut output, completions) = told.lock().unwrap().clone();
    output.sort();
    let mut want = vec![ending, going_on];
    want.sort();
    assert_eq!(output, want);
    assert_eq!(completions, [(ending, JobState::Succeeded)]);
    // Nothing was NOTIFYed: the first notification the listener gets is one sent now.
    sqlx::query("SELECT pg_notify($1, 'after the writer')")
        .bind(nekton::store::CHANNEL_STATE)
        .execute(pool)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the marker arrives within 10 s")
        .unwrap();
    assert_eq!(
        (first.channel(), first.payload()),
        (nekton::store::CHANNEL_STATE, "after the writer"),
        "the writer sent a NOTIFY"
    );
}

/// A flush asked for answers reads back, in its statement, the final record and the first page
/// of output of each job asked about whose completion it applied — exactly what a read after the
/// commit finds —, the record alone for a job asked about for its record (an SSE stream's), and
/// nothing for a job it did not finish. The 18-argument form that workers of the previous
/// version call still stores and answers nothing.
#[tokio::test]
async fn a_flush_answers_with_the_record_and_output_as_stored() {
    let db = db().await;
    let pool = &db.pool;
    backlog(pool, TENANT, "default", 3, 1.0).await;
    let w = Uuid::now_v7();
    let claimed = queue::claim(pool, w, "default", 3, LEASE).await.unwrap();
    let (ending, failing, going_on) = (claimed[0].id, claimed[1].id, claimed[2].id);
    let chunk = output_chunk;
    use nekton::model::OutputStream::{Stderr, Stdout};
    let flushed = queue::flush_answering(
        pool,
        w,
        &[
            chunk(ending, 1, Stdout, b"out"),
            chunk(ending, 2, Stderr, b"err"),
            chunk(failing, 1, Stdout, b"x"),
            chunk(going_on, 1, Stdout, b"still"),
        ],
        &[
            done(ending, 1, JobState::Succeeded),
            Completion {
                exit_code: Some(3),
                ..done(failing, 1, JobState::Failed)
            },
        ],
        Notices::InProcess,
        &queue::Ask {
            output: vec![ending, going_on],
            records: vec![failing],
        },
    )
    .await
    .unwrap();
    let mut applied = flushed.applied.clone();
    applied.sort();
    let mut want = vec![ending, failing];
    want.sort();
    assert_eq!(applied, want);
    let mut answered: Vec<Uuid> = flushed.answers.iter().map(|a| a.0.id).collect();
    answered.sort();
    assert_eq!(
        answered, want,
        "only the finished jobs asked about are answered"
    );
    let answer = |id: Uuid| flushed.answers.iter().find(|a| a.0.id == id).unwrap();
    // The record alone: its output (one chunk) was not read back.
    let (failed, none) = answer(failing);
    assert_eq!(
        failed,
        &jobs::get(pool, TENANT, failing).await.unwrap().unwrap(),
        "the record as stored"
    );
    assert_eq!(
        (
            failed.state,
            failed.outcome.as_ref().and_then(|o| o.exit_code)
        ),
        (JobState::Failed, Some(3))
    );
    assert!(none.is_empty(), "no output for a record asked for alone");
    let (record, output) = answer(ending);
    let (stored, stored_output) = jobs::get_with_output(pool, TENANT, ending, 256)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record, &stored, "the answer is the record as stored");
    assert_eq!(record.state, JobState::Succeeded);
    assert!(record.finished_at.is_some());
    let chunks = |c: &[jobs::OutputChunk]| {
        c.iter()
            .map(|c| (c.seq, c.stream, c.data.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(chunks(output), chunks(&stored_output));
    assert_eq!(
        chunks(output),
        [(1, Stdout, b"out".to_vec()), (2, Stderr, b"err".to_vec())]
    );
    // The previous version's call: 18 arguments, the NOTIFY channels given.
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT ids FROM nekton_flush($1, $2, '{1}', '{succeeded}', '{NULL}', '{exited}', '{0}', \
         '{NULL}', '{NULL}', '{\"{}\"}', 'nekton_state', '{NULL}', '{}', '{}', '{}', '{}', '{}', \
         'nekton_logs')",
    )
    .bind(w)
    .bind(vec![going_on])
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(ids, [going_on]);
    assert_eq!(state(pool, going_on).await, (JobState::Succeeded, 1));
}

/// A job's result may carry text the job chose: a detail, a build's output in the suite
/// summary. PostgreSQL's text refuses NUL and its jsonb refuses `\u0000`; the flush stores them
/// with each NUL replaced by U+FFFD instead of failing (it failed with 22021 / 22P05, and the
/// writer retried that flush forever).
#[tokio::test]
async fn a_result_holding_nul_is_stored_with_the_nul_replaced() {
    use nekton::grading::{BuildResult, CappedText, SuiteSummary};
    let db = db().await;
    let pool = &db.pool;
    backlog(pool, TENANT, "default", 1, 1.0).await;
    let w = Uuid::now_v7();
    let claimed = queue::claim(pool, w, "default", 1, LEASE).await.unwrap();
    let build = BuildResult {
        succeeded: false,
        reason: "exited".into(),
        exit_code: Some(1),
        signal: None,
        detail: Some("exit\0code 1".into()),
        output: CappedText::of(b"main.c:1: error\0 here\n", 1024),
        usage: nekton::model::Usage::default(),
    };
    let completion = Completion {
        detail: Some("a\0detail".into()),
        tests: Some(SuiteSummary::of(&[], 3, 3, Some(build))),
        ..done(claimed[0].id, claimed[0].attempt, JobState::Failed)
    };
    let applied = queue::flush(pool, w, &[], &[completion], Notices::Notify)
        .await
        .expect("a result with NUL in its text is stored");
    assert_eq!(applied, vec![claimed[0].id]);
    let (detail, output, build_detail): (String, String, String) = sqlx::query_as(
        "SELECT detail, tests->'build'->'output'->>'text', tests->'build'->>'detail' \
         FROM job_attempts WHERE job_id = $1",
    )
    .bind(claimed[0].id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(detail, "a\u{FFFD}detail");
    assert_eq!(output, "main.c:1: error\u{FFFD} here\n");
    assert_eq!(build_detail, "exit\u{FFFD}code 1");
}

/// Makes PostgreSQL refuse inserts into `table` of rows matching `condition` (a trigger raising
/// "refused by the test: `what`").
async fn refuse_inserts(pool: &PgPool, table: &str, condition: &str, what: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF {condition} THEN RAISE EXCEPTION 'refused by the test: {what}'; END IF; \
             RETURN NEW; END $$; \
         CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} \
             FOR EACH ROW EXECUTE FUNCTION refuse_{table}();"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// When PostgreSQL refuses the values of one job's items, the writer stores the other jobs'
/// items of the same flush and goes on: the refused chunk is dropped (the job's other chunks
/// stay), a refused result is replaced by an internal-error record saying why — with the bill,
/// or without it when the bill itself is what was refused — and every sender is answered.
/// Before, the writer retried the whole flush forever and every job of the worker stalled.
#[tokio::test]
async fn the_writer_stores_the_rest_when_the_database_refuses_one_jobs_items() {
    use nekton::metrics::{ItemLabels, Metrics};
    use nekton::worker::writer::{self, WriterMsg};
    let db = db().await;
    let pool = &db.pool;
    // A chunk the database refuses (no value of a real job's output is refused: the trigger
    // stands in for whatever PostgreSQL may refuse).
    refuse_inserts(pool, "log_chunks", "NEW.data = 'poison'::bytea", "poison").await;
    backlog(pool, TENANT, "default", 4, 1.0).await;
    let w = Uuid::now_v7();
    let claimed = queue::claim(pool, w, "default", 4, LEASE).await.unwrap();
    let mut ids: Vec<Uuid> = claimed.iter().map(|j| j.id).collect();
    ids.sort();
    let [plain, poisoned_log, poisoned_result, poisoned_bill] = [ids[0], ids[1], ids[2], ids[3]];
    let chunk = stdout_message;
    // A bill PostgreSQL cannot add up: the tenant's usage roll-up reads it as a bigint
    // (22003, numeric value out of range).
    let huge_bill = nekton::model::Usage {
        memory_peak_bytes: Some(u64::MAX),
        ..Default::default()
    };
    let results = [
        done(plain, 1, JobState::Succeeded),
        done(poisoned_log, 1, JobState::Succeeded),
        Completion {
            detail: Some("poison".into()),
            usage: nekton::model::Usage {
                wall_ms: Some(7),
                ..Default::default()
            },
            ..done(poisoned_result, 1, JobState::Succeeded)
        },
        Completion {
            usage: huge_bill,
            ..done(poisoned_bill, 1, JobState::Succeeded)
        },
    ];
    refuse_inserts(
        pool,
        "job_attempts",
        "NEW.detail = 'poison'",
        "a poisoned result",
    )
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut acks = Vec::new();
    // Everything is sent before the writer starts, so it all goes in its first flush.
    for (job, data) in [
        (plain, &b"fine"[..]),
        (poisoned_log, b"poison"),
        (poisoned_result, b"fine"),
        (poisoned_bill, b"fine"),
    ] {
        tx.send(chunk(job, 1, data)).await.unwrap();
    }
    tx.send(chunk(poisoned_log, 2, b"after")).await.unwrap();
    for r in results {
        let (ack, answered) = tokio::sync::oneshot::channel();
        tx.send(WriterMsg::Complete(Box::new(r), ack))
            .await
            .unwrap();
        acks.push(answered);
    }
    drop(tx);
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let on_stored: writer::OnStored = {
        let told = told.clone();
        Arc::new(move |stored: writer::Stored<'_>| {
            told.lock().unwrap().extend_from_slice(stored.done)
        })
    };
    let metrics = Metrics::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        writer::run(
            pool.clone(),
            w,
            rx,
            Duration::from_millis(10),
            metrics.clone(),
            Arc::new(tokio::sync::Notify::new()),
            Some(on_stored),
            Notices::Notify,
        ),
    )
    .await
    .expect("the writer finished its flushes within 60 s instead of retrying a refused one");
    for answered in acks {
        answered
            .await
            .expect("every completion's sender is answered");
    }
    let record = |id: Uuid| async move {
        sqlx::query_as::<
            _,
            (
                String,
                Option<String>,
                Option<String>,
                Option<i64>,
                Option<String>,
            ),
        >(
            "SELECT j.state::text, a.reason, a.detail, (a.usage->>'wall_ms')::bigint, \
                    a.usage->>'memory_peak_bytes' \
             FROM jobs j LEFT JOIN job_attempts a ON a.job_id = j.id WHERE j.id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let output = |id: Uuid| async move {
        sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT data FROM log_chunks WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
    };
    let (state, reason, ..) = record(plain).await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("succeeded", Some("exited"))
    );
    assert_eq!(output(plain).await, vec![b"fine".to_vec()]);
    // The refused chunk is dropped; the job's next chunk and its result are stored.
    let (state, ..) = record(poisoned_log).await;
    assert_eq!(state, "succeeded");
    assert_eq!(output(poisoned_log).await, vec![b"after".to_vec()]);
    // The refused result: an internal error saying why, the bill kept.
    let (state, reason, detail, wall, _) = record(poisoned_result).await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("error", Some("internal_error"))
    );
    let detail = detail.unwrap();
    assert!(
        detail.contains("could not store this attempt's result")
            && detail.contains("a poisoned result"),
        "{detail}"
    );
    assert_eq!(wall, Some(7), "the bill is kept");
    assert_eq!(output(poisoned_result).await, vec![b"fine".to_vec()]);
    // The refused bill: an internal error without it.
    let (state, reason, detail, _, memory) = record(poisoned_bill).await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("error", Some("internal_error"))
    );
    assert!(detail.unwrap().contains("bill are lost"));
    assert_eq!(memory, None, "the refused bill is not stored");
    let mut told = told.lock().unwrap().clone();
    told.sort_by_key(|(id, _)| *id);
    assert_eq!(
        told,
        vec![
            (plain, JobState::Succeeded),
            (poisoned_log, JobState::Succeeded),
            (poisoned_result, JobState::Error),
            (poisoned_bill, JobState::Error),
        ]
    );
    let refused = |item: &str| {
        metrics
            .writes_refused
            .get_or_create(&ItemLabels { item: item.into() })
            .get()
    };
    assert_eq!((refused("chunk"), refused("completion")), (1, 2));
    assert_eq!(
        metrics.log_bytes_stored.get(),
        ["fine", "fine", "fine", "after"].concat().len() as u64,
        "the dropped chunk's bytes are not counted as stored"
    );
}

/// A worker that is stopping puts a job the API in its process handed it, and it has not
/// started, back in its queue as if never handed — at once, for a worker that goes on — instead of
/// leaving it running until the rescuer finds its lease expired.
#[tokio::test]
async fn a_stopping_worker_puts_a_handed_job_it_did_not_start_back_in_its_queue() {
    use nekton::worker::{ExecLanes, Worker, WorkerConfig};
    let db = db().await;
    let pool = &db.pool;
    let id = Uuid::now_v7();
    backlog(pool, TENANT, "default", 1, 1.0).await;
    // Running on the worker, attempt 1, as the submission's statement stores a handed job.
    let mut claimed = queue::claim(pool, id, "default", 1, LEASE).await.unwrap();
    let job = claimed.pop().expect("the job");
    let job_id = job.id;
    let metrics = nekton::metrics::Metrics::new();
    let worker = Worker::new(
        pool.clone(),
        WorkerConfig {
            id,
            queues: vec!["default".into()],
            slots: 1,
            container_slots: 1,
            timing: Default::default(),
            shutdown_grace: Duration::from_secs(1),
        },
        Vec::new(),
        metrics.clone(),
        Arc::new(tokio::sync::Notify::new()),
        ExecLanes {
            normal: tokio::runtime::Handle::current(),
            express: tokio::runtime::Handle::current(),
        },
    );
    let handoff = worker.handoff();
    let slot = handoff
        .reserve("default", false)
        .expect("the worker's one slot is free");
    assert!(handoff.hand(slot, job).is_ok(), "the worker takes jobs");
    // The stop comes as the job arrives.
    let shutdown = tokio_util::sync::CancellationToken::new();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), worker.run(shutdown))
        .await
        .expect("the worker stopped within 30 s")
        .expect("the worker stopped cleanly");
    let row: (String, i32, Option<Uuid>) =
        sqlx::query_as("SELECT state::text, attempt, worker_id FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        row,
        ("queued".to_string(), 0, None),
        "back in its queue, never started"
    );
    assert_eq!(
        metrics.jobs_handed.get(),
        0,
        "the worker did not take the job in (a job started and then stopped for the shutdown \
         would be back in its queue too)"
    );
    assert!(
        handoff.reserve("default", false).is_none(),
        "a stopped worker's slots are closed to the API"
    );
    let again = queue::claim(pool, Uuid::now_v7(), "default", 1, LEASE)
        .await
        .unwrap();
    assert_eq!(
        (again.len(), again[0].attempt),
        (1, 1),
        "claimed as a fresh first attempt"
    );
}

/// A log stream's first read — the job and its chunks after the stream's position, in one
/// statement — finds exactly what a read of the job and then one of its chunks find: every
/// stream (output and test-suite events) in order from the position on, up to the limit, and
/// nothing for another tenant.
#[tokio::test]
async fn a_streams_first_read_is_the_job_and_its_chunks_after_the_position() {
    use nekton::model::ChunkKind;
    use nekton::model::OutputStream::{Stderr, Stdout};
    use nekton::store::logs;
    let db = db().await;
    let pool = &db.pool;
    backlog(pool, TENANT, "default", 2, 1.0).await;
    let w = Uuid::now_v7();
    let claimed = queue::claim(pool, w, "default", 2, LEASE).await.unwrap();
    let (printing, quiet) = (claimed[0].id, claimed[1].id);
    let event = NewChunk {
        stream: ChunkKind::Event,
        ..output_chunk(printing, 3, Stdout, br#"{"type":"case_started"}"#)
    };
    queue::insert_chunks(
        pool,
        w,
        &[
            output_chunk(printing, 1, Stdout, b"a"),
            output_chunk(printing, 2, Stderr, b"b"),
            event,
            output_chunk(printing, 4, Stdout, b"c"),
        ],
    )
    .await
    .unwrap();
    for (after, limit, want) in [
        ((0, 0), 256, vec![1, 2, 3, 4]),
        ((1, 2), 256, vec![3, 4]),
        ((0, 0), 2, vec![1, 2]),
        ((1, 4), 256, vec![]),
    ] {
        let (job, chunks) = jobs::get_with_chunks_after(pool, TENANT, printing, after, limit)
            .await
            .unwrap()
            .expect("the tenant's job");
        assert_eq!(
            job,
            jobs::get(pool, TENANT, printing).await.unwrap().unwrap()
        );
        assert_eq!(
            chunks,
            logs::chunks_after(pool, printing, after, limit)
                .await
                .unwrap(),
            "after {after:?}, limit {limit}"
        );
        let seqs: Vec<i32> = chunks.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, want, "after {after:?}, limit {limit}");
    }
    let (_, none) = jobs::get_with_chunks_after(pool, TENANT, quiet, (0, 0), 256)
        .await
        .unwrap()
        .unwrap();
    assert!(none.is_empty());
    assert!(
        jobs::get_with_chunks_after(pool, "someone-else", printing, (0, 0), 256)
            .await
            .unwrap()
            .is_none(),
        "another tenant's job is not found"
    );
}

/// The backend process id of `conn`.
async fn pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Whether `pool` gets to `n` idle connections within two seconds (a connection dropped goes back
/// to the pool in a task of its own).
async fn idle(pool: &PgPool, n: usize) -> bool {
    for _ in 0..200 {
        if pool.num_idle() == n {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// `store::Warm` lends the connection given back last (not the pool's oldest idle one), keeps at
/// most `Warm::KEEP` and only while the pool can spare them, takes none back that was dropped
/// without `done` (an error), gives back the ones idle for `Held::IDLE`, and all of them when the
/// pool runs out or is closing (whose `close` waits for every connection).
#[tokio::test]
async fn shared_connections_are_lent_most_recent_first() {
    use nekton::store::{Held, Warm};
    let db = db().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(6)
        .min_connections(0)
        .connect_with(db.connect_options())
        .await
        .unwrap();
    let warm = Warm::new(pool.clone());
    let mut a = warm.conn().await.unwrap();
    let mut b = warm.conn().await.unwrap();
    let (pa, pb) = (pid(&mut a).await, pid(&mut b).await);
    // Given back a, then b: b is lent next, then a.
    a.done();
    b.done();
    assert_eq!(warm.kept(), 2);
    // An idle connection in the pool, older than both: the pool would hand it out first.
    drop(pool.acquire().await.unwrap());
    assert!(idle(&pool, 1).await);
    let mut next = warm.conn().await.unwrap();
    assert_eq!(pid(&mut next).await, pb, "the connection given back last");
    let mut then = warm.conn().await.unwrap();
    assert_eq!(pid(&mut then).await, pa);
    // Dropped without `done` (after an error): back to the pool, not kept.
    drop(then);
    next.done();
    assert_eq!(warm.kept(), 1);
    assert!(
        idle(&pool, 2).await,
        "the dropped connection went back to the pool"
    );

    // At most `Warm::KEEP`.
    let mut lent = Vec::new();
    for _ in 0..Warm::KEEP + 1 {
        lent.push(warm.conn().await.unwrap());
    }
    for l in lent {
        l.done();
    }
    assert_eq!(warm.kept(), Warm::KEEP);

    // The pool at its limit with nothing idle: a connection given back goes to the pool.
    let mut lent = Vec::new();
    for _ in 0..6 {
        lent.push(warm.conn().await.unwrap());
    }
    assert_eq!((pool.size(), pool.num_idle(), warm.kept()), (6, 0, 0));
    lent.pop().unwrap().done();
    assert_eq!(warm.kept(), 0, "kept while another task may wait for one");
    assert!(idle(&pool, 1).await);
    for l in lent {
        l.done();
    }
    assert_eq!(warm.kept(), Warm::KEEP);

    // The pool running out later (others took the rest): the sweep gives them all back.
    assert!(idle(&pool, 2).await);
    let others: Vec<_> = {
        let mut v = Vec::new();
        while pool.size() < 6 || pool.num_idle() > 0 {
            v.push(pool.acquire().await.unwrap());
        }
        v
    };
    assert_eq!(warm.kept(), Warm::KEEP);
    warm.sweep();
    assert_eq!(
        warm.kept(),
        0,
        "kept while the pool had nothing left for others"
    );
    assert!(idle(&pool, Warm::KEEP).await);
    drop(others);
    assert!(idle(&pool, 6).await);
    for l in [warm.conn().await.unwrap(), warm.conn().await.unwrap()] {
        l.done();
    }
    assert_eq!(warm.kept(), 2);

    // Unused for `Held::IDLE`: swept back to the pool, and never lent again.
    tokio::time::sleep(Held::IDLE + std::time::Duration::from_millis(50)).await;
    warm.sweep();
    assert_eq!(warm.kept(), 0);
    assert!(idle(&pool, 6).await);

    // Once the pool is closing, all of them go back, and its `close` can end.
    for l in [warm.conn().await.unwrap(), warm.conn().await.unwrap()] {
        l.done();
    }
    assert_eq!(warm.kept(), 2);
    let closing = tokio::spawn({
        let pool = pool.clone();
        async move { pool.close().await }
    });
    while !pool.is_closed() {
        tokio::task::yield_now().await;
    }
    warm.sweep();
    assert_eq!(warm.kept(), 0);
    tokio::time::timeout(std::time::Duration::from_secs(30), closing)
        .await
        .expect("the pool closed once the kept connections were given back")
        .unwrap();
}

/// `store::Held` keeps one connection across statements, and gives it back when the pool has no
/// idle connection left and cannot open another (someone may be waiting), after an error, and
/// when it has not been used for `Held::IDLE`.
#[tokio::test]
async fn a_held_connection_is_kept_while_the_pool_can_spare_it() {
    use nekton::store::Held;
    let db = db().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .min_connections(0)
        .connect_with(db.connect_options())
        .await
        .unwrap();
    let mut held = Held::new(pool.clone());
    let first = pid(held.conn().await.unwrap()).await;
    // Another connection idle in the pool: the pool would hand that one out first (oldest idle
    // first), but the held one is used again.
    drop(pool.acquire().await.unwrap());
    assert!(idle(&pool, 1).await);
    held.relieve();
    assert!(held.is_kept(), "the pool had spare connections");
    assert_eq!(pid(held.conn().await.unwrap()).await, first);
    assert_eq!(pool.size(), 2);

    // The pool at its limit with nothing idle: the held connection goes back.
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    assert_eq!((pool.size(), pool.num_idle()), (3, 0));
    held.relieve();
    assert!(!held.is_kept());
    assert!(idle(&pool, 1).await, "given back to the pool");
    drop((a, b));
    assert!(idle(&pool, 3).await);

    // Discarded (after an error): back in the pool, and the next statement takes one from it.
    pid(held.conn().await.unwrap()).await;
    held.discard();
    assert!(!held.is_kept());
    assert!(idle(&pool, 3).await);
    let next = pid(held.conn().await.unwrap()).await;
    assert_eq!(pool.num_idle(), 2);

    // Unused for `Held::IDLE`: given back, and another taken (the pool hands out its oldest idle
    // connection, which is not the one just given back).
    tokio::time::sleep(Held::IDLE + std::time::Duration::from_millis(50)).await;
    let after_idle = pid(held.conn().await.unwrap()).await;
    assert_ne!(
        after_idle, next,
        "a connection unused for a second was used again"
    );
    assert!(idle(&pool, 2).await);
}
