//! The HTTP API end to end: real PostgreSQL, the real worker and Wasm backend, over a real socket.
//! Request checks that need neither a worker nor a socket (4xx shapes, `field` paths) live in
//! `tests/api_handlers.rs`, which drives the router directly.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Harness, guests};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use nekton::api::types::{BatchSpec, JobState, LimitsSpec};
use nekton::cli::LogStreamEvent;
use nekton::config::QueueTiming;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_job_runs_and_reports_outcome_and_usage() {
    let h = Harness::start().await;
    let digest = h.push(guests::hello()).await;
    let job = h.submit(&Harness::spec(&digest)).await;
    assert!(matches!(
        job.state,
        JobState::Queued | JobState::Running | JobState::Succeeded
    ));
    assert_eq!(job.id.get_version_num(), 7, "job ids are UUIDv7");
    let done = h.wait_finished(job.id, T).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempt, 1);
    let outcome = done.outcome.expect("outcome");
    assert_eq!(
        (outcome.reason.as_str(), outcome.exit_code, outcome.signal),
        ("exited", Some(0), None)
    );
    let usage = done.usage.expect("usage");
    assert_eq!((usage.stdout_bytes, usage.stderr_bytes), (6, 5));
    assert!(!usage.stdout_truncated && !usage.stderr_truncated);
    assert!(
        usage.fuel_consumed.is_some_and(|f| f > 0),
        "fuel is counted: {usage:?}"
    );
    assert!(
        usage.queue_wait_ms.is_some() && usage.wall_ms.is_some() && usage.cpu_user_ms.is_some()
    );
    assert!(usage.memory_peak_bytes.is_some_and(|m| m >= 65_536));
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    // The raw JSON has the names clients rely on.
    let raw: serde_json::Value = h
        .http
        .get(format!("{}/v1/jobs/{}", h.base, job.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for k in [
        "id",
        "state",
        "attempt",
        "created_at",
        "started_at",
        "finished_at",
        "outcome",
        "usage",
    ] {
        assert!(raw.get(k).is_some(), "job record lacks {k}: {raw}");
    }
    for k in [
        "queue_wait_ms",
        "wall_ms",
        "cpu_user_ms",
        "cpu_system_ms",
        "memory_peak_bytes",
        "stdout_bytes",
        "stderr_bytes",
        "stdout_truncated",
        "stderr_truncated",
        "fuel_consumed",
    ] {
        assert!(raw["usage"].get(k).is_some(), "usage lacks {k}: {raw}");
    }
    // Plain logs, per stream and together.
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
    let err = h
        .http
        .get(format!("{}/v1/jobs/{}/logs?stream=stderr", h.base, job.id))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&err[..], b"warn\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_stdin_args_and_env_reach_the_job() {
    let h = Harness::start().await;
    let exit7 = h.push(guests::exit_with(7)).await;
    let done = h
        .wait_finished(h.submit(&Harness::spec(&exit7)).await.id, T)
        .await;
    assert_eq!(done.state, JobState::Failed);
    let o = done.outcome.unwrap();
    assert_eq!((o.reason.as_str(), o.exit_code), ("exited", Some(7)));

    let cat = h.push(guests::cat()).await;
    let mut spec = Harness::spec(&cat);
    spec.stdin = Some("aGVsbG8AIHdvcmxk/w==".into()); // "hello\0 world\xff"
    spec.stdin_encoding = Some(nekton::api::types::Encoding::Base64);
    let done = h.wait_finished(h.submit(&spec).await.id, T).await;
    assert_eq!(done.state, JobState::Succeeded);
    let out = h.client.plain_log_bytes(done.id, None).await.unwrap();
    assert_eq!(out, b"hello\0 world\xff", "bytes survive as bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_end_jobs_with_the_right_verdict_and_the_worker_keeps_serving() {
    let h = Harness::start().await;
    let spin = h.push(guests::spin()).await;
    let bomb = h.push(guests::memory_bomb()).await;
    let hello = h.push(guests::hello()).await;

    let started = Instant::now();
    let wall = h
        .submit(&Harness::spec_with_limits(
            &spin,
            LimitsSpec {
                wall_time_ms: Some(500),
                ..Default::default()
            },
        ))
        .await;
    let fuel = h
        .submit(&Harness::spec_with_limits(
            &spin,
            LimitsSpec {
                fuel: Some(5_000_000),
                ..Default::default()
            },
        ))
        .await;
    let mem = h
        .submit(&Harness::spec_with_limits(
            &bomb,
            LimitsSpec {
                memory_bytes: Some(8 << 20),
                ..Default::default()
            },
        ))
        .await;
    let wall = h.wait_finished(wall.id, T).await;
    assert_eq!(
        (wall.state, wall.outcome.as_ref().unwrap().reason.as_str()),
        (JobState::Failed, "wall_timeout")
    );
    let wall_ms = wall.usage.as_ref().unwrap().wall_ms.unwrap();
    assert!(
        (450..3000).contains(&wall_ms),
        "wall_timeout near its 500 ms limit, got {wall_ms} ms"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let fuel = h.wait_finished(fuel.id, T).await;
    assert_eq!(
        (fuel.state, fuel.outcome.as_ref().unwrap().reason.as_str()),
        (JobState::Failed, "cpu_timeout")
    );
    let consumed = fuel.usage.unwrap().fuel_consumed.unwrap();
    assert!(
        (4_000_000..=5_000_000).contains(&consumed),
        "fuel consumed {consumed}"
    );
    let mem = h.wait_finished(mem.id, T).await;
    assert_eq!(
        (mem.state, mem.outcome.as_ref().unwrap().reason.as_str()),
        (JobState::Failed, "memory_limit")
    );
    assert!(mem.usage.unwrap().memory_peak_bytes.unwrap() <= 8 << 20);

    // Output over the cap: stopped, truncated, flagged.
    let lines = h.push(guests::numbered_lines(1000)).await;
    let out = h
        .submit(&Harness::spec_with_limits(
            &lines,
            LimitsSpec {
                output_bytes: Some(1000),
                ..Default::default()
            },
        ))
        .await;
    let out = h.wait_finished(out.id, T).await;
    assert_eq!(
        (out.state, out.outcome.as_ref().unwrap().reason.as_str()),
        (JobState::Failed, "output_limit")
    );
    let usage = out.usage.unwrap();
    assert_eq!((usage.stdout_bytes, usage.stdout_truncated), (1000, true));
    assert_eq!(
        h.client.plain_log_bytes(out.id, None).await.unwrap(),
        guests::numbered_lines_expected(1000)[..1000]
    );

    // A malformed module is refused at upload and stores nothing.
    let before = h.count("modules").await;
    let res = h
        .http
        .post(format!("{}/v1/modules", h.base))
        .body(b"\0asm\x01\0\0\0garbage".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_module");
    assert_eq!(h.count("modules").await, before);

    // The worker still serves.
    let ok = h
        .wait_finished(h.submit(&Harness::spec(&hello)).await.id, T)
        .await;
    assert_eq!(ok.state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_running_and_queued_jobs() {
    // The cancel flags' poll, the NOTIFY's backup, comes only after the test's deadline: the
    // running job's cancel must arrive by NOTIFY.
    let h = Harness::start_with(|o| {
        o.worker_slots = Some(1);
        // A lease of 30 min: its heartbeat (a third) also reads the cancel flags.
        o.timing = QueueTiming::with_lease(Duration::from_secs(1800));
        o.timing.cancel_poll = Duration::from_secs(600);
    })
    .await;
    let spin = h.push(guests::spin()).await;
    let running = h.submit(&Harness::spec(&spin)).await;
    h.wait_running(running.id, T).await;
    // The only slot is busy: this one stays queued.
    let queued = h.submit(&Harness::spec(&spin)).await;
    let c = h.client.cancel(queued.id).await.unwrap();
    assert_eq!(
        c.state,
        JobState::Cancelled,
        "a queued job is cancelled at once"
    );
    assert_eq!(c.outcome.unwrap().reason, "cancelled");

    h.client.cancel(running.id).await.unwrap();
    let done = h.wait_finished(running.id, T).await;
    assert_eq!(done.state, JobState::Cancelled);
    assert_eq!(done.outcome.unwrap().reason, "cancelled");

    // Cancelling a finished job is a conflict.
    let res = h
        .http
        .post(format!("{}/v1/jobs/{}/cancel", h.base, running.id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_makes_retries_safe() {
    let h = Harness::start().await;
    let hello = h.push(guests::hello()).await;
    let url = format!("{}/v1/jobs", h.base);
    let send = |body: serde_json::Value| {
        h.http
            .post(&url)
            .header("idempotency-key", "k-1")
            .json(&body)
            .send()
    };
    let a = send(json!({"module": hello, "args": ["1"]})).await.unwrap();
    assert_eq!(a.status(), 201);
    let a: serde_json::Value = a.json().await.unwrap();
    // Same body (keys in another order) → the same job.
    let b = send(json!({"args": ["1"], "module": hello})).await.unwrap();
    assert_eq!(b.status(), 200);
    let b: serde_json::Value = b.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    let c = send(json!({"module": hello, "args": ["2"]})).await.unwrap();
    assert_eq!(c.status(), 422);
    assert_eq!(
        c.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "idempotency_key_reused"
    );
    assert_eq!(h.count("jobs").await, 1);
}

/// A keyed submission tries the one-statement path first and falls back to the transaction when
/// the key was used or the module is missing: concurrent sends of one key still store one job,
/// and a key whose first use was refused (module missing) is not spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sent_concurrently_stores_one_job_and_a_refused_one_is_not_spent() {
    let h = Harness::start().await;
    let hello = h.push(guests::hello()).await;
    let url = format!("{}/v1/jobs", h.base);
    let send = |key: &'static str, body: serde_json::Value| {
        h.http
            .post(&url)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let answers = futures::future::join_all(
        (0..16).map(|_| send("same", json!({"module": hello, "args": ["1"]}))),
    )
    .await;
    let mut statuses = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for a in answers {
        let a = a.unwrap();
        statuses.push(a.status().as_u16());
        let body: serde_json::Value = a.json().await.unwrap();
        ids.insert(body["id"].as_str().unwrap().to_string());
    }
    statuses.sort();
    assert_eq!(statuses[15], 201, "one stored it: {statuses:?}");
    assert!(statuses[..15].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(ids.len(), 1, "every answer names the one job: {ids:?}");
    assert_eq!(h.count("jobs").await, 1);

    let missing = format!("sha256:{}", "0".repeat(64));
    let refused = send("fresh", json!({"module": missing})).await.unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "module_not_found"
    );
    assert_eq!(
        h.count("jobs").await,
        1,
        "nothing stored for the refused one"
    );
    let later = send("fresh", json!({"module": hello})).await.unwrap();
    assert_eq!(
        later.status(),
        201,
        "the refused submission did not spend its key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_and_paginates_newest_first() {
    let h = Harness::start_with(|o| o.worker_slots = None).await; // no worker: jobs stay queued
    let hello = h.push(guests::hello()).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut spec = Harness::spec(&hello);
        spec.labels = BTreeMap::from([(
            "parity".to_string(),
            if i % 2 == 0 { "even" } else { "odd" }.to_string(),
        )]);
        ids.push(h.submit(&spec).await.id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/jobs?limit=3", h.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value = h.http.get(url).send().await.unwrap().json().await.unwrap();
        for j in page["jobs"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let even: serde_json::Value = h
        .http
        .get(format!("{}/v1/jobs?label=parity=even&state=queued", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(even["jobs"].as_array().unwrap().len(), 4);
    let res = h
        .http
        .get(format!("{}/v1/jobs?state=sleeping", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_run_many_jobs_and_stream_their_completions() {
    let h = Harness::start().await;
    let hello = h.push(guests::hello()).await;
    let exit3 = h.push(guests::exit_with(3)).await;
    let mut jobs: Vec<serde_json::Value> =
        (0..20).map(|i| json!({"args": [i.to_string()]})).collect();
    jobs.push(json!({"module": exit3}));
    let spec = BatchSpec {
        defaults: json!({"module": hello, "limits": {"wall_time_ms": 5000}})
            .as_object()
            .unwrap()
            .clone(),
        jobs,
        labels: BTreeMap::from([("suite".into(), "b1".into())]),
    };
    let created = h.client.submit_batch(&spec).await.unwrap();
    assert_eq!(created.job_ids.len(), 21);
    let res = h
        .http
        .get(format!("{}/v1/batches/{}/events", h.base, created.id))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut events = res.bytes_stream().eventsource();
    let mut finished = std::collections::HashSet::new();
    let mut done = None;
    while let Some(ev) = tokio::time::timeout(T, events.next())
        .await
        .expect("batch events arrive")
    {
        let ev = ev.unwrap();
        match ev.event.as_str() {
            "job" => {
                let job: nekton::api::types::Job = serde_json::from_str(&ev.data).unwrap();
                assert!(job.state.is_terminal());
                assert_eq!(job.labels.get("suite").map(String::as_str), Some("b1"));
                finished.insert(job.id);
            }
            "done" => {
                done = Some(serde_json::from_str::<nekton::api::types::Batch>(&ev.data).unwrap());
                break;
            }
            _ => {}
        }
    }
    let done = done.expect("done event");
    assert_eq!(finished.len(), 21);
    assert!(done.finished);
    assert_eq!(done.counts["succeeded"], 20);
    assert_eq!(done.counts["failed"], 1);
    // A batch with one bad job stores nothing.
    let before = h.count("jobs").await;
    let bad = BatchSpec {
        defaults: Default::default(),
        jobs: vec![json!({"module": hello}), json!({"module": "x"})],
        labels: BTreeMap::new(),
    };
    let res = h
        .http
        .post(format!("{}/v1/batches", h.base))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"]["field"],
        "jobs[1].module"
    );
    assert_eq!(h.count("jobs").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_every_byte_in_order_and_resumes_exactly() {
    let h = Harness::start().await;
    // 163,840 lines × 64 bytes = 10 MiB in as many small writes.
    let lines = 163_840;
    let expected = guests::numbered_lines_expected(lines);
    let digest = h.push(guests::numbered_lines(lines)).await;
    let job = h.submit(&Harness::spec(&digest)).await;

    // Follow live, and drop the connection midway.
    let mut got = Vec::new();
    let mut last_id = None;
    {
        let res = h
            .http
            .get(format!("{}/v1/jobs/{}/logs", h.base, job.id))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut events = res.bytes_stream().eventsource();
        while let Some(ev) = tokio::time::timeout(T, events.next())
            .await
            .expect("events arrive")
        {
            let ev = ev.unwrap();
            if ev.event == "log" {
                let log: nekton::api::types::LogEvent = serde_json::from_str(&ev.data).unwrap();
                let (_, bytes) = nekton::cli::decode_log_event(&log).unwrap();
                got.extend_from_slice(&bytes);
                last_id = Some(ev.id.clone());
                if got.len() >= expected.len() / 2 {
                    break;
                }
            }
        }
    }
    assert!(
        !got.is_empty() && got.len() < expected.len(),
        "disconnected midway"
    );
    // Resume with Last-Event-ID: exactly the rest, then exit.
    let res = h
        .http
        .get(format!("{}/v1/jobs/{}/logs", h.base, job.id))
        .header("accept", "text/event-stream")
        .header("last-event-id", last_id.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut events = res.bytes_stream().eventsource();
    let mut exit = None;
    while let Some(ev) = tokio::time::timeout(T, events.next())
        .await
        .expect("events arrive")
    {
        let ev = ev.unwrap();
        match ev.event.as_str() {
            "log" => {
                let log: nekton::api::types::LogEvent = serde_json::from_str(&ev.data).unwrap();
                got.extend_from_slice(&nekton::cli::decode_log_event(&log).unwrap().1);
            }
            "exit" => {
                exit =
                    Some(serde_json::from_str::<nekton::api::types::ExitEvent>(&ev.data).unwrap());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "every byte, in order");
    let exit = exit.expect("exit event");
    assert_eq!(exit.state, JobState::Succeeded);
    assert_eq!(exit.usage.unwrap().stdout_bytes, expected.len() as u64);

    // After the job finished: the whole log, then exit.
    let mut all = Vec::new();
    let mut names = Vec::new();
    let mut stream = Box::pin(h.client.follow_logs(job.id, None));
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            LogStreamEvent::Log { bytes, .. } => {
                all.extend_from_slice(&bytes);
                names.push("log");
            }
            LogStreamEvent::State { .. } => names.push("state"),
            LogStreamEvent::Exit { .. } => names.push("exit"),
            LogStreamEvent::Suite { .. } => names.push("suite"),
        }
    }
    assert!(all == expected);
    assert_eq!(names.first(), Some(&"state"));
    assert_eq!(names.last(), Some(&"exit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_arrives_live_before_the_job_ends() {
    let h = Harness::start().await;
    let digest = h.push(guests::slow_writer(3, 700)).await;
    let job = h.submit(&Harness::spec(&digest)).await;
    let mut stream = Box::pin(h.client.follow_logs(job.id, None));
    loop {
        match tokio::time::timeout(T, stream.next())
            .await
            .expect("events")
            .expect("stream open")
            .unwrap()
        {
            LogStreamEvent::Log { bytes, .. } => {
                assert_eq!(bytes, b"tick\n");
                break;
            }
            LogStreamEvent::Exit { .. } => panic!("the job ended before any output was streamed"),
            LogStreamEvent::State { .. } | LogStreamEvent::Suite { .. } => {}
        }
    }
    // The first tick arrived while the job was still running.
    let now = h.client.get_job(job.id).await.unwrap();
    assert_eq!(
        now.state,
        JobState::Running,
        "output is streamed live, not at the end"
    );
}

/// A job's log stream followed to its `Exit`: (its stdout, the final state).
async fn follow_to_the_end(h: &Harness, id: uuid::Uuid) -> (Vec<u8>, JobState) {
    let mut stream = Box::pin(h.client.follow_logs(id, None));
    let mut output = Vec::new();
    loop {
        match tokio::time::timeout(T, stream.next())
            .await
            .expect("events")
            .expect("stream open")
            .unwrap()
        {
            LogStreamEvent::Log {
                stream: nekton::cli::StdStream::Stdout,
                bytes,
                ..
            } => output.extend_from_slice(&bytes),
            LogStreamEvent::Exit { event, .. } => return (output, event.state),
            LogStreamEvent::Log { .. } => {}
            LogStreamEvent::State { .. } | LogStreamEvent::Suite { .. } => {}
        }
    }
}

/// `nekton serve` on its embedded database is the only process using it
/// (`ProcessOptions::private_database`): its API and its worker tell each other in memory, and
/// nothing they do on a job's path is NOTIFYed (each NOTIFY makes PostgreSQL signal every
/// listening backend at the commit). A lone job is handed over and answered with `?wait=`, a
/// batch is claimed (the API pokes the worker), live output reaches a follower, and a listener on
/// the jobs, logs and state channels hears nothing before a marker sent afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_private_database_jobs_run_and_are_followed_without_a_notify() {
    use nekton::store::{CHANNEL_JOBS, CHANNEL_LOGS, CHANNEL_STATE};
    let h = Harness::start_with(|o| o.private_database = true).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&h.db.pool)
        .await
        .unwrap();
    listener
        .listen_all([CHANNEL_JOBS, CHANNEL_LOGS, CHANNEL_STATE])
        .await
        .unwrap();
    let hello = h.push(guests::hello()).await;
    // A lone job: handed over, answered finished with its output.
    let job = h
        .client
        .submit_wait(&Harness::spec(&hello), None, 30)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(
        job.output.as_ref().and_then(|o| o.stdout.text.as_deref()),
        Some("hello\n")
    );
    // A batch: stored queued, claimed, each job followed to its end.
    let created = h
        .client
        .submit_batch(&BatchSpec {
            defaults: json!({ "module": hello }).as_object().unwrap().clone(),
            jobs: vec![json!({}); 3],
            labels: BTreeMap::new(),
        })
        .await
        .unwrap();
    for id in created.job_ids {
        assert_eq!(
            follow_to_the_end(&h, id).await,
            (b"hello\n".to_vec(), JobState::Succeeded)
        );
    }
    // Live output, followed while the job writes it.
    let ticks = h.push(guests::slow_writer(3, 200)).await;
    let job = h.submit(&Harness::spec(&ticks)).await;
    assert_eq!(
        follow_to_the_end(&h, job.id).await,
        (b"tick\ntick\ntick\n".to_vec(), JobState::Succeeded)
    );
    // Nothing was NOTIFYed: the first notification is the marker sent now.
    sqlx::query("SELECT pg_notify($1, 'marker')")
        .bind(CHANNEL_STATE)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let first = tokio::time::timeout(T, listener.recv())
        .await
        .expect("the marker arrives")
        .unwrap();
    assert_eq!(
        (first.channel(), first.payload()),
        (CHANNEL_STATE, "marker"),
        "something on a job's path sent a NOTIFY"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_committed_and_current() {
    let h = Harness::start().await;
    let served: serde_json::Value = h
        .http
        .get(format!("{}/openapi.json", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let committed: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert!(
        served == committed,
        "openapi/openapi.json is stale: regenerate it with `cargo run -p nekton -- openapi > openapi/openapi.json`"
    );
    assert_eq!(served["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    for p in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/logs",
        "/v1/batches",
        "/v1/batches/{id}",
        "/v1/batches/{id}/events",
        "/v1/modules",
        "/v1/webhooks",
        "/v1/webhooks/{id}/deliveries",
        "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(served["paths"].get(p).is_some(), "the document lacks {p}");
    }
    // The log stream documents its events; binary bodies are binary with their media type.
    let log_200 = &served["paths"]["/v1/jobs/{id}/logs"]["get"]["responses"]["200"]["content"];
    assert_eq!(
        log_200["text/event-stream"]["x-sse-data"]["$ref"],
        "#/components/schemas/LogStreamEvent"
    );
    assert_eq!(log_200["text/event-stream"]["schema"]["type"], "string");
    assert_eq!(
        served["paths"]["/v1/batches/{id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
            ["x-sse-data"]["$ref"],
        "#/components/schemas/BatchStreamEvent"
    );
    // anyOf, not oneOf: the SSE event name tells the payloads apart, and an `exit` payload
    // also fits the `state` schema (a oneOf would reject it).
    assert_eq!(
        served["components"]["schemas"]["LogStreamEvent"]["anyOf"]
            .as_array()
            .map(Vec::len),
        Some(6),
        "LogStreamEvent is any of the state, log, exit and the three test-suite payloads"
    );
    assert_eq!(
        served["paths"]["/v1/images/pull"]["post"]["responses"]["200"]["content"]["text/event-stream"]
            ["x-sse-data"]["$ref"],
        "#/components/schemas/PullStreamEvent"
    );
    let upload = &served["paths"]["/v1/modules"]["post"]["requestBody"]["content"];
    assert!(upload["application/wasm"].is_object(), "{upload}");
    // Every operation: a unique verb-noun camelCase operationId (what generated clients name
    // their functions), a tag, a description and a described response.
    let mut ids = std::collections::BTreeSet::new();
    for (path, ops) in served["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                id.len() > 4
                    && id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric())
                    && id.chars().any(|c| c.is_ascii_uppercase()),
                "{method} {path}: operationId {id:?} is not verb-noun camelCase"
            );
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            // Path parameters are exactly the path's `{names}`; everything else is a query or
            // header parameter.
            for prm in op["parameters"].as_array().into_iter().flatten() {
                let name = prm["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    prm["in"] == "path",
                    in_path,
                    "{method} {path}: parameter {name} is declared in {}",
                    prm["in"]
                );
            }
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path}: no tag"
            );
            assert!(
                op["description"]
                    .as_str()
                    .or(op["summary"].as_str())
                    .is_some_and(|d| !d.is_empty()),
                "{method} {path}: no description"
            );
            for (status, r) in op["responses"].as_object().unwrap() {
                assert!(
                    r["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status}: a response without a description"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let h = Harness::start().await;
    assert_eq!(
        h.http
            .get(format!("{}/healthz", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        h.http
            .get(format!("{}/readyz", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let hello = h.push(guests::hello()).await;
    h.wait_finished(h.submit(&Harness::spec(&hello)).await.id, T)
        .await;
    let text = h.metrics_text().await;
    assert!(text.contains("nekton_jobs_submitted_total 1"), "{text}");
    assert!(
        text.contains(r#"nekton_jobs_finished_total{state="succeeded",reason="exited"} 1"#),
        "{text}"
    );
}

/// A worker's slot frees only once its job's completion is stored: while the completion cannot
/// commit, the database still counts the job as running there, and the worker claims nothing
/// more — it never holds more running jobs than it has slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_frees_only_after_the_completion_is_stored() {
    let h = Harness::start_with(|o| o.worker_slots = Some(1)).await;
    let hello = h.push(guests::hello()).await;
    // Completions insert into job_attempts; this lock holds them back (claims never touch
    // that table, reads are not blocked).
    let mut blocker = h.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE job_attempts IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let first = h.submit(&Harness::spec(&hello)).await;
    let second = h.submit(&Harness::spec(&hello)).await;
    h.wait_running(first.id, Duration::from_secs(30)).await;
    // The first job's code ends within milliseconds; give a freed slot ample time to be
    // (wrongly) reused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'running'")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(running, 1, "one slot, so at most one job running");
    let waiting = h.client.get_job(second.id).await.unwrap();
    assert_eq!(waiting.state, JobState::Queued, "{waiting:?}");
    blocker.rollback().await.unwrap();
    for id in [first.id, second.id] {
        let job = h.wait_finished(id, Duration::from_secs(30)).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    }
}
