//! `POST /v1/jobs?wait=SECS`: the synchronous submission — one request that answers with the
//! finished job and its output; a wait that runs out answers the job as it is; bad waits are
//! refused before anything is stored; replays and cancels; the stream limit.

mod common;

use std::time::Duration;

use common::{Harness, guests};
use serde_json::{Value, json};

async fn post(h: &Harness, query: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut req = h.http.post(format!("{}/v1/jobs{query}", h.base)).json(body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await.expect("POST /v1/jobs")
}

fn spec(digest: &str) -> Value {
    serde_json::to_value(Harness::spec(digest)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_submission_answers_with_the_final_record_and_the_output() {
    let h = Harness::start().await;
    let hello = h.push(guests::hello()).await;
    let res = post(&h, "?wait=30", &spec(&hello), None).await;
    assert_eq!(res.status(), 201);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["outcome"]["exit_code"], 0, "{job}");
    assert_eq!(
        job["output"],
        json!({"stdout": {"text": "hello\n", "truncated": false},
               "stderr": {"text": "warn\n", "truncated": false}}),
        "{job}"
    );
    // The answer is the stored final record.
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let stored = h.client.get_job(id).await.unwrap();
    assert_eq!(
        serde_json::to_value(stored.finished_at).unwrap(),
        job["finished_at"]
    );
    assert!(stored.output.is_none(), "GET does not carry output");

    // A failing job: its state, exit code and output.
    let bye = h.push(guests::exit_with(3)).await;
    let job: Value = post(&h, "?wait=30", &spec(&bye), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["outcome"]["exit_code"], 3, "{job}");
    assert_eq!(job["output"]["stdout"]["text"], "bye\n", "{job}");
    assert_eq!(job["output"]["stderr"]["text"], "", "{job}");

    // Without `wait` the answer is the job as stored, without output: here already running on
    // the idle worker beside the API (docs/queue.md §2).
    let res = post(&h, "", &spec(&hello), None).await;
    assert_eq!(res.status(), 201);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["state"], "running", "{job}");
    assert!(job.get("output").is_none(), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_answers_the_job_as_it_is_and_the_job_goes_on() {
    let h = Harness::start().await;
    let slow = h.push(guests::sleep_then_print(4_000)).await;
    let res = post(&h, "?wait=1", &spec(&slow), None).await;
    assert_eq!(res.status(), 201);
    let job: Value = res.json().await.unwrap();
    // Read when the wait ran out: the idle worker has claimed it by then (a claim sends no
    // notification, so a record read earlier would still say `queued`).
    assert_eq!(
        job["state"], "running",
        "a 4 s job answered after a 1 s wait: {job}"
    );
    assert!(job["started_at"].is_string(), "{job}");
    assert!(job.get("output").is_none(), "{job}");
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let done = h.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(
        done.state,
        nekton::api::types::JobState::Succeeded,
        "{done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_a_mebibyte_is_cut_and_flagged() {
    let h = Harness::start().await;
    // 20,000 lines of 64 bytes: 1,280,000 bytes of stdout.
    let lines = h.push(guests::numbered_lines(20_000)).await;
    let job: Value = post(&h, "?wait=60", &spec(&lines), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "succeeded", "{}", job["state"]);
    let expected = guests::numbered_lines_expected(20_000);
    let text = job["output"]["stdout"]["text"].as_str().unwrap();
    assert_eq!(text.len(), 1 << 20);
    assert!(
        text.as_bytes() == &expected[..1 << 20],
        "stdout is not the first MiB"
    );
    assert_eq!(job["output"]["stdout"]["truncated"], true);
    assert_eq!(job["output"]["stderr"]["truncated"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_waits_are_refused_with_400_and_store_nothing() {
    let h = Harness::start().await;
    let hello = h.push(guests::hello()).await;
    let before = h.count("jobs").await;
    for query in [
        "?wait=0",
        "?wait=61",
        "?wait=soon",
        "?wait=-1",
        "?wait=",
        "?linger=5",
    ] {
        let res = post(&h, query, &spec(&hello), None).await;
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{query}: {body}");
    }
    let body: Value = post(&h, "?wait=61", &spec(&hello), None)
        .await
        .json()
        .await
        .unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1–60"), "{message}");
    assert_eq!(
        h.count("jobs").await,
        before,
        "a refused request stored a job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waits_for_the_job_of_the_first_request() {
    let h = Harness::start().await;
    let slow = h.push(guests::sleep_then_print(500)).await;
    // The first request does not wait; its replay does, for the first request's job.
    let first = post(&h, "", &spec(&slow), Some("replay-1")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post(&h, "?wait=30", &spec(&slow), Some("replay-1")).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["output"]["stdout"]["text"], "done\n", "{again}");
    assert_eq!(h.count("jobs").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_the_wait_with_the_cancelled_job() {
    let h = Harness::start().await;
    let spin = h.push(guests::spin()).await;
    let (http, base, body) = (h.http.clone(), h.base.clone(), spec(&spin));
    let waiting = tokio::spawn(async move {
        http.post(format!("{base}/v1/jobs?wait=60"))
            .json(&body)
            .send()
            .await
            .unwrap()
    });
    // The job the waiting request submitted, once it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let id = loop {
        let page = h.client.list_jobs(&Default::default()).await.unwrap();
        if let Some(j) = page.jobs.first() {
            break j.id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job was not stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    h.wait_running(id, Duration::from_secs(30)).await;
    h.client.cancel(id).await.unwrap();
    let res = waiting.await.unwrap();
    assert_eq!(res.status(), 201);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(job["output"].is_object(), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_submissions_count_against_max_streams_and_are_shed_before_storing() {
    let h = Harness::start_with(|o| o.policy.max_streams = 1).await;
    let spin = h.push(guests::spin()).await;
    let hello = h.push(guests::hello()).await;
    let job = h.submit(&Harness::spec(&spin)).await;
    // The one stream this process serves.
    let stream = h
        .http
        .get(format!("{}/v1/jobs/{}/logs", h.base, job.id))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let res = post(&h, "?wait=5", &spec(&hello), None).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(h.count("jobs").await, 1, "a shed submission stored a job");
    // Without `wait` the submission needs no stream: accepted.
    assert_eq!(post(&h, "", &spec(&hello), None).await.status(), 201);
    drop(stream);
    h.client.cancel(job.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_carries_every_page_of_the_final_attempts_output_and_no_events() {
    // An API without a worker: the test plays the worker through the store, so the output can
    // span more chunks than one read of the answer takes (256) and include a suite event, an
    // earlier attempt's output and interleaved streams.
    use nekton::model::{ChunkKind, JobState, OutcomeReason, OutputStream, Usage};
    use nekton::store::queue::{self, Completion, NewChunk};
    let h = Harness::start_with(|o| o.worker_slots = None).await;
    let hello = h.push(guests::hello()).await;
    let first = post(&h, "", &spec(&hello), Some("paged")).await;
    assert_eq!(first.status(), 201);
    let id: uuid::Uuid = first.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pool = &h.db.pool;
    let worker = uuid::Uuid::now_v7();
    let lease = Duration::from_secs(30);
    let claimed = queue::claim(pool, worker, "default", 1, lease)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // Attempt 1 writes a line and is retried; attempt 2's output is the answer's.
    let chunk = |attempt, seq, stream, data: String| NewChunk {
        job_id: id,
        attempt,
        seq,
        stream,
        data: data.into_bytes(),
    };
    let done = |attempt, state| Completion {
        job_id: id,
        attempt,
        state,
        retry_after: Some(Duration::ZERO),
        reason: OutcomeReason::Exited,
        exit_code: Some(0),
        signal: None,
        detail: None,
        usage: Usage::default(),
        tests: None,
    };
    sqlx::query("UPDATE jobs SET max_attempts = 2 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    let stdout = ChunkKind::Output(OutputStream::Stdout);
    let stderr = ChunkKind::Output(OutputStream::Stderr);
    queue::insert_chunks(pool, worker, &[chunk(1, 1, stdout, "attempt 1\n".into())])
        .await
        .unwrap();
    let retried = queue::complete(pool, worker, &[done(1, JobState::Scheduled)])
        .await
        .unwrap();
    assert_eq!(retried, vec![id]);
    let claimed = queue::claim(pool, worker, "default", 1, lease)
        .await
        .unwrap();
    assert_eq!(claimed.first().map(|c| c.attempt), Some(2));
    let (mut want_out, mut want_err) = (String::new(), String::new());
    let mut chunks = Vec::new();
    for seq in 1..=600 {
        let (stream, want) = match seq % 3 {
            0 => (stderr, &mut want_err),
            _ => (stdout, &mut want_out),
        };
        let line = format!("line {seq}\n");
        want.push_str(&line);
        chunks.push(chunk(2, seq, stream, line));
    }
    chunks.insert(
        100,
        chunk(2, 601, ChunkKind::Event, r#"{"event":"case"}"#.into()),
    );
    queue::insert_chunks(pool, worker, &chunks).await.unwrap();
    queue::complete(pool, worker, &[done(2, JobState::Succeeded)])
        .await
        .unwrap();
    // The replay waits for the first request's job, already finished: the final record and
    // all of attempt 2's output, in order, without attempt 1's line or the event.
    let res = post(&h, "?wait=5", &spec(&hello), Some("paged")).await;
    assert_eq!(res.status(), 200);
    let job: Value = res.json().await.unwrap();
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_i64()),
        (Some("succeeded"), Some(2)),
        "{job}"
    );
    assert_eq!(job["output"]["stdout"]["text"], want_out.as_str());
    assert_eq!(job["output"]["stderr"]["text"], want_err.as_str());
    assert_eq!(job["output"]["stdout"]["truncated"], false);
}

/// A counter's value from the metrics text (0 before its first increment).
fn counter(metrics: &str, name: &str) -> u64 {
    common::counter(metrics, name).unwrap_or(0)
}

/// `nekton_claims_total{result="…"}` from the metrics text.
fn claims(metrics: &str, result: &str) -> u64 {
    counter(
        metrics,
        &format!("nekton_claims_total{{result=\"{result}\"}}"),
    )
}

/// `nekton_wait_answers_total{source="…"}` from the metrics text.
fn answers(metrics: &str, source: &str) -> u64 {
    counter(
        metrics,
        &format!("nekton_wait_answers_total{{source=\"{source}\"}}"),
    )
}

/// With the worker in the same process, a waited job's answer is the one the flush that stored
/// its end read back in the same statement: no read after the commit. It is the record as
/// stored — the same as a later `GET` to the last field — and its output. A request that finds
/// its job already finished (a replay) reads the answer itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_job_is_answered_with_what_the_flush_that_finished_it_read_back() {
    let h = Harness::start().await;
    let hello = h.push(guests::hello()).await;
    let before = h.metrics_text().await;
    assert_eq!(
        (answers(&before, "flush"), answers(&before, "read")),
        (0, 0),
        "both sources exposed from the start: {before}"
    );
    let mut answered = Vec::new();
    for key in ["flushed-1", "flushed-2", "flushed-3"] {
        let job: Value = post(&h, "?wait=30", &spec(&hello), Some(key))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(
            job["output"],
            json!({"stdout": {"text": "hello\n", "truncated": false},
                   "stderr": {"text": "warn\n", "truncated": false}}),
            "{job}"
        );
        // The record as stored, every field.
        let mut stored = serde_json::to_value(
            h.client
                .get_job(job["id"].as_str().unwrap().parse().unwrap())
                .await
                .unwrap(),
        )
        .unwrap();
        stored["output"] = job["output"].clone();
        assert_eq!(job, stored);
        answered.push(job);
    }
    let after = h.metrics_text().await;
    assert_eq!(
        answers(&after, "flush"),
        3,
        "each answer came from the flush: {after}"
    );
    assert_eq!(answers(&after, "read"), 0);
    // A replay of a finished job: read.
    let again: Value = post(&h, "?wait=30", &spec(&hello), Some("flushed-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, answered[0]);
    assert_eq!(answers(&h.metrics_text().await, "read"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_serve_a_lone_job_is_handed_to_the_worker_beside_the_api_without_a_claim() {
    // API and worker in one process, the worker idle: the submission stores each lone job
    // already running on that worker and the API passes it over in memory — no claim, no
    // wake-up, no time in the queue. (Before, each lone job cost one claim; before that three,
    // two of them empty.) The poll is pushed out of the test's way.
    let h = Harness::start_with(|o| o.timing.poll = Duration::from_secs(600)).await;
    let hello = h.push(guests::hello()).await;
    let run = |n: usize| {
        let h = &h;
        let hello = hello.clone();
        async move {
            for _ in 0..n {
                let job: Value = post(h, "?wait=30", &spec(&hello), None)
                    .await
                    .json()
                    .await
                    .unwrap();
                assert_eq!(job["state"], "succeeded", "{job}");
                assert_eq!(job["attempt"], 1, "{job}");
                assert_eq!(job["output"]["stdout"]["text"], "hello\n", "{job}");
                assert_eq!(
                    job["usage"]["queue_wait_ms"], 0,
                    "started as it was stored: {job}"
                );
                assert_eq!(job["started_at"], job["created_at"], "{job}");
            }
        }
    };
    run(1).await;
    // Let the first job's stray wake-ups (the LISTEN connection's start) settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = h.metrics_text().await;
    run(10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = h.metrics_text().await;
    let handed =
        counter(&after, "nekton_jobs_handed_total") - counter(&before, "nekton_jobs_handed_total");
    let took = claims(&after, "jobs") - claims(&before, "jobs");
    let empty = claims(&after, "empty") - claims(&before, "empty");
    assert_eq!(handed, 10, "each lone job was handed to the worker");
    assert_eq!(took, 0, "no claim took a lone job");
    assert!(
        empty <= 1,
        "{empty} empty claims for 10 lone jobs (each job's NOTIFY or completion started one)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_not_handed_over_gives_the_slot_set_aside_for_it_back_to_the_claim() {
    // One slot, and a tenant with a `max_running` cap, whose jobs are never handed over: the API
    // sets the worker's only slot aside, the job is stored waiting, and the API must give the
    // slot back before it pokes the worker. Held through the request's wait, the claim that poke
    // starts would find no free slot and, with the poll out of the way, the job would run only
    // after the wait ran out.
    let h = Harness::start_with(|o| {
        o.worker_slots = Some(1);
        o.timing.poll = Duration::from_secs(600);
    })
    .await;
    let hello = h.push(guests::hello()).await;
    sqlx::query("UPDATE tenants SET max_running = 5 WHERE id = 'default'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let before = h.metrics_text().await;
    let job: Value = post(&h, "?wait=20", &spec(&hello), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "succeeded", "claimed at once: {job}");
    let after = h.metrics_text().await;
    assert_eq!(
        counter(&after, "nekton_jobs_handed_total") - counter(&before, "nekton_jobs_handed_total"),
        0,
        "a capped tenant's job goes through the claim"
    );
    assert_eq!(claims(&after, "jobs") - claims(&before, "jobs"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_capped_tenant_a_completion_claims_the_job_the_cap_held_back() {
    // The other side of the test above: the default tenant may run one job at a time, so its
    // second job is left behind by the claim that takes the first, and only the first one's
    // completion makes it claimable. The worker claims again then (it read at start that a
    // tenant is capped); with the poll pushed out, nothing else would start it.
    let db = nekton::testing::TestDb::new().await;
    nekton::store::migrate(&db.pool)
        .await
        .expect("migrations apply");
    sqlx::query("UPDATE tenants SET max_running = 1 WHERE id = 'default'")
        .execute(&db.pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = common::options(dir.path());
    opts.timing.poll = Duration::from_secs(600);
    let running = nekton::server::start(db.pool.clone(), opts)
        .await
        .expect("service starts");
    let base = format!("http://{}", running.api_addr.expect("api address"));
    let client = nekton::cli::Client::with_token(&base, running.admin_token.as_deref()).unwrap();
    let slow = client
        .push_module(guests::sleep_then_print(300))
        .await
        .unwrap()
        .digest;
    let spec = Harness::spec(&slow);
    let first = client.submit(&spec, None).await.unwrap();
    let second = client.submit(&spec, None).await.unwrap();
    let done = common::wait_finished(&client, second.id, Duration::from_secs(20)).await;
    assert_eq!(done.state, nekton::api::types::JobState::Succeeded);
    let first = client.get_job(first.id).await.unwrap();
    assert!(
        first.finished_at <= done.started_at,
        "the cap held the second job until the first finished: {first:?} / {done:?}"
    );
    running.shutdown().await.expect("clean shutdown");
}

/// A `?wait=` submission without an idempotency key commits without waiting for its WAL flush
/// (`SubmitCommit::Deferred`: its answer comes after a later one), and an answer that names the
/// job unfinished — the wait ran out — waits for a flush of its own: the job it names is
/// durable. On a server with `synchronous_commit` on that flushes on its own only every 10 s
/// (`wal_writer_delay`), and an API without a worker (nothing else writes), the test sees the
/// submission stored and its WAL not yet flushed while the request waits, then the answer, then
/// every byte of WAL inserted before the answer flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_answers_only_once_the_job_is_durable() {
    use nekton::pg::{EmbeddedOptions, EmbeddedPostgres};
    let dir = common::serve_state_dir("nkwaitflush");
    let pg = EmbeddedPostgres::start(
        dir.path().join("pg"),
        EmbeddedOptions {
            synchronous_commit: true,
            settings: vec![
                ("wal_writer_delay".into(), "10s".into()),
                ("autovacuum".into(), "off".into()),
            ],
            ..EmbeddedOptions::for_tests()
        },
    )
    .await
    .expect("starting PostgreSQL");
    pg.create_database_if_missing("nekton").await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(pg.connect_options("nekton"))
        .await
        .unwrap();
    nekton::store::migrate(&pool)
        .await
        .expect("migrations apply");
    let state = tempfile::tempdir().unwrap();
    let mut opts = common::options(state.path());
    opts.worker_slots = None;
    let running = nekton::server::start(pool.clone(), opts)
        .await
        .expect("the API starts");
    let base = format!("http://{}", running.api_addr.expect("api address"));
    let client =
        nekton::cli::Client::with_token(&base, running.admin_token.as_deref()).expect("client");
    let http = common::http_client(running.admin_token.as_deref());
    let hello = client
        .push_module(guests::hello())
        .await
        .expect("module upload")
        .digest;
    let lsns = || async {
        let (insert, flush): (String, String) = sqlx::query_as(
            "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (lsn(&insert), lsn(&flush))
    };

    // The server's own WAL writer may flush the submission in the second the wait takes (once
    // every 10 s): then the try proves nothing, and another job is submitted.
    for _ in 0..5 {
        let submitted = tokio::spawn({
            let http = http.clone();
            let body = spec(&hello);
            let url = format!("{base}/v1/jobs?wait=1");
            async move {
                http.post(url)
                    .json(&body)
                    .send()
                    .await
                    .expect("POST /v1/jobs")
            }
        });
        // The job stored, its WAL inserted but not flushed, while the request waits.
        let mut seen = None;
        let until = std::time::Instant::now() + Duration::from_millis(800);
        while std::time::Instant::now() < until {
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
                .fetch_one(&pool)
                .await
                .unwrap();
            let (insert, flush) = lsns().await;
            if stored > 0 && !submitted.is_finished() {
                seen = Some((insert, flush));
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (inserted, flushed) = seen.expect("the job stored while its request waits");
        let res = submitted.await.unwrap();
        assert_eq!(res.status(), 201);
        let job: Value = res.json().await.unwrap();
        assert_eq!(job["state"], "queued", "no worker runs it: {job}");
        let (_, flushed_after) = lsns().await;
        assert!(
            flushed_after >= inserted,
            "answered with WAL up to {inserted:X} inserted and only {flushed_after:X} flushed"
        );
        if flushed < inserted {
            // The submission's commit did not wait for its flush; the answer did.
            running.shutdown().await.expect("clean shutdown");
            pool.close().await;
            pg.stop().await;
            return;
        }
        sqlx::query("DELETE FROM jobs")
            .execute(&pool)
            .await
            .unwrap();
    }
    panic!("in 5 tries the submission's WAL was always flushed before its answer was due");
}

/// A `pg_lsn` (`16/B374D848`) as a number.
fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// A server on a pool of its own, larger than the harness's and grown to many idle connections
/// (as a burst of requests leaves it), with `setup` (SQL) applied after the migrations.
struct Roomy {
    _db: nekton::testing::TestDb,
    pool: sqlx::PgPool,
    running: nekton::server::Running,
    client: nekton::cli::Client,
    http: reqwest::Client,
    base: String,
    hello: String,
    /// The fewest connections in use once the pool had grown, before any job.
    busy_before: u32,
}

async fn roomy(setup: &str) -> Roomy {
    let db = nekton::testing::TestDb::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(24)
        .connect_with(db.connect_options())
        .await
        .unwrap();
    nekton::store::migrate(&pool).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (running, client) = common::start_on(&pool, dir.path()).await;
    let hello = client.push_module(guests::hello()).await.unwrap().digest;
    let http = common::http_client(running.admin_token.as_deref());
    let base = format!("http://{}", running.api_addr.unwrap());
    let mut idle = Vec::new();
    while idle.len() < 20 {
        match tokio::time::timeout(Duration::from_millis(500), pool.acquire()).await {
            Ok(conn) => idle.push(conn.unwrap()),
            Err(_) => break,
        }
    }
    let grown = idle.len();
    assert!(
        grown >= 12,
        "the pool grew to only {grown} free connections"
    );
    drop(idle);
    let busy_before = fewest_in_use(&pool).await;
    Roomy {
        _db: db,
        pool,
        running,
        client,
        http,
        base,
        hello,
        busy_before,
    }
}

/// Statements per backend in `table` (rows of `pid`), most first; asserts there are `n`.
async fn per_backend(pool: &sqlx::PgPool, table: &str, n: i64) -> Vec<i64> {
    // `table` is one of this file's constants.
    let counts: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} GROUP BY pid ORDER BY count(*) DESC"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(counts.iter().sum::<i64>(), n, "{table}: {counts:?}");
    counts
}

/// Set-up SQL for [`roomy`]: a table `test_backends` that records the backend of each row
/// inserted into `table` (one of this file's constants).
fn record_inserts_into(table: &str) -> String {
    format!(
        "CREATE TABLE test_backends (n bigserial PRIMARY KEY, pid integer NOT NULL);
         CREATE FUNCTION test_record_backend() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO test_backends (pid) SELECT pg_backend_pid() FROM test_new;
             RETURN NULL;
         END $$;
         CREATE TRIGGER test_record_backend AFTER INSERT ON {table}
             REFERENCING NEW TABLE AS test_new
             FOR EACH STATEMENT EXECUTE FUNCTION test_record_backend();"
    )
}

/// `n` lone hello jobs, one after another, each submitted with `?wait=` and answered succeeded.
async fn lone_waited_jobs(s: &Roomy, n: i64) {
    for _ in 0..n {
        let res = s
            .http
            .post(format!("{}/v1/jobs?wait=30", s.base))
            .json(&spec(&s.hello))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let job: Value = res.json().await.unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}

/// A worker's writer keeps its connection from one flush to the next (`store::Held`), so a lone
/// job's flush runs on a warm backend — not on whichever connection the pool left idle longest,
/// as a fresh acquire each time would (sqlx hands out idle connections oldest first). A trigger
/// the test adds records the backend that stored each job's attempt (one row per job: a flush of
/// output alone, which a job's end can follow on a busy machine, inserts none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_jobs_are_flushed_on_the_writers_own_connection() {
    let s = roomy(&record_inserts_into("job_attempts")).await;
    const JOBS: i64 = 60;
    lone_waited_jobs(&s, JOBS).await;
    let counts = per_backend(&s.pool, "test_backends", JOBS).await;
    // Kept: each writer lane's flushes on its one connection (two lanes here: 32 + 28 seen), one
    // more only past `Held::FOR` (10 s). Taken afresh for each flush: spread over the idle
    // connections, 5 or 6 flushes each at most (seen).
    assert!(
        counts[0] >= JOBS / 6,
        "the flushes of {JOBS} lone jobs, one after another, spread over {} backends: \
         {counts:?} flushes each",
        counts.len()
    );
    // Idle for `Held::IDLE`, the writers give their connections back to the pool.
    tokio::time::sleep(nekton::store::Held::IDLE).await;
    let busy_after = fewest_in_use(&s.pool).await;
    assert!(
        busy_after <= s.busy_before,
        "{busy_after} connections in use a second after the last job, {} before the first",
        s.busy_before
    );
    s.running.shutdown().await.expect("clean shutdown");
}

/// The worker's claim loop keeps its connection from one claim to the next too. A trigger the
/// test adds records the backend of each statement that moved jobs to `running` (the claims:
/// batch jobs are not handed over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_run_on_the_claim_loops_own_connection() {
    let s = roomy(
        "CREATE TABLE test_claim_backends (n bigserial PRIMARY KEY, pid integer NOT NULL);
         CREATE FUNCTION test_record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO test_claim_backends (pid)
             SELECT pg_backend_pid() WHERE EXISTS (
                 SELECT 1 FROM test_new n JOIN test_old o ON o.id = n.id
                 WHERE n.state = 'running' AND o.state <> 'running');
             RETURN NULL;
         END $$;
         CREATE TRIGGER test_record_claim AFTER UPDATE ON jobs
             REFERENCING OLD TABLE AS test_old NEW TABLE AS test_new
             FOR EACH STATEMENT EXECUTE FUNCTION test_record_claim();",
    )
    .await;
    const BATCHES: i64 = 40;
    for _ in 0..BATCHES {
        let batch = nekton::api::types::BatchSpec {
            defaults: Default::default(),
            jobs: vec![json!({ "module": s.hello })],
            labels: Default::default(),
        };
        let created = s.client.submit_batch(&batch).await.unwrap();
        common::wait_finished(&s.client, created.job_ids[0], Duration::from_secs(30)).await;
    }
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM test_claim_backends")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert!(claims >= BATCHES, "{claims} claims took the {BATCHES} jobs");
    let counts = per_backend(&s.pool, "test_claim_backends", claims).await;
    assert!(
        counts[0] >= claims / 3,
        "{claims} claims, one after another, spread over {} backends: {counts:?} each",
        counts.len()
    );
    s.running.shutdown().await.expect("clean shutdown");
}

/// The API's lone submissions share the connections used last (`store::Warm`), so each runs on a
/// warm backend — not on whichever connection the pool left idle longest, as a fresh acquire for
/// each would. A trigger the test adds records the backend that stored each job's spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_submissions_run_on_the_connections_used_last() {
    let s = roomy(&record_inserts_into("job_specs")).await;
    const JOBS: i64 = 40;
    lone_waited_jobs(&s, JOBS).await;
    let counts = per_backend(&s.pool, "test_backends", JOBS).await;
    // Shared, most recently used first: one or two backends carry them (the other handlers of
    // a request — the tenant's quotas, a token — take the pool's). Taken afresh for each: spread
    // over the 12 or more idle connections.
    assert!(
        counts[0] >= JOBS / 3,
        "{JOBS} lone submissions, one after another, spread over {} backends: {counts:?} each",
        counts.len()
    );
    s.running.shutdown().await.expect("clean shutdown");
}

/// The fewest connections of `pool` in use over a second (the server's background tasks take
/// one now and then; a dropped one goes back in a task of its own).
async fn fewest_in_use(pool: &sqlx::PgPool) -> u32 {
    let mut fewest = u32::MAX;
    for _ in 0..50 {
        fewest = fewest.min(pool.size() - pool.num_idle() as u32);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fewest
}
