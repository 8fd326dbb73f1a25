//! `log_chunks` partitioned by job-id (UUIDv7 time) ranges (migration 0012, store/partitions.rs;
//! docs/queue.md, "Log partitions"), against a real database: the migration keeps the rows it
//! finds, output lands in its period's partition exactly once, retention drops a partition whose
//! jobs are all gone and keeps one that still holds a job, and workers creating partitions at the
//! same time do not fail each other; a running service's worker creates the partitions itself.

mod common;

use std::time::Duration;

use common::{Harness, guests};
use nekton::api::types::JobState;
use nekton::cli::StdStream;
use nekton::model::{ChunkKind, OutputStream};
use nekton::store::jobs::{self, NewJob, Submitted};
use nekton::store::partitions::{self, PERIOD};
use nekton::store::queue::{self, Completion, NewChunk};
use nekton::testing::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);
const DAY_MS: u64 = 24 * 3600 * 1000;
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

async fn db() -> TestDb {
    let db = TestDb::new().await;
    nekton::store::migrate(&db.pool)
        .await
        .expect("migrations apply");
    db
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A UUIDv7 made at `ms` (random bits from a fresh v7).
fn v7_at(ms: u64) -> Uuid {
    let random: [u8; 10] = Uuid::now_v7().as_bytes()[6..].try_into().unwrap();
    uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

/// Submits a job with id `id` in its own queue (named after the id) and claims it as `worker`.
async fn running_job(pool: &PgPool, worker: Uuid, id: Uuid) {
    let tenant = nekton::store::tenants::get_tenant(pool, "default")
        .await
        .unwrap()
        .expect("the default tenant exists");
    let queue_name = format!("q-{id}");
    let job = NewJob {
        id,
        queue: queue_name.clone(),
        priority: 0,
        max_attempts: 1,
        labels: serde_json::json!({}),
        program: "sha256:test".into(),
        spec: serde_json::json!({"module": "sha256:test"}),
        spec_hash: vec![1, 2, 3],
        required_module: None,
        idempotency_key: None,
        traceparent: None,
    };
    match jobs::submit(
        &nekton::store::Warm::new(pool.clone()),
        &tenant,
        job,
        Some(&queue_name),
        None,
        jobs::SubmitCommit::Flushed,
    )
    .await
    .unwrap()
    {
        Submitted::Created(j) => assert_eq!(j.id, id),
        other => panic!("not created: {other:?}"),
    }
    let claimed = queue::claim(pool, worker, &queue_name, 1, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "job {id} claimed");
}

fn chunk(id: Uuid, seq: i32, data: &[u8]) -> NewChunk {
    NewChunk {
        job_id: id,
        attempt: 1,
        seq,
        stream: ChunkKind::Output(OutputStream::Stdout),
        data: data.to_vec(),
    }
}

/// Ends `id` (succeeded) and backdates its end past the retention.
async fn finish_long_ago(pool: &PgPool, worker: Uuid, id: Uuid) {
    queue::complete(
        pool,
        worker,
        &[Completion {
            job_id: id,
            attempt: 1,
            state: JobState::Succeeded,
            retry_after: None,
            reason: nekton::model::OutcomeReason::Exited,
            exit_code: Some(0),
            signal: None,
            detail: None,
            usage: nekton::model::Usage::default(),
            tests: None,
        }],
    )
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '8 days' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

/// The table each chunk of `id` is stored in.
async fn homes(pool: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT tableoid::regclass::text FROM log_chunks WHERE job_id = $1 ORDER BY 1",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The names of `log_chunks`' range partitions, in range order.
async fn partition_names(pool: &PgPool) -> Vec<String> {
    partitions::list(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

async fn table_exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A chunk's key, stream, length, digest of its bytes, and time.
type Row = (
    Uuid,
    i32,
    i32,
    i16,
    i32,
    String,
    Option<chrono::DateTime<chrono::Utc>>,
);

async fn all_rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT job_id, attempt, seq, stream, length(data), md5(data), stored_at FROM log_chunks \
         ORDER BY job_id, attempt, seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A database at migration 0011 with output stored, migrated to 0012: every row is still there
/// (now in the DEFAULT partition), `log_chunks` is partitioned with the storage and autovacuum
/// settings of 0002 and 0011, and the period whose output already sits in the DEFAULT partition
/// gets no range partition (attaching it would fail) while the next ones do.
#[tokio::test]
async fn the_migration_keeps_existing_output_in_the_default_partition() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    nekton::store::MIGRATOR
        .run_to(11, pool)
        .await
        .expect("migrations up to 0011 apply");
    let today = v7_at(now_ms());
    let non_v7 = Uuid::parse_str("6f1c2a3b-4d5e-4f60-8a7b-8c9d0e1f2a3b").unwrap();
    sqlx::query(
        "INSERT INTO log_chunks (job_id, attempt, seq, stream, data, stored_at) VALUES \
         ($1, 1, 1, 1, 'hello ', now() - interval '1 hour'), ($1, 1, 2, 2, 'world', now()), \
         ($1, 2, 1, 1, repeat('x', 70000)::bytea, now()), \
         ($2, 1, 1, 1, 'old', NULL)",
    )
    .bind(today)
    .bind(non_v7)
    .execute(pool)
    .await
    .unwrap();
    let before = all_rows(pool).await;
    assert_eq!(before.len(), 4);

    nekton::store::migrate(pool).await.expect("0012 applies");

    assert_eq!(all_rows(pool).await, before, "every row kept, unchanged");
    let partitioned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'log_chunks'::regclass)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(partitioned, "log_chunks is a partitioned table");
    let children: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'log_chunks'::regclass",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        children,
        vec![("log_chunks_default".to_string(), "DEFAULT".to_string())]
    );
    assert_eq!(homes(pool, today).await, vec!["log_chunks_default"]);
    for table in ["log_chunks", "log_chunks_default"] {
        let storage: String = sqlx::query_scalar(
            "SELECT attstorage::text FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'data'",
        )
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(storage, "e", "{table}.data is STORAGE EXTERNAL (0002)");
    }
    let opts: Vec<String> = sqlx::query_scalar(
        "SELECT reloptions FROM pg_class WHERE oid = 'log_chunks_default'::regclass",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        opts.iter()
            .any(|o| o == "autovacuum_vacuum_insert_scale_factor=0.05"),
        "0011's settings kept: {opts:?}"
    );

    // Today's output is in the DEFAULT partition: today gets no range partition, the next
    // periods do.
    let created = partitions::ensure(pool, PERIOD).await.unwrap();
    let start = now_ms() / DAY_MS * DAY_MS;
    assert_eq!(
        created,
        vec![
            partitions::partition_name(start + DAY_MS),
            partitions::partition_name(start + 2 * DAY_MS)
        ]
    );
    assert_eq!(all_rows(pool).await, before);
    let job = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO log_chunks (job_id, attempt, seq, stream, data) VALUES ($1, 1, 1, 1, 'x')",
    )
    .bind(job)
    .execute(pool)
    .await
    .expect("output of a period without a partition still has somewhere to go");
    assert_eq!(homes(pool, job).await, vec!["log_chunks_default"]);
}

/// Partitions for the current and next periods are created once (a second pass creates
/// nothing), with 0002's storage and 0011's autovacuum settings; a new job's output lands in its
/// period's partition, and a retried write stores each chunk exactly once.
#[tokio::test]
async fn a_new_jobs_output_lands_in_its_periods_partition_exactly_once() {
    let db = db().await;
    let pool = &db.pool;
    let start = now_ms() / DAY_MS * DAY_MS;
    let created = partitions::ensure(pool, PERIOD).await.unwrap();
    let wanted: Vec<String> = (0..3)
        .map(|k| partitions::partition_name(start + k * DAY_MS))
        .collect();
    assert_eq!(created, wanted);
    assert!(partitions::ensure(pool, PERIOD).await.unwrap().is_empty());
    let listed = partitions::list(pool).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        wanted
    );
    assert_eq!(listed[0].lo, partitions::bound(start));
    assert_eq!(listed[0].hi, partitions::bound(start + DAY_MS));
    assert_eq!(listed[1].lo, listed[0].hi);

    let w = Uuid::now_v7();
    let id = Uuid::now_v7();
    running_job(pool, w, id).await;
    let batch = [chunk(id, 1, b"one\n"), chunk(id, 2, b"two\n")];
    assert_eq!(queue::insert_chunks(pool, w, &batch).await.unwrap(), 2);
    // The writer retries a flush whose outcome it did not see: nothing is stored twice.
    assert_eq!(queue::insert_chunks(pool, w, &batch).await.unwrap(), 0);
    assert_eq!(
        count(
            pool,
            format!("SELECT count(*) FROM log_chunks WHERE job_id = '{id}'")
        )
        .await,
        2
    );
    assert_eq!(homes(pool, id).await, vec![wanted[0].clone()]);
    let read = nekton::store::logs::chunks_after(pool, id, (0, 0), 10)
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|c| c.data.as_slice()).collect::<Vec<_>>(),
        vec![&b"one\n"[..], b"two\n"]
    );

    let storage: String = sqlx::query_scalar(
        "SELECT attstorage::text FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'data'",
    )
    .bind(&wanted[0])
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(storage, "e");
    let opts: Vec<String> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = $1::regclass")
            .bind(&wanted[0])
            .fetch_one(pool)
            .await
            .unwrap();
    for o in [
        "autovacuum_vacuum_scale_factor=0.02",
        "autovacuum_vacuum_insert_scale_factor=0.05",
        "autovacuum_analyze_scale_factor=0.05",
    ] {
        assert!(opts.iter().any(|x| x == o), "{o} not in {opts:?}");
    }
}

/// Two old periods: A's jobs all finished and were pruned, B still holds a running job. Pruning
/// leaves A's output in place (it goes with the partition); retention then drops A whole, keeps
/// B, deletes only the pruned job's output from B, and the running job's output is still
/// readable. Once B's last job is pruned, B goes too. Current partitions are never touched.
#[tokio::test]
async fn retention_drops_a_partition_whose_jobs_are_gone_and_keeps_one_with_a_live_job() {
    let db = db().await;
    let pool = &db.pool;
    let current = partitions::ensure(pool, PERIOD).await.unwrap();
    assert_eq!(current.len(), 3);
    let day_a = (now_ms() - 30 * DAY_MS) / DAY_MS * DAY_MS;
    let day_b = (now_ms() - 20 * DAY_MS) / DAY_MS * DAY_MS;
    let a = partitions::create(pool, day_a, day_a + DAY_MS)
        .await
        .unwrap();
    assert_eq!(a.len(), 1, "partition A created");
    let a = a[0].clone();
    let b = partitions::create(pool, day_b, day_b + DAY_MS)
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "partition B created");
    let b = b[0].clone();

    let w = Uuid::now_v7();
    let (a1, a2) = (v7_at(day_a + 1000), v7_at(day_a + DAY_MS - 1));
    let (b1, live) = (v7_at(day_b + 5000), v7_at(day_b + 6000));
    for id in [a1, a2, b1, live] {
        running_job(pool, w, id).await;
        queue::insert_chunks(pool, w, &[chunk(id, 1, b"out "), chunk(id, 2, b"put\n")])
            .await
            .unwrap();
    }
    assert_eq!(homes(pool, a1).await, vec![a.clone()]);
    assert_eq!(homes(pool, a2).await, vec![a.clone()]);
    assert_eq!(homes(pool, live).await, vec![b.clone()]);
    for id in [a1, a2, b1] {
        finish_long_ago(pool, w, id).await;
    }

    assert_eq!(queue::prune(pool, RETENTION, 100).await.unwrap(), 3);
    assert_eq!(
        count(pool, format!("SELECT count(*) FROM {a}")).await,
        4,
        "pruning deletes no rows of a range partition"
    );

    let r = partitions::retire(pool, RETENTION).await.unwrap();
    assert_eq!(r.dropped, vec![a.clone()]);
    assert_eq!(r.kept, vec![b.clone()]);
    assert_eq!(r.swept_chunks, 2, "the pruned job's output in B is deleted");
    assert!(!table_exists(pool, &a).await, "{a} dropped");
    assert!(table_exists(pool, &b).await, "{b} kept");
    assert_eq!(homes(pool, b1).await, Vec::<String>::new());
    let read = nekton::store::logs::chunks_after(pool, live, (0, 0), 10)
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|c| c.data.as_slice()).collect::<Vec<_>>(),
        vec![&b"out "[..], b"put\n"],
        "the live job's output is readable"
    );
    // It can still write.
    queue::insert_chunks(pool, w, &[chunk(live, 3, b"more\n")])
        .await
        .unwrap();
    assert_eq!(homes(pool, live).await, vec![b.clone()]);

    // B's last job ends and is pruned: B goes.
    finish_long_ago(pool, w, live).await;
    assert_eq!(queue::prune(pool, RETENTION, 100).await.unwrap(), 1);
    let r = partitions::retire(pool, RETENTION).await.unwrap();
    assert_eq!(r.dropped, vec![b.clone()]);
    assert!(r.kept.is_empty());
    assert!(!table_exists(pool, &b).await);
    let left = partition_names(pool).await;
    assert_eq!(left, current, "the current partitions stay");
    assert_eq!(
        count(pool, "SELECT count(*) FROM log_chunks".into()).await,
        0
    );
}

/// Several workers run partition upkeep at the same moment: none fails, each partition is
/// created by one of them, and an expired one is dropped by one of them.
#[tokio::test]
async fn concurrent_workers_create_partitions_without_failing_each_other() {
    let db = db().await;
    let pool = &db.pool;
    let old = (now_ms() - 40 * DAY_MS) / DAY_MS * DAY_MS;
    let start = now_ms() / DAY_MS * DAY_MS;
    let current: Vec<String> = (0..3)
        .map(|k| partitions::partition_name(start + k * DAY_MS))
        .collect();

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = partitions::ensure(&pool, PERIOD).await?;
            made.extend(partitions::create(&pool, old, old + DAY_MS).await?);
            Ok::<_, nekton::store::StoreError>(made)
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        created.extend(t.await.unwrap().expect("creating partitions succeeds"));
    }
    created.sort();
    let mut wanted = current.clone();
    wanted.push(partitions::partition_name(old));
    wanted.sort();
    assert_eq!(
        created, wanted,
        "each partition created by exactly one worker"
    );

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            partitions::retire(&pool, RETENTION).await
        }));
    }
    let mut dropped = Vec::new();
    for t in tasks {
        dropped.extend(
            t.await
                .unwrap()
                .expect("retiring partitions succeeds")
                .dropped,
        );
    }
    assert_eq!(dropped, vec![partitions::partition_name(old)]);
    let listed = partition_names(pool).await;
    assert_eq!(listed, current);
}

/// A running service (API + worker): its worker creates today's and the next days' partitions
/// before it stores any output, so the first job, submitted as soon as the service is up, writes its
/// output to today's partition (not the default one, which would keep that day's partition from
/// ever being created), and the API serves it from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_creates_its_partitions_before_its_first_job_writes_output() {
    let h = Harness::start().await;
    let pool = &h.db.pool;
    let start = now_ms() / DAY_MS * DAY_MS;
    let wanted: Vec<String> = (0..3)
        .map(|k| partitions::partition_name(start + k * DAY_MS))
        .collect();
    let digest = h.push(guests::hello()).await;
    let job = h.submit(&Harness::spec(&digest)).await;
    let done = h.wait_finished(job.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(homes(pool, job.id).await, vec![wanted[0].clone()]);
    let names = partition_names(pool).await;
    assert_eq!(names, wanted);
    let out = h
        .http
        .get(format!("{}/v1/jobs/{}/logs?stream=stdout", h.base, job.id))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&out[..], b"hello\n");
}

/// A service (API + worker) on `db` whose log partitions cannot be made — the returned connection
/// holds the advisory lock their creation takes — and a hello job submitted to it.
async fn service_with_partitions_held(
    db: &TestDb,
    state: &std::path::Path,
) -> (
    sqlx::PgConnection,
    nekton::server::Running,
    nekton::cli::Client,
    nekton::api::types::Job,
) {
    let mut holder = db.connect().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('nekton.log_partitions', 0))")
        .execute(&mut holder)
        .await
        .unwrap();
    let (running, client) = common::start_on(&db.pool, state).await;
    let digest = client
        .push_module(guests::hello())
        .await
        .expect("module upload")
        .digest;
    let job = client
        .submit(&Harness::spec(&digest), None)
        .await
        .expect("job submission");
    (holder, running, client, job)
}

/// A worker's writers store no output until its partitions exist. Here their creation is held up
/// (the test holds the advisory lock it takes): a job runs but stays `running` with no output
/// stored; once the lock is let go, the partitions are made, and the job finishes with its output
/// in its period's partition, not in the default one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_output_waits_for_its_partitions_at_start() {
    let db = db().await;
    let pool = &db.pool;
    let state = tempfile::tempdir().unwrap();
    let (mut holder, running, client, job) = service_with_partitions_held(&db, state.path()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.get_job(job.id).await.unwrap().state != JobState::Running {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A hello job runs in milliseconds: well past that, it is still running, its output unstored.
    // (Not much longer: the worker gives up waiting for the lock after 2 s, and then stores its
    // output in the default partition — the next test.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        client.get_job(job.id).await.unwrap().state,
        JobState::Running,
        "the job finished while the partitions could not be made"
    );
    assert!(homes(pool, job.id).await.is_empty());
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('nekton.log_partitions', 0))")
        .execute(&mut holder)
        .await
        .unwrap();
    let done = common::wait_finished(&client, job.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded);
    let (secs, nanos) = job.id.get_timestamp().expect("a v7 id").to_unix();
    let submitted_ms = secs * 1000 + u64::from(nanos) / 1_000_000;
    let its_day = partitions::partition_name(submitted_ms / DAY_MS * DAY_MS);
    assert_eq!(homes(pool, job.id).await, vec![its_day]);
    running.shutdown().await.unwrap();
}

/// The writers' wait for the partitions is bounded: with the partitions' lock held throughout, the
/// worker gives up waiting for it (after 2 s, `partitions::LOCK_TIMEOUT`), and a job still finishes,
/// its output stored in the default partition and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_partition_lock_delays_a_new_workers_output_but_does_not_stop_it() {
    let db = db().await;
    let pool = &db.pool;
    let state = tempfile::tempdir().unwrap();
    let (holder, running, client, job) = service_with_partitions_held(&db, state.path()).await;
    let done = common::wait_finished(&client, job.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        homes(pool, job.id).await,
        vec![partitions::DEFAULT_PARTITION.to_string()]
    );
    assert!(partition_names(pool).await.is_empty());
    let out = client
        .plain_log_bytes(job.id, Some(StdStream::Stdout))
        .await
        .unwrap();
    assert_eq!(&out[..], b"hello\n");
    drop(holder);
    running.shutdown().await.unwrap();
}

/// `nekton_table_dead_tuple_ratio{table="log_chunks"}` counts the tuples of its partitions (the
/// partitioned table itself holds none).
#[tokio::test]
async fn the_dead_tuple_ratio_of_log_chunks_counts_its_partitions() {
    let db = db().await;
    let pool = &db.pool;
    let created = partitions::ensure(pool, PERIOD).await.unwrap();
    // Written on a connection of its own, closed after: a backend's statistics reach the shared
    // counters when it exits.
    let mut conn = db.connect().await.unwrap();
    let job = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO log_chunks (job_id, attempt, seq, stream, data) \
         SELECT $1, 1, s, 1, 'x' FROM generate_series(1, 10) s",
    )
    .bind(job)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("DELETE FROM log_chunks WHERE job_id = $1 AND seq > 5")
        .bind(job)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    assert_eq!(homes(pool, job).await, vec![created[0].clone()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ratios = nekton::store::stats::dead_tuple_ratios(pool).await.unwrap();
        let got = ratios
            .iter()
            .find(|(t, _)| t == "log_chunks")
            .map(|(_, r)| *r);
        if got == Some(0.5) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "log_chunks: 5 dead of 10 in its partition should read 0.5, got {got:?} ({ratios:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After the period changes (a shorter retention, then the default again), the partitions of the
/// new period fill the gaps between the existing ones: the next days are covered without a hole
/// or an overlap, so none of their output falls to the DEFAULT partition.
#[tokio::test]
async fn partitions_of_a_new_period_fill_the_gaps_between_the_old_ones() {
    let db = db().await;
    let pool = &db.pool;
    let hour = Duration::from_secs(3600);
    let hourly = partitions::ensure(pool, hour).await.unwrap();
    assert_eq!(hourly.len(), 3);
    let daily = partitions::ensure(pool, PERIOD).await.unwrap();
    assert!(!daily.is_empty());
    assert!(partitions::ensure(pool, hour).await.unwrap().is_empty());
    assert!(partitions::ensure(pool, PERIOD).await.unwrap().is_empty());

    let start = now_ms() / DAY_MS * DAY_MS;
    let listed = partitions::list(pool).await.unwrap();
    assert_eq!(
        listed.first().unwrap().lo,
        partitions::bound(start),
        "{listed:?}"
    );
    assert_eq!(
        listed.last().unwrap().hi,
        partitions::bound(start + 3 * DAY_MS),
        "{listed:?}"
    );
    for w in listed.windows(2) {
        assert_eq!(w[0].hi, w[1].lo, "no hole, no overlap: {listed:?}");
    }
    for p in &hourly {
        assert!(listed.iter().any(|l| &l.name == p), "{p} kept");
    }
    // Any id of those three days lands in a range partition.
    let w = Uuid::now_v7();
    for k in 0..12 {
        let id = v7_at(start + k * 6 * 3600 * 1000 + 1);
        running_job(pool, w, id).await;
        queue::insert_chunks(pool, w, &[chunk(id, 1, b"x")])
            .await
            .unwrap();
        let home = homes(pool, id).await;
        assert!(
            home.len() == 1 && home[0] != partitions::DEFAULT_PARTITION,
            "{id} stored in {home:?}"
        );
    }
}
