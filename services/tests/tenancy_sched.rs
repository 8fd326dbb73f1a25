//! Fair scheduling across tenants through the API: a lone job of one tenant is not held behind
//! another tenant's backlog, `max_running` holds while a worker has more free slots than that,
//! and `max_running: 0` pauses a tenant until it is lifted. (The claim's rules in detail — weights,
//! concurrent claimers, order within a tenant — are tested at the store level in `queue.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{Harness, guests, wait_finished};
use nekton::api::types::{BatchSpec, JobState};
use nekton::cli::Client;
use uuid::Uuid;

const SCOPES: &[&str] = &["jobs:read", "jobs:write", "modules:write"];

/// Creates tenant `id` with `settings` (admin API), then a token of it; returns its client.
async fn tenant(h: &Harness, id: &str, settings: serde_json::Value) -> Client {
    let mut body = settings;
    body["id"] = serde_json::json!(id);
    let r = h
        .http
        .post(format!("{}/v1/tenants", h.base))
        .json(&body)
        .send()
        .await
        .expect("create tenant");
    assert_eq!(r.status(), 201, "creating tenant {id}");
    let token = h.tenant_token(id, SCOPES).await;
    h.clients_for(&token).0
}

async fn set_tenant(h: &Harness, id: &str, settings: serde_json::Value) {
    let r = h
        .http
        .patch(format!("{}/v1/tenants/{id}", h.base))
        .json(&settings)
        .send()
        .await
        .expect("patch tenant");
    assert_eq!(r.status(), 200, "changing tenant {id}");
}

/// `n` jobs of `digest` in one batch; returns their ids.
async fn batch(client: &Client, digest: &str, n: usize) -> Vec<Uuid> {
    let mut defaults = serde_json::Map::new();
    defaults.insert("module".into(), serde_json::json!(digest));
    client
        .submit_batch(&BatchSpec {
            defaults,
            jobs: vec![serde_json::json!({}); n],
            labels: Default::default(),
        })
        .await
        .expect("batch submission")
        .job_ids
}

/// Jobs of `tenant` per state.
async fn states(h: &Harness, tenant: &str) -> Vec<(JobState, i64)> {
    sqlx::query_as("SELECT state, count(*) FROM jobs WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1")
        .bind(tenant)
        .fetch_all(&h.db.pool)
        .await
        .expect("count jobs")
}

async fn wait_all_finished(h: &Harness, tenant: &str, n: i64, timeout: Duration) {
    let start = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND finished_at IS NOT NULL",
        )
        .bind(tenant)
        .fetch_one(&h.db.pool)
        .await
        .expect("count finished jobs");
        if done == n {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{done} of {n} jobs of {tenant} finished after {timeout:?}: {:?}",
            states(h, tenant).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lone_job_is_not_held_behind_another_tenants_backlog() {
    let h = Harness::start().await;
    let a = tenant(&h, "a", serde_json::json!({})).await;
    let b = tenant(&h, "b", serde_json::json!({})).await;
    let a_hello = a.push_module(guests::hello()).await.unwrap().digest;
    let b_hello = b.push_module(guests::hello()).await.unwrap().digest;

    let backlog = 2000;
    batch(&a, &a_hello, backlog).await;
    let job = b.submit(&Harness::spec(&b_hello), None).await.unwrap();
    let done = wait_finished(&b, job.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Succeeded);
    let b_started = done.started_at.expect("B's job started");
    let a_after: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE tenant_id = 'a' AND (started_at IS NULL OR started_at > $1)",
    )
    .bind(b_started)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    eprintln!(
        "B's job: submit → finished {} ms; {a_after} of A's {backlog} jobs started after it",
        (done.finished_at.unwrap() - done.created_at).num_milliseconds()
    );
    // Claiming in submission order, all of A's jobs would start first; the fair claim gives B
    // the next free slot, while nearly all of A's backlog still waits.
    assert!(
        a_after >= backlog as i64 / 2,
        "only {a_after} of A's {backlog} jobs started after B's lone job"
    );
    wait_all_finished(&h, "a", backlog as i64, Duration::from_secs(300)).await;
    assert_eq!(
        states(&h, "a").await,
        vec![(JobState::Succeeded, backlog as i64)]
    );
}

#[tokio::test]
async fn max_running_2_never_has_more_than_2_running_on_a_worker_with_8_slots() {
    let h = Harness::start().await;
    let capped = tenant(&h, "capped", serde_json::json!({ "max_running": 2 })).await;
    let sleeper = capped
        .push_module(guests::sleep_then_print(50))
        .await
        .unwrap()
        .digest;
    let n = 50;

    // Sample the running count every 10 ms for the whole run.
    let pool = h.db.pool.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut max, mut samples) = (0i64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.is_cancelled() {
                tick.tick().await;
                let running: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM jobs WHERE tenant_id = 'capped' AND state = 'running'",
                )
                .fetch_one(&pool)
                .await
                .expect("sample the running count");
                max = max.max(running);
                samples += 1;
            }
            (max, samples)
        })
    };
    batch(&capped, &sleeper, n).await;
    wait_all_finished(&h, "capped", n as i64, Duration::from_secs(120)).await;
    stop.cancel();
    let (max, samples) = sampler.await.unwrap();
    eprintln!("{samples} samples, at most {max} running");
    assert!(
        max <= 2,
        "{max} jobs of a tenant with max_running 2 ran at once"
    );
    assert_eq!(max, 2, "the tenant used both of its slots at some point");
    assert_eq!(
        states(&h, "capped").await,
        vec![(JobState::Succeeded, n as i64)]
    );
}

#[tokio::test]
async fn max_running_0_pauses_a_tenant_until_it_is_lifted() {
    let h = Harness::start().await;
    let paused = tenant(&h, "paused", serde_json::json!({ "max_running": 0 })).await;
    let other = tenant(&h, "other", serde_json::json!({})).await;
    let p_hello = paused.push_module(guests::hello()).await.unwrap().digest;
    let o_hello = other.push_module(guests::hello()).await.unwrap().digest;

    let held = paused.submit(&Harness::spec(&p_hello), None).await.unwrap();
    let ran = other.submit(&Harness::spec(&o_hello), None).await.unwrap();
    assert_eq!(
        wait_finished(&other, ran.id, Duration::from_secs(30))
            .await
            .state,
        JobState::Succeeded
    );
    assert_eq!(
        paused.get_job(held.id).await.unwrap().state,
        JobState::Queued,
        "a paused tenant's job waits while others run"
    );
    set_tenant(&h, "paused", serde_json::json!({ "max_running": null })).await;
    assert_eq!(
        wait_finished(&paused, held.id, Duration::from_secs(30))
            .await
            .state,
        JobState::Succeeded
    );
}
