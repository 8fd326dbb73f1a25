//! SSE as browsers use it: an `EventSource` reconnects whenever a stream ends unless the server
//! answers 204, and waits `retry:` ms before it does.

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
