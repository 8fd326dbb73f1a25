//! The PostgreSQL queue's rules (docs/queue.md), exercised directly against a real
//! database: claims, fencing, rescue, retries, cancel flags, retention.

use std::time::Duration;

use nekton::api::types::JobState;
use nekton::store::jobs::{self, NewJob, Submitted};
use nekton::store::queue::{self, Completion, NewChunk};
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
        idempotency_key: None,
    }
}

async fn insert(pool: &PgPool, job: NewJob) -> Uuid {
    let tenant = nekton::store::tenants::get_tenant(pool, TENANT)
        .await
        .unwrap()
        .expect("the default tenant exists");
    match jobs::submit(pool, &tenant, job, true).await.unwrap() {
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
    }
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
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM leases")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(leases, 22);
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
        stream: nekton::model::OutputStream::Stdout,
        data: b"x".to_vec(),
    };
    assert_eq!(
        queue::insert_chunks(pool, a, &[chunk(1, 1)]).await.unwrap(),
        1
    );

    // Worker A goes silent: its lease expires and the rescuer schedules a retry.
    sqlx::query("UPDATE leases SET expires_at = now() - interval '1 second'")
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
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM leases")
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
        sqlx::query("UPDATE leases SET expires_at = now() - interval '1 second'")
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
    let job = jobs::get(pool, TENANT, id).await.unwrap().unwrap();
    assert_eq!(job.outcome.unwrap().reason, "worker_lost");
    assert!(job.finished_at.is_some());

    // The lost-count cap holds even with attempts left (a poison job that kills workers).
    let poison = insert(pool, new_job("default", 0, 10)).await;
    for _ in 0..2 {
        queue::claim(pool, Uuid::now_v7(), queues, 1, LEASE)
            .await
            .unwrap();
        sqlx::query("UPDATE leases SET expires_at = now() - interval '1 second'")
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
    sqlx::query("UPDATE leases SET expires_at = now() - interval '1 second'")
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

#[tokio::test]
async fn retention_prunes_old_finished_jobs_with_their_logs() {
    let db = db().await;
    let pool = &db.pool;
    let old = insert(pool, new_job("default", 0, 1)).await;
    let recent = insert(pool, new_job("default", 0, 1)).await;
    let queued = insert(pool, new_job("default", 0, 1)).await;
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
                stream: nekton::model::OutputStream::Stdout,
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
}

#[tokio::test]
async fn the_claim_is_an_ordered_index_scan_that_stops_at_its_limit() {
    let db = db().await;
    let pool = &db.pool;
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, queue, max_attempts) \
         SELECT gen_random_uuid(), 'default', 'default', 1 FROM generate_series(1, 5000)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE jobs").execute(pool).await.unwrap();
    // The pick of `queue::claim`, as the planner sees it with 5,000 queued jobs.
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM jobs WHERE state IN ('queued', 'scheduled') AND queue = $1 \
         AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 32 FOR UPDATE SKIP LOCKED",
    )
    .bind("default")
    .fetch_all(pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using jobs_claimable"), "{plan}");
    assert!(
        !plan.contains("Sort"),
        "the claim must not sort every queued job:\n{plan}"
    );
}
