//! The log endpoint: SSE as browsers use it (an `EventSource` reconnects whenever a stream ends
//! unless the server answers 204, and waits `retry:` ms before it does), and the selections a
//! reader makes of a stored log (`tail`, `since`, `timestamps`), plain and streamed, through the
//! HTTP API and through `nekton jobs logs`.

mod common;

use std::time::Duration;

use common::{Harness, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_stream_tells_eventsource_to_stop() {
    let h = Harness::start().await;
    let hello = h.push(guests::hello()).await;
    let job = h.submit(&Harness::spec(&hello)).await;
    h.wait_finished(job.id, Duration::from_secs(30)).await;
    let url = format!("{}/v1/jobs/{}/logs", h.base, job.id);

    // The first connection replays everything and ends with `exit`; it starts with `retry:`.
    let body = h
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("retry: 1000\n"), "{body}");
    let exit_id = body
        .split("\n\n")
        .find(|e| e.contains("event: exit"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("id: ")))
        .unwrap_or_else(|| panic!("no exit event with an id in {body}"))
        .to_string();
    assert!(exit_id.ends_with(".end"), "{exit_id}");

    // The reconnect an EventSource makes after that: 204, nothing more.
    let again = h
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("last-event-id", &exit_id)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 204);
    assert!(again.text().await.unwrap().is_empty());

    // Resuming from before the end still replays the rest (and is not 204).
    let resumed = h
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("last-event-id", "1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    assert!(resumed.text().await.unwrap().contains("event: exit"));
}

/// A malformed `Last-Event-ID` is a 400 naming the expected form, after the job's lookup: an
/// unknown job is a 404 whatever the header says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_last_event_id_is_refused_after_the_jobs_lookup() {
    let h = Harness::start().await;
    let hello = h.push(guests::hello()).await;
    let job = h.submit(&Harness::spec(&hello)).await;
    h.wait_finished(job.id, Duration::from_secs(30)).await;
    let get = |id: uuid::Uuid| {
        h.http
            .get(format!("{}/v1/jobs/{id}/logs", h.base))
            .header("accept", "text/event-stream")
            .header("last-event-id", "not-a-position")
            .send()
    };
    let refused = get(job.id).await.unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let body = refused.text().await.unwrap();
    assert!(body.contains("`ATTEMPT.SEQ` or `ATTEMPT.end`"), "{body}");
    let missing = get(uuid::Uuid::now_v7()).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

/// Lines `from..to` of the `numbered_lines` guest's output.
fn lines(from: u32, to: u32) -> String {
    let all = String::from_utf8(guests::numbered_lines_expected(to)).unwrap();
    all.lines()
        .skip(from as usize)
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_select_the_last_lines_a_time_on_and_stamp_each_line() {
    let h = Harness::start().await;
    let module = h.push(guests::numbered_lines(300)).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let job = h.submit(&Harness::spec(&module)).await;
    h.wait_finished(job.id, Duration::from_secs(30)).await;
    let url = format!("{}/v1/jobs/{}/logs", h.base, job.id);
    let get = |query: &'static str| {
        let req = h.http.get(format!("{url}{query}"));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };

    // tail: the last N lines, whatever chunks they were stored in.
    assert_eq!(get("?tail=5").await, (200, lines(295, 300)));
    assert_eq!(get("?tail=1").await, (200, lines(299, 300)));
    assert_eq!(get("?tail=0").await, (200, String::new()));
    assert_eq!(get("?tail=1000").await, (200, lines(0, 300)));
    assert_eq!(get("?tail=3&stream=stdout").await, (200, lines(297, 300)));
    assert_eq!(get("?tail=3&stream=stderr").await, (200, String::new()));

    // since: every chunk was stored after `before`, none after now + 1 h.
    let since_before = format!(
        "?since={}",
        before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let r = h
        .http
        .get(format!("{url}{since_before}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), lines(0, 300));
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = h
        .http
        .get(format!("{url}?since={later}&tail=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "");

    // timestamps: each line starts with the time its chunk was stored, then the line.
    let (status, stamped) = get("?timestamps=true&tail=4").await;
    assert_eq!(status, 200);
    let stamped: Vec<&str> = stamped.lines().collect();
    assert_eq!(stamped.len(), 4, "{stamped:?}");
    for (line, want) in stamped.iter().zip(lines(296, 300).lines()) {
        let (time, rest) = line.split_once(' ').unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(time)
            .unwrap_or_else(|e| panic!("{time:?} is not RFC 3339: {e}"));
        assert!(t > before && t < chrono::Utc::now(), "{t}");
        assert_eq!(rest, want);
    }

    // Bad input: a clear 400 naming the parameter.
    let (status, body) = get("?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("RFC 3339") && body.contains("since"),
        "{body}"
    );
    assert_eq!(get("?tail=-1").await.0, 400);
    let r = h
        .http
        .get(format!("{url}?timestamps=true"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "timestamps are the plain log's");

    // The stream: `tail` picks where it starts; every `log` event carries its time.
    let body = h
        .http
        .get(format!("{url}?tail=3"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut text = String::new();
    for event in body.split("\n\n").filter(|e| e.contains("event: log")) {
        let data = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        text.push_str(v["text"].as_str().unwrap());
        let at = v["at"].as_str().unwrap_or_else(|| panic!("no `at` in {v}"));
        chrono::DateTime::parse_from_rfc3339(at).unwrap();
    }
    assert_eq!(text, lines(297, 300));
    assert!(body.contains("event: exit"), "{body}");

    // Output written in separate flushes (one chunk each): the tail spans chunks, and each line
    // has its own chunk's time.
    let ticks = h.push(guests::slow_writer(4, 250)).await;
    let ticker = h.submit(&Harness::spec(&ticks)).await;
    h.wait_finished(ticker.id, Duration::from_secs(30)).await;
    let r = h
        .http
        .get(format!(
            "{}/v1/jobs/{}/logs?tail=3&timestamps=true",
            h.base, ticker.id
        ))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let stamped: Vec<(&str, &str)> = text.lines().map(|l| l.split_once(' ').unwrap()).collect();
    assert_eq!(
        stamped.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        ["tick"; 3],
        "{text}"
    );
    let times: std::collections::BTreeSet<&str> = stamped.iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), 3, "three flushes, three times: {text}");

    // The CLI: the same selections, plain and followed.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nekton"))
            .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
            .args(["jobs", "logs", "--server", &h.base])
            .args(args)
            .arg(job.id.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["--tail", "2"]), lines(298, 300));
    assert_eq!(cli(&["-f", "--tail", "2"]), lines(298, 300));
    assert_eq!(cli(&["--since", "10m", "-n", "1"]), lines(299, 300));
    for out in [cli(&["-t", "-n", "2"]), cli(&["-f", "-t", "-n", "2"])] {
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(got.len(), 2, "{out}");
        for (line, want) in got.iter().zip(lines(298, 300).lines()) {
            let (time, rest) = line.split_once(' ').unwrap();
            chrono::DateTime::parse_from_rfc3339(time).unwrap();
            assert_eq!(rest, want);
        }
    }
}

/// Past `max_streams` open event streams, a new one is refused with 503 and `Retry-After`
/// (nothing spawned); once a stream ends, its place is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_shed_with_503_and_retry_after() {
    let h = Harness::start_with(|o| o.policy.max_streams = 2).await;
    let spin = h.push(guests::spin()).await;
    let job = h.submit(&Harness::spec(&spin)).await;
    let url = format!("{}/v1/jobs/{}/logs", h.base, job.id);
    let open = || async {
        h.http
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap()
    };
    // Two streams on a job that keeps running: both open.
    let first = open().await;
    let second = open().await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await;
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-streams"),
        "{body}"
    );
    // The plain log is not a stream: still served.
    let plain = h.http.get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    // A client goes away: its stream's task ends (on its next send or keep-alive) and frees its
    // place.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let again = open().await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 503);
        assert!(
            std::time::Instant::now() < deadline,
            "a closed stream's place was not freed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = h.metrics_text().await;
    assert!(
        refused
            .lines()
            .any(|l| l.starts_with("nekton_sse_refused_total ") && !l.ends_with(" 0")),
        "{refused}"
    );
    h.client.cancel(job.id).await.unwrap();
}

/// The next event of a followed job's stream (within 60 s; the stream goes on until `exit`).
async fn next_event<S>(events: &mut std::pin::Pin<Box<S>>) -> nekton::cli::LogStreamEvent
where
    S: futures::Stream<Item = anyhow::Result<nekton::cli::LogStreamEvent>>,
{
    use futures::StreamExt as _;
    tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("events arrive")
        .expect("the stream goes on until exit")
        .expect("a well-formed event")
}

/// `nekton_sse_job_reads_total` of `h`'s server.
async fn job_reads(h: &Harness) -> u64 {
    let text = h.metrics_text().await;
    common::counter(&text, "nekton_sse_job_reads_total")
        .unwrap_or_else(|| panic!("no nekton_sse_job_reads_total in {text}"))
}

/// A live follower is woken by every flush of a job's output, and reads only the new chunks
/// then: the job itself is read at most once per second of quiet (the stream's recheck for lost
/// notifications) — not at every wake-up, and not at the end either (the flush that stored the
/// end read the record back for the stream: see the next test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_follower_reads_its_job_once_at_the_end_not_at_every_wake_up() {
    use nekton::cli::LogStreamEvent;

    let h = Harness::start().await;
    // Bursts 150 ms apart: each one its own flush (the writer's tick is 100 ms), so its own
    // notification and wake-up.
    let bursts = 20;
    let writer = h.push(guests::slow_writer(bursts, 150)).await;
    let before = job_reads(&h).await;
    let started = std::time::Instant::now();
    let job = h.submit(&Harness::spec(&writer)).await;
    let mut events = Box::pin(h.client.follow_logs(job.id, None));
    let mut logs = 0;
    let exit = loop {
        match next_event(&mut events).await {
            LogStreamEvent::Log { .. } => logs += 1,
            LogStreamEvent::Exit { event, .. } => break event,
            LogStreamEvent::State { .. } | LogStreamEvent::Suite { .. } => {}
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(exit.state, nekton::api::types::JobState::Succeeded);
    assert!(exit.usage.is_some(), "the exit event carries the bill");
    assert!(
        logs >= bursts / 2,
        "the output came live, in many events ({logs})"
    );
    let reads = job_reads(&h).await - before;
    // One recheck per second at most (a slow start on a busy machine).
    let allowed = elapsed.as_secs() + 1;
    assert!(
        reads <= allowed,
        "{reads} job reads for {logs} log events in {elapsed:?} (at most {allowed})"
    );
}

/// A stream following a job to its end in the process whose worker finishes it does not read the
/// job again for its `exit` event: the flush that stored the end read the final record back in
/// its own statement and handed it over (migration 0022). The event carries the record as
/// stored. (Before, the stream read the job beside its last chunks: one read per follower.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_ends_with_the_record_the_flush_read_back_not_a_read_of_its_own() {
    use nekton::cli::LogStreamEvent;

    let h = Harness::start().await;
    // Three bursts 150 ms apart: the stream is live when the job ends, and woken well within
    // the stream's one-second recheck all along.
    let writer = h.push(guests::slow_writer(3, 150)).await;
    // The module compiled once, so the measured job starts at once.
    let warm = h.submit(&Harness::spec(&writer)).await;
    h.wait_finished(warm.id, Duration::from_secs(60)).await;
    for round in 0..3 {
        let before = job_reads(&h).await;
        let job = h.submit(&Harness::spec(&writer)).await;
        let mut events = Box::pin(h.client.follow_logs(job.id, None));
        let mut last = std::time::Instant::now();
        // Quiet spells long enough for the stream's recheck (a stalled machine) each allow a read.
        let mut rechecks = 0;
        let mut ticks = 0;
        let exit = loop {
            let ev = next_event(&mut events).await;
            if last.elapsed() >= Duration::from_millis(900) {
                rechecks += 1;
            }
            last = std::time::Instant::now();
            match ev {
                LogStreamEvent::Log { bytes, .. } => {
                    ticks += String::from_utf8_lossy(&bytes).matches("tick").count();
                }
                LogStreamEvent::Exit { event, .. } => break event,
                LogStreamEvent::State { .. } | LogStreamEvent::Suite { .. } => {}
            }
        };
        assert_eq!(ticks, 3, "round {round}: all the output came before `exit`");
        let reads = job_reads(&h).await - before;
        assert!(
            reads <= rechecks,
            "round {round}: {reads} job reads by a stream live at the job's end ({rechecks} quiet \
             spells of a second): the end's record is the flush's"
        );
        let stored = h.client.get_job(job.id).await.unwrap();
        assert_eq!(exit.state, nekton::api::types::JobState::Succeeded);
        assert_eq!(
            (exit.state, exit.attempt, &exit.outcome, &exit.usage),
            (stored.state, stored.attempt, &stored.outcome, &stored.usage),
            "round {round}: the exit event is the record as stored"
        );
        assert!(exit.usage.is_some(), "the exit event carries the bill");
    }
}
