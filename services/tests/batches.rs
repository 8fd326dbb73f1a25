//! Batches as first-class objects, end to end on real PostgreSQL: listing with cursors and
//! filters per tenant, cancelling a whole batch (waiting and running jobs, audited), the
//! completion stream resumed with `Last-Event-ID`, the module listing and the version endpoint.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, guests};
use nekton::api::types::{BatchSpec, JobState};
use nekton::cli::BatchFilter;
use serde_json::json;
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

fn batch_of(digest: &str, n: usize, queue: Option<&str>, labels: &[(&str, &str)]) -> BatchSpec {
    let mut job = json!({ "module": digest });
    if let Some(q) = queue {
        job["queue"] = json!(q);
    }
    BatchSpec {
        defaults: Default::default(),
        jobs: vec![job; n],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_list_newest_first_by_tenant_with_cursor_and_filters() {
    let h = Harness::start().await;
    let a = h
        .tenant_token("a", &["jobs:read", "jobs:write", "modules:write"])
        .await;
    let b = h
        .tenant_token("b", &["jobs:read", "jobs:write", "modules:write"])
        .await;
    let (a_client, a_http) = h.clients_for(&a);
    let (b_client, _) = h.clients_for(&b);
    let a_digest = a_client.push_module(guests::hello()).await.unwrap().digest;
    let b_digest = b_client.push_module(guests::hello()).await.unwrap().digest;
    // Parked on a queue no worker serves: these batches stay unfinished.
    let mut a_ids = Vec::new();
    for (i, labels) in [
        &[("team", "x")][..],
        &[("team", "x"), ("run", "2")][..],
        &[("team", "y")][..],
    ]
    .into_iter()
    .enumerate()
    {
        let spec = batch_of(&a_digest, i + 1, Some("nowhere"), labels);
        a_ids.push(a_client.submit_batch(&spec).await.unwrap().id);
    }
    let b_id = b_client
        .submit_batch(&batch_of(&b_digest, 1, Some("nowhere"), &[]))
        .await
        .unwrap()
        .id;

    // Newest first, two per page, the cursor leads to the rest.
    let page = a_client
        .list_batches(&BatchFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<Uuid> = page.batches.iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![a_ids[2], a_ids[1]]);
    assert_eq!(page.batches[0].total, 3);
    assert_eq!(page.batches[0].counts["queued"], 3);
    assert!(!page.batches[0].finished);
    let cursor = page.next_cursor.expect("a cursor to the third batch");
    let rest = a_client
        .list_batches(&BatchFilter {
            limit: Some(2),
            cursor: Some(cursor.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rest.batches.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![a_ids[0]]
    );
    assert_eq!(rest.next_cursor, None);
    // Each item is what GET /v1/batches/{id} says.
    let one = a_client.get_batch(a_ids[0]).await.unwrap();
    assert_eq!(
        serde_json::to_value(&one).unwrap(),
        serde_json::to_value(&rest.batches[0]).unwrap()
    );

    // Labels: all must match.
    let by_label = |labels: &[(&str, &str)]| BatchFilter {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let x = a_client
        .list_all_batches(&by_label(&[("team", "x")]))
        .await
        .unwrap();
    assert_eq!(
        x.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![a_ids[1], a_ids[0]]
    );
    let x2 = a_client
        .list_all_batches(&by_label(&[("team", "x"), ("run", "2")]))
        .await
        .unwrap();
    assert_eq!(x2.iter().map(|b| b.id).collect::<Vec<_>>(), vec![a_ids[1]]);

    // done: none of a's has finished until one is cancelled.
    let done = |d: bool| BatchFilter {
        done: Some(d),
        ..Default::default()
    };
    assert!(
        a_client
            .list_all_batches(&done(true))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        a_client.list_all_batches(&done(false)).await.unwrap().len(),
        3
    );
    a_client.cancel_batch(a_ids[0]).await.unwrap();
    let finished = a_client.list_all_batches(&done(true)).await.unwrap();
    assert_eq!(
        finished.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![a_ids[0]]
    );
    assert!(finished[0].finished);
    assert_eq!(finished[0].counts["cancelled"], 1);

    // b sees only its own batch, whatever cursor it sends (a's newest id included).
    let b_all = b_client
        .list_all_batches(&BatchFilter::default())
        .await
        .unwrap();
    assert_eq!(b_all.iter().map(|b| b.id).collect::<Vec<_>>(), vec![b_id]);
    let with_a_cursor = b_client
        .list_batches(&BatchFilter {
            cursor: Some(cursor),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(with_a_cursor.batches.iter().all(|x| x.id == b_id));
    // b_id is newer than a's batches: a cursor after a's newest shows b nothing of a's either.
    let after_newest = b_client
        .list_batches(&BatchFilter {
            cursor: Some(Uuid::max().to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after_newest
            .batches
            .iter()
            .map(|b| b.id)
            .collect::<Vec<_>>(),
        vec![b_id]
    );

    // Bad queries are 400s naming the parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("cursor=nope", "cursor"),
        ("label=novalue", "label"),
        ("done=maybe", ""),
        ("colour=red", ""),
        ("limit=1&limit=2", "limit"),
    ] {
        let r = a_http
            .get(format!("{}/v1/batches?{query}", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{query}: {body}");
        if !field.is_empty() {
            assert_eq!(body["error"]["field"], field, "{query}: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_batch_ends_every_waiting_and_running_job_and_is_audited() {
    // Two slots: two of the five jobs run, three wait.
    let h = Harness::start_with(|o| o.worker_slots = Some(2)).await;
    let a = h
        .tenant_token("a", &["jobs:read", "jobs:write", "modules:write"])
        .await;
    let b = h.tenant_token("b", &["jobs:read", "jobs:write"]).await;
    let (a_client, _) = h.clients_for(&a);
    let (b_client, b_http) = h.clients_for(&b);
    let sleeper = a_client
        .push_module(guests::sleep_then_print(120_000))
        .await
        .unwrap()
        .digest;
    let created = a_client
        .submit_batch(&batch_of(&sleeper, 5, None, &[]))
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let batch = a_client.get_batch(created.id).await.unwrap();
        if batch.counts["running"] == 2 {
            assert_eq!(batch.counts["queued"], 3, "{batch:?}");
            break;
        }
        assert!(start.elapsed() < T, "two jobs never ran: {batch:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another tenant cannot cancel it, nor learn that it exists.
    let r = b_http
        .post(format!("{}/v1/batches/{}/cancel", h.base, created.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(b_client.cancel_batch(created.id).await.is_err());

    let c = a_client.cancel_batch(created.id).await.unwrap();
    assert_eq!((c.cancelled, c.cancel_requested), (3, 2), "{c:?}");
    // The batch is read after the cancel committed: a worker quick to act on the cancel's NOTIFY
    // may have recorded a running job `cancelled` by then.
    let counts = &c.batch.counts;
    assert!(
        counts["cancelled"] >= 3 && counts["cancelled"] + counts["running"] == 5,
        "{counts:?}"
    );
    for id in &created.job_ids {
        let job = common::wait_finished(&a_client, *id, T).await;
        assert_eq!(job.state, JobState::Cancelled, "job {id}: {job:?}");
        assert_eq!(job.outcome.expect("an outcome").reason, "cancelled");
    }
    let batch = a_client.get_batch(created.id).await.unwrap();
    assert!(batch.finished);
    assert_eq!(batch.counts["cancelled"], 5);

    // One audit entry, by a's token, naming what it did.
    let audit: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT tenant_id, detail FROM audit_log WHERE action = 'batch.cancel' AND target = $1",
    )
    .bind(created.id.to_string())
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].1["cancelled"], 3);
    assert_eq!(audit[0].1["cancel_requested"], 2);

    // Again: nothing left to cancel, nothing audited.
    let again = a_client.cancel_batch(created.id).await.unwrap();
    assert_eq!((again.cancelled, again.cancel_requested), (0, 0));
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'batch.cancel' AND target = $1",
    )
    .bind(created.id.to_string())
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(n, 1);
    // The worker still serves.
    let hello = h.push(guests::hello()).await;
    let job = h.submit(&Harness::spec(&hello)).await;
    assert_eq!(h.wait_finished(job.id, T).await.state, JobState::Succeeded);
}

/// `(event, id, data)` of each event in an SSE body, and whether it set `retry:`.
fn sse_events(body: &str) -> (Vec<(String, String, String)>, bool) {
    let mut events = Vec::new();
    let mut retry = false;
    for block in body.split("\n\n") {
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data = v.trim().to_string();
            } else if line.starts_with("retry:") {
                retry = true;
            }
        }
        if !event.is_empty() {
            events.push((event, id, data));
        }
    }
    (events, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_events_resume_exactly_after_last_event_id() {
    let h = Harness::start().await;
    let digest = h.push(guests::hello()).await;
    let created = h
        .client
        .submit_batch(&batch_of(&digest, 4, None, &[]))
        .await
        .unwrap();
    let url = format!("{}/v1/batches/{}/events", h.base, created.id);
    let get = |last: Option<&str>| {
        let mut req = h.http.get(&url).header("accept", "text/event-stream");
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        req.send()
    };
    // The whole stream: each job once with its position 1..4, then `done`.
    let r = get(None).await.unwrap();
    assert_eq!(r.status(), 200);
    let (events, retry) = sse_events(&r.text().await.unwrap());
    assert!(retry, "the stream sets retry:");
    let ids: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "done"], "{events:?}");
    let mut jobs: Vec<Uuid> = events[..4]
        .iter()
        .map(|e| {
            assert_eq!(e.0, "job");
            serde_json::from_str::<serde_json::Value>(&e.2).unwrap()["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let order = jobs.clone();
    jobs.sort();
    let mut expected = created.job_ids.clone();
    expected.sort();
    assert_eq!(jobs, expected, "every job exactly once");
    assert_eq!(events[4].0, "done");

    // Resuming after position 2: exactly the jobs at 3 and 4, then done.
    let r = get(Some("2")).await.unwrap();
    assert_eq!(r.status(), 200);
    let (events, _) = sse_events(&r.text().await.unwrap());
    let got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let id = if e.0 == "job" {
                serde_json::from_str::<serde_json::Value>(&e.2).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            } else {
                e.0.clone()
            };
            (e.1.clone(), id)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("3".to_string(), order[2].to_string()),
            ("4".to_string(), order[3].to_string()),
            ("done".to_string(), "done".to_string()),
        ]
    );
    // After the last job: only done. After done: 204, nothing more will come.
    let (events, _) = sse_events(&get(Some("4")).await.unwrap().text().await.unwrap());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "done");
    let r = get(Some("done")).await.unwrap();
    assert_eq!(r.status(), 204);
    // Not an id this stream sends: 400 naming the header.
    let r = get(Some("x.y")).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "Last-Event-ID");

    // A live stream: a job parked on a queue no worker serves keeps the batch open; cancelling
    // the batch ends it, and the typed client (which resumes by itself) sees job then done.
    let parked = h
        .client
        .submit_batch(&batch_of(&digest, 2, Some("nowhere"), &[]))
        .await
        .unwrap();
    let mut events = Box::pin(h.client.batch_events(parked.id));
    h.client.cancel_batch(parked.id).await.unwrap();
    let mut seen = Vec::new();
    use futures::StreamExt as _;
    while let Some(ev) = tokio::time::timeout(T, events.next())
        .await
        .expect("events")
    {
        match ev.unwrap() {
            nekton::cli::BatchStreamEvent::Job(job) => seen.push(job.id),
            nekton::cli::BatchStreamEvent::Done(batch) => {
                assert_eq!(batch.counts["cancelled"], 2);
                break;
            }
        }
    }
    seen.sort();
    let mut expected = parked.job_ids.clone();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_list_per_tenant_and_the_version_is_served() {
    let h = Harness::start().await;
    let a = h.tenant_token("a", &["jobs:read", "modules:write"]).await;
    let b = h.tenant_token("b", &["jobs:read", "modules:write"]).await;
    let (a_client, a_http) = h.clients_for(&a);
    let (b_client, _) = h.clients_for(&b);
    let mut pushed = Vec::new();
    for wasm in [guests::hello(), guests::exit_with(3), guests::spin()] {
        let m = a_client.push_module(wasm.clone()).await.unwrap();
        assert_eq!(m.size_bytes, wasm.len() as i64);
        pushed.push(m.digest);
    }
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = a_client
            .list_modules(cursor.as_deref(), Some(2))
            .await
            .unwrap();
        listed.extend(page.modules.iter().map(|m| m.digest.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    pushed.reverse();
    assert_eq!(listed, pushed, "newest first, every module once");
    assert!(
        b_client
            .list_modules(None, None)
            .await
            .unwrap()
            .modules
            .is_empty()
    );
    // a's cursor tells b nothing either.
    let first = a_client.list_modules(None, Some(1)).await.unwrap();
    let page = b_client
        .list_modules(first.next_cursor.as_deref(), None)
        .await
        .unwrap();
    assert!(page.modules.is_empty());
    let r = a_http
        .get(format!("{}/v1/modules?cursor=zzz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Any valid token may ask for the version; none gets a 401.
    let v = b_client.version().await.unwrap();
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.api_version, "v1");
    assert_eq!(v.migration, Some(v.migration_latest));
    assert!(v.migration_latest >= 7);
    let r = common::http_client(None)
        .get(format!("{}/v1/version", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
