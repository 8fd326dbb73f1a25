//! Webhooks end to end: a receiver on 127.0.0.1 in this test process gets signed events, retried
//! until it answers 2xx; the address policy refuses loopback without `--webhook-allow`; another
//! tenant sees none of it; every path into a final state writes exactly one event in the same
//! transaction; and a worker process killed before or during a delivery loses nothing.
//!
//! Network: every request goes to 127.0.0.1 (the receiver) — never to another address. The
//! policy's refusals of private, link-local and metadata ranges are unit-tested on the policy
//! (`services/src/webhooks/policy.rs`), without connecting anywhere.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Harness, guests};
use hmac::{Hmac, Mac};
use nekton::api::types::{BatchSpec, DeliveryPage, DeliveryState, JobState};
use nekton::store::queue::{self, Completion};
use nekton::webhooks::WebhookOptions;
use nekton::webhooks::schedule::RetrySchedule;
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_nekton");

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Never answer (the sender times out, or dies).
    Hold,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
}

/// A webhook receiver on 127.0.0.1: answers from its script, then 200.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: Vec<Reply>) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let app = axum::Router::new().fallback({
            let got = got.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let got = got.clone();
                let script = script.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    got.lock().unwrap().push(Received {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        content_type: h("content-type"),
                        body: body.to_vec(),
                    });
                    let reply = script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or(Reply::Status(200));
                    match reply {
                        Reply::Status(s) => StatusCode::from_u16(s).unwrap(),
                        Reply::Hold => std::future::pending().await,
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/nekton", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived (fails the test after `timeout`).
    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < timeout,
                "the receiver got {} requests, not {n}, within {timeout:?}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Verifies a request's signature as a receiver would (Standard Webhooks), with this test's own
/// HMAC code: `v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`, key = base64 after
/// `whsec_`; the header may carry several space-separated signatures.
fn signature_verifies(secret: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("secret prefix"))
        .expect("secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

/// The timestamp is Unix seconds within five minutes of now (what receivers check).
fn timestamp_is_fresh(r: &Received) -> bool {
    let ts: i64 = r
        .timestamp
        .parse()
        .expect("webhook-timestamp is an integer");
    (chrono::Utc::now().timestamp() - ts).abs() < 300
}

fn quick(allow: &[&str]) -> WebhookOptions {
    WebhookOptions {
        allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        retry: RetrySchedule::quick(Duration::from_millis(100)),
        poll: Duration::from_millis(50),
        ..Default::default()
    }
}

const WRITER: &[&str] = &["jobs:read", "jobs:write", "modules:write"];

async fn create_webhook(
    http: &reqwest::Client,
    base: &str,
    url: &str,
    events: Option<&[&str]>,
) -> (Uuid, String) {
    let mut body = json!({ "url": url });
    if let Some(e) = events {
        body["events"] = json!(e);
    }
    let r = http
        .post(format!("{base}/v1/webhooks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "creating a webhook");
    let v: Value = r.json().await.unwrap();
    let secret = v["secret"]
        .as_str()
        .expect("the secret is in the answer")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (v["id"].as_str().unwrap().parse().unwrap(), secret)
}

async fn deliveries(http: &reqwest::Client, base: &str, hook: Uuid) -> DeliveryPage {
    let r = http
        .get(format!("{base}/v1/webhooks/{hook}/deliveries"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Polls the delivery log until `ok` holds (fails the test after `timeout`).
async fn wait_log(
    http: &reqwest::Client,
    base: &str,
    hook: Uuid,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&DeliveryPage) -> bool,
) -> DeliveryPage {
    let start = Instant::now();
    loop {
        let page = deliveries(http, base, hook).await;
        if ok(&page) {
            return page;
        }
        assert!(
            start.elapsed() < timeout,
            "{what} did not happen within {timeout:?}; the log: {page:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_twice_gets_the_event_three_times_with_one_id_and_valid_signatures()
 {
    let h = Harness::start_with(|o| o.webhooks = quick(&["127.0.0.1/32"])).await;
    let token = h.tenant_token("acme", WRITER).await;
    let (client, http) = h.clients_for(&token);
    let rx = Receiver::start(vec![Reply::Status(500), Reply::Status(500)]).await;
    let (hook, secret) = create_webhook(&http, &h.base, &rx.url(), Some(&["job.completed"])).await;

    let digest = client
        .push_module(guests::exit_with(3))
        .await
        .unwrap()
        .digest;
    let mut spec = Harness::spec(&digest);
    spec.labels = [("suite".to_string(), "webhooks".to_string())].into();
    let job = client.submit(&spec, None).await.unwrap();

    let got = rx.wait_for(3, Duration::from_secs(30)).await;
    let first = &got[0];
    assert!(!first.id.is_empty());
    for r in &got[..3] {
        assert_eq!(r.id, first.id, "every attempt carries the same webhook-id");
        assert_eq!(r.body, first.body, "every attempt sends the same body");
        assert_eq!(r.content_type, "application/json");
        assert!(
            signature_verifies(&secret, r),
            "the signature of {r:?} verifies with the endpoint's secret"
        );
        assert!(timestamp_is_fresh(r), "{r:?}");
        let mut tampered = r.clone();
        tampered.body.push(b' ');
        assert!(
            !signature_verifies(&secret, &tampered),
            "a changed body fails"
        );
    }
    let body: Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(body["type"], "job.completed");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");
    let data = &body["data"];
    assert_eq!(data["id"], job.id.to_string());
    assert_eq!(data["state"], "failed");
    assert_eq!(data["outcome"]["reason"], "exited");
    assert_eq!(data["outcome"]["exit_code"], 3);
    assert_eq!(data["labels"]["suite"], "webhooks");
    assert_eq!(data["program"], digest);

    // The log: three attempts (500, 500, 200), delivered, under the id the receiver saw.
    let page = wait_log(
        &http,
        &h.base,
        hook,
        Duration::from_secs(10),
        "delivered",
        |p| {
            p.deliveries
                .first()
                .is_some_and(|d| d.state == DeliveryState::Delivered)
        },
    )
    .await;
    assert_eq!(page.deliveries.len(), 1, "{page:#?}");
    let d = &page.deliveries[0];
    assert_eq!(d.id.to_string(), first.id);
    assert_eq!(d.payload, body);
    let statuses: Vec<Option<i32>> = d.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)], "{d:#?}");
    assert!(
        d.attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "{d:#?}"
    );
    assert!(d.attempts[2].error.is_none());
    assert_eq!(rx.received().len(), 3, "nothing after the 2xx");

    // Manual redelivery: once more, same id, same body, signed again.
    let r = http
        .post(format!(
            "{}/v1/webhooks/{hook}/deliveries/{}/redeliver",
            h.base, d.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = rx.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(got[3].id, first.id);
    assert_eq!(got[3].body, first.body);
    assert!(signature_verifies(&secret, &got[3]));
    wait_log(
        &http,
        &h.base,
        hook,
        Duration::from_secs(10),
        "redelivered",
        |p| {
            p.deliveries[0].attempts.len() == 4 && p.deliveries[0].state == DeliveryState::Delivered
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_completed_arrives_once_when_the_last_job_ends() {
    let h = Harness::start_with(|o| o.webhooks = quick(&["127.0.0.1/32"])).await;
    let token = h.tenant_token("batcher", WRITER).await;
    let (client, http) = h.clients_for(&token);
    let rx = Receiver::start(Vec::new()).await;
    let (hook, secret) =
        create_webhook(&http, &h.base, &rx.url(), Some(&["batch.completed"])).await;
    let hello = client.push_module(guests::hello()).await.unwrap().digest;
    let exit3 = client
        .push_module(guests::exit_with(3))
        .await
        .unwrap()
        .digest;
    let mut jobs: Vec<Value> = (0..11).map(|_| json!({ "module": hello })).collect();
    jobs.push(json!({ "module": exit3 }));
    let spec = BatchSpec {
        defaults: serde_json::Map::new(),
        jobs,
        labels: [("run".to_string(), "b".to_string())].into(),
    };
    let created = client.submit_batch(&spec).await.unwrap();

    let got = rx.wait_for(1, Duration::from_secs(60)).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "batch.completed", "{body}");
    assert_eq!(body["data"]["id"], created.id.to_string());
    assert_eq!(body["data"]["total"], 12);
    assert_eq!(body["data"]["counts"]["succeeded"], 11, "{body}");
    assert_eq!(body["data"]["counts"]["failed"], 1, "{body}");
    assert_eq!(body["data"]["labels"]["run"], "b");
    assert!(signature_verifies(&secret, &got[0]));
    let batch = client.get_batch(created.id).await.unwrap();
    assert!(
        batch.finished,
        "the event comes after the last job: {batch:?}"
    );

    wait_log(
        &http,
        &h.base,
        hook,
        Duration::from_secs(10),
        "delivered",
        |p| {
            p.deliveries
                .first()
                .is_some_and(|d| d.state == DeliveryState::Delivered)
        },
    )
    .await;
    let events: Vec<(String,)> =
        sqlx::query_as("SELECT event FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(hook)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(
        events,
        [("batch.completed".to_string(),)],
        "one batch event, and no job events (the endpoint did not ask for them)"
    );
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_without_webhook_allow_and_the_log_says_why() {
    let h = Harness::start_with(|o| o.webhooks = quick(&[])).await;
    let token = h.tenant_token("refused", WRITER).await;
    let (client, http) = h.clients_for(&token);
    let rx = Receiver::start(Vec::new()).await;
    let port = rx.addr.port();
    let (literal, _) =
        create_webhook(&http, &h.base, &format!("http://127.0.0.1:{port}/h"), None).await;
    // A name that resolves to 127.0.0.1 (/etc/hosts): refused after resolution.
    let (named, _) =
        create_webhook(&http, &h.base, &format!("http://localhost:{port}/h"), None).await;
    let digest = client.push_module(guests::hello()).await.unwrap().digest;
    let job = client.submit(&Harness::spec(&digest), None).await.unwrap();
    let done = common::wait_finished(&client, job.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Succeeded);

    for (hook, expect) in [
        (literal, "refused: 127.0.0.1 is loopback"),
        (named, "refused: localhost resolves only to"),
    ] {
        let page = wait_log(
            &http,
            &h.base,
            hook,
            Duration::from_secs(20),
            "a refused attempt",
            |p| {
                p.deliveries
                    .first()
                    .is_some_and(|d| d.attempts.iter().any(|a| a.error.is_some()))
            },
        )
        .await;
        let d = &page.deliveries[0];
        let a = &d.attempts[0];
        let error = a.error.as_deref().unwrap();
        assert!(error.contains(expect), "{error}");
        assert!(error.contains("loopback"), "{error}");
        assert!(
            error.contains("--webhook-allow 127.0.0.1/32"),
            "the log names the fix: {error}"
        );
        assert_eq!(a.status, None, "nothing answered: nothing was sent");
        assert_ne!(d.state, DeliveryState::Delivered);
    }
    assert!(
        rx.received().is_empty(),
        "the receiver on 127.0.0.1 got nothing: {:?}",
        rx.received()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_webhook_and_deliveries_are_404_and_requests_are_checked() {
    let h = Harness::start_with(|o| o.webhooks = quick(&["127.0.0.1/32"])).await;
    let owner = h.tenant_token("owner", WRITER).await;
    let (owner_client, owner_http) = h.clients_for(&owner);
    let other = h.tenant_token("other", WRITER).await;
    let (other_client, other_http) = h.clients_for(&other);
    let rx = Receiver::start(Vec::new()).await;
    let (hook, _) = create_webhook(&owner_http, &h.base, &rx.url(), None).await;
    let digest = owner_client
        .push_module(guests::hello())
        .await
        .unwrap()
        .digest;
    owner_client
        .submit(&Harness::spec(&digest), None)
        .await
        .unwrap();
    let page = wait_log(
        &owner_http,
        &h.base,
        hook,
        Duration::from_secs(30),
        "delivered",
        |p| {
            p.deliveries
                .first()
                .is_some_and(|d| d.state == DeliveryState::Delivered)
        },
    )
    .await;
    let delivery = page.deliveries[0].id;

    let base = &h.base;
    for (method, path) in [
        ("GET", format!("{base}/v1/webhooks/{hook}")),
        ("GET", format!("{base}/v1/webhooks/{hook}/deliveries")),
        ("DELETE", format!("{base}/v1/webhooks/{hook}")),
        (
            "POST",
            format!("{base}/v1/webhooks/{hook}/deliveries/{delivery}/redeliver"),
        ),
    ] {
        let r = other_http
            .request(method.parse().unwrap(), &path)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path} as another tenant");
    }
    assert!(
        other_client.list_webhooks().await.unwrap().is_empty(),
        "another tenant lists none"
    );
    // Another tenant's jobs do not reach this endpoint.
    let other_digest = other_client
        .push_module(guests::hello())
        .await
        .unwrap()
        .digest;
    let other_job = other_client
        .submit(&Harness::spec(&other_digest), None)
        .await
        .unwrap();
    let start = Instant::now();
    while !other_client
        .get_job(other_job.id)
        .await
        .unwrap()
        .state
        .is_terminal()
    {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(hook)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(
        n, 1,
        "only the owner's job made an event for the owner's endpoint"
    );

    // Scopes: reading needs jobs:read, changing needs jobs:write.
    let reader = h.tenant_token("owner", &["jobs:read"]).await;
    let (_, reader_http) = h.clients_for(&reader);
    let r = reader_http
        .post(format!("{base}/v1/webhooks"))
        .json(&json!({ "url": rx.url() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = reader_http
        .delete(format!("{base}/v1/webhooks/{hook}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = reader_http
        .get(format!("{base}/v1/webhooks/{hook}/deliveries"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Vec<Value> = reader_http
        .get(format!("{base}/v1/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is never listed"
    );

    // Bad requests are refused with the field to blame, storing nothing.
    for (body, field) in [
        (json!({ "url": "ftp://example.com/x" }), "url"),
        (json!({ "url": "https://u:p@example.com/x" }), "url"),
        (json!({ "url": "http://example.com:0/x" }), "url"),
        (
            json!({ "url": rx.url(), "events": ["job.started"] }),
            "events[0]",
        ),
        (json!({ "url": rx.url(), "events": [] }), "events"),
        (json!({ "url": rx.url(), "secret": "mine" }), "secret"),
    ] {
        let r = owner_http
            .post(format!("{base}/v1/webhooks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    assert_eq!(owner_client.list_webhooks().await.unwrap().len(), 1);

    // Deleting: gone for its owner too, audited.
    let deleted = owner_client.delete_webhook(hook).await.unwrap();
    assert_eq!(deleted.id, hook);
    let r = owner_http
        .get(format!("{base}/v1/webhooks/{hook}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE target = $1 ORDER BY id")
            .bind(hook.to_string())
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(actions, ["webhook.create", "webhook.delete"]);
}

/// Every statement that moves a job into a final state — the worker's batched completion, the
/// cancel of a waiting job, the rescuer giving up — writes exactly one event per subscribed
/// endpoint, in its own transaction: rolled back with it, and never for a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_into_a_final_state_writes_one_event_in_the_same_transaction() {
    let db = nekton::testing::TestDb::new().await;
    nekton::store::migrate(&db.pool).await.unwrap();
    let pool = &db.pool;
    sqlx::query("INSERT INTO tenants (id) VALUES ('t1'), ('t2')")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, secret) \
         VALUES ($1, 't1', 'http://127.0.0.1:9/', '{job.completed}', 'whsec_AAAA')",
    )
    .bind(Uuid::now_v7())
    .execute(pool)
    .await
    .unwrap();
    let insert = |tenant: &'static str, max_attempts: i32| async move {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO jobs (id, tenant_id, queue, max_attempts) VALUES ($1, $2, 'q', $3)",
        )
        .bind(id)
        .bind(tenant)
        .bind(max_attempts)
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
        id
    };
    let events = |id: Uuid| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_deliveries WHERE payload->'data'->>'id' = $1",
        )
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .unwrap()
    };

    // A rolled-back completion leaves no event; a committed one leaves exactly one.
    let a = insert("t1", 1).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE id = $1")
        .bind(a)
        .execute(&mut *tx)
        .await
        .unwrap();
    let inside: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(inside, 1, "the event is written by the finishing statement");
    tx.rollback().await.unwrap();
    assert_eq!(events(a).await, 0, "rolled back with the completion");

    // The worker's path: claim, then the batched completion (with a retry and another tenant's
    // job in the same statement).
    let b = insert("t1", 3).await;
    let c = insert("t2", 1).await;
    let worker = Uuid::now_v7();
    let claimed = queue::claim(pool, worker, "q", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let completion = |job_id: Uuid, state: JobState| Completion {
        job_id,
        attempt: 1,
        state,
        retry_after: (state == JobState::Scheduled).then_some(Duration::from_secs(3600)),
        reason: if state == JobState::Scheduled {
            nekton::model::OutcomeReason::InternalError
        } else {
            nekton::model::OutcomeReason::Exited
        },
        exit_code: (state != JobState::Scheduled).then_some(0),
        signal: None,
        detail: None,
        usage: Default::default(),
        tests: None,
    };
    let applied = queue::complete(
        pool,
        worker,
        &[
            completion(a, JobState::Succeeded),
            completion(b, JobState::Scheduled),
            completion(c, JobState::Succeeded),
        ],
    )
    .await
    .unwrap();
    assert_eq!(applied.len(), 3);
    assert_eq!(events(a).await, 1);
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM webhook_deliveries WHERE payload->'data'->>'id' = $1",
    )
    .bind(a.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(payload["data"]["outcome"]["reason"], "exited", "{payload}");
    assert_eq!(payload["data"]["outcome"]["exit_code"], 0, "{payload}");
    assert_eq!(events(b).await, 0, "a retry is not a completion");
    assert_eq!(events(c).await, 0, "t2 has no webhooks");

    // A completion replayed (fenced out) writes nothing more.
    let again = queue::complete(pool, worker, &[completion(a, JobState::Succeeded)])
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(events(a).await, 1);

    // Cancel of a waiting job (b is scheduled).
    let t1 = nekton::store::tenants::get_tenant(pool, "t1")
        .await
        .unwrap()
        .unwrap();
    let cancelled =
        nekton::store::jobs::cancel(pool, &t1.id, b, &nekton::store::tenants::Actor::default())
            .await
            .unwrap();
    assert_eq!(cancelled, nekton::store::jobs::CancelResult::CancelledNow);
    assert_eq!(events(b).await, 1);
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM webhook_deliveries WHERE payload->'data'->>'id' = $1",
    )
    .bind(b.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(payload["data"]["state"], "cancelled");

    // The rescuer giving up on a job whose worker vanished.
    let d = insert("t1", 1).await;
    let claimed = queue::claim(pool, Uuid::now_v7(), "q", 10, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let rescued = queue::rescue(pool, 10, 3).await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, JobState::Error);
    assert_eq!(events(d).await, 1);
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(total, 3, "a, b and d: one each");
}

// ---------------------------------------------------------------------------------------------
// Worker processes killed with SIGKILL

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn kill9(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("signal the worker");
        let _ = self.0.wait();
    }
}

fn worker(url: &str, state_dir: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(BIN)
        .args([
            "worker",
            "--database-url",
            url,
            "--slots",
            "2",
            "--no-bridge-network",
        ])
        .arg("--state-dir")
        .arg(state_dir)
        .args([
            "--webhook-allow",
            "127.0.0.1/32",
            "--webhook-lease-ms",
            "3000",
            "--webhook-timeout-ms",
            "2000",
            "--webhook-retry-first-ms",
            "100",
        ])
        .args(extra)
        .env("NEKTON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {BIN} worker: {e}"));
    // Returned once its delivery loop has started (and made its first claim right after), so a
    // test knows what the worker has looked at: its log goes on to this process's stderr.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("the worker's stderr");
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            if line.contains("webhook delivery started") {
                let _ = started_tx.send(());
            }
        }
    });
    let proc = Proc(child);
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the worker's webhook delivery did not start within 60 s");
    proc
}

async fn outbox_row(pool: &sqlx::PgPool, hook: Uuid) -> Option<(String, i32)> {
    sqlx::query_as("SELECT state, attempts FROM webhook_deliveries WHERE webhook_id = $1")
        .bind(hook)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// A worker killed after the job's completion committed but before any delivery attempt, and
/// another killed in the middle of the attempt: the third worker delivers the event, with the
/// same webhook-id, and the log shows the lost attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_workers_between_completion_and_delivery_loses_nothing() {
    // The API only in this process (it runs no delivery loop); workers are processes.
    let h = Harness::start_with(|o| o.worker_slots = None).await;
    let token = h.tenant_token("durable", WRITER).await;
    let (client, http) = h.clients_for(&token);
    let rx = Receiver::start(vec![Reply::Hold]).await;
    let (hook, secret) = create_webhook(&http, &h.base, &rx.url(), None).await;
    let digest = client.push_module(guests::hello()).await.unwrap().digest;

    // Worker A runs the job, but polls its outbox only once an hour: the completion (and its
    // event) commits, then A dies before it ever looked for deliveries.
    let dir_a = tempfile::tempdir().unwrap();
    let a = worker(h.db.url(), dir_a.path(), &["--webhook-poll-ms", "3600000"]);
    let job = client.submit(&Harness::spec(&digest), None).await.unwrap();
    let j = common::wait_finished(&client, job.id, Duration::from_secs(60)).await;
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(
        outbox_row(&h.db.pool, hook).await,
        Some(("pending".to_string(), 0)),
        "the event was stored with the completion and not attempted yet"
    );
    a.kill9();
    assert!(rx.received().is_empty());

    // Worker B takes it and sends it; the receiver holds the request; B dies mid-attempt.
    let dir_b = tempfile::tempdir().unwrap();
    let b = worker(h.db.url(), dir_b.path(), &["--webhook-poll-ms", "50"]);
    let got = rx.wait_for(1, Duration::from_secs(60)).await;
    b.kill9();
    assert_eq!(
        outbox_row(&h.db.pool, hook).await,
        Some(("delivering".to_string(), 1)),
        "B's claim is still there, its lease running"
    );

    // Worker C takes the claim over when its lease ends and delivers (the receiver answers 200).
    let dir_c = tempfile::tempdir().unwrap();
    let _c = worker(h.db.url(), dir_c.path(), &["--webhook-poll-ms", "50"]);
    let got2 = rx.wait_for(2, Duration::from_secs(60)).await;
    assert_eq!(got2[1].id, got[0].id, "the same webhook-id after the crash");
    assert_eq!(got2[1].body, got[0].body);
    assert!(signature_verifies(&secret, &got[0]));
    assert!(signature_verifies(&secret, &got2[1]));
    let body: Value = serde_json::from_slice(&got2[1].body).unwrap();
    assert_eq!(body["data"]["id"], job.id.to_string());

    let page = wait_log(
        &http,
        &h.base,
        hook,
        Duration::from_secs(20),
        "delivered",
        |p| {
            p.deliveries
                .first()
                .is_some_and(|d| d.state == DeliveryState::Delivered)
        },
    )
    .await;
    let d = &page.deliveries[0];
    assert_eq!(d.attempts.len(), 2, "{d:#?}");
    assert!(
        d.attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("stopped before recording")),
        "the lost attempt is in the log: {d:#?}"
    );
    assert_eq!(d.attempts[1].status, Some(200));
    assert_eq!(rx.received().len(), 2);
}

/// `nekton webhook create|ls|deliveries|redeliver|rm` against the in-process server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_shows_redelivers_and_removes_webhooks() {
    let h = Harness::start_with(|o| o.webhooks = quick(&["127.0.0.1/32"])).await;
    let token = h.tenant_token("cli", WRITER).await;
    let (client, http) = h.clients_for(&token);
    let rx = Receiver::start(vec![Reply::Status(503)]).await;
    let nekton = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--server", &h.base, "--token", &token])
            .args(args)
            .env_remove("NEKTON_TOKEN")
            .output()
            .unwrap_or_else(|e| panic!("running {BIN}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "nekton {args:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let url = rx.url();
    let created = nekton(&["webhook", "create", &url, "--event", "job.completed"]);
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {created}"))
    };
    let id = field("id:");
    let secret = field("secret:");
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(field("events:"), "job.completed");
    let listed = nekton(&["webhook", "ls"]);
    assert!(listed.contains(&id) && listed.contains(&url), "{listed}");
    assert!(
        !listed.contains(&secret),
        "ls never shows the secret: {listed}"
    );

    let digest = client.push_module(guests::hello()).await.unwrap().digest;
    client.submit(&Harness::spec(&digest), None).await.unwrap();
    let got = rx.wait_for(2, Duration::from_secs(30)).await;
    assert!(
        signature_verifies(&secret, &got[1]),
        "the printed secret verifies"
    );
    let hook: Uuid = id.parse().unwrap();
    let page = wait_log(
        &http,
        &h.base,
        hook,
        Duration::from_secs(10),
        "delivered",
        |p| {
            p.deliveries
                .first()
                .is_some_and(|d| d.state == DeliveryState::Delivered)
        },
    )
    .await;
    let delivery = page.deliveries[0].id.to_string();
    let shown = nekton(&["webhook", "deliveries", &id]);
    let row = shown
        .lines()
        .find(|l| l.starts_with(&delivery))
        .unwrap_or_else(|| panic!("no row for {delivery}: {shown}"));
    assert!(
        row.contains("job.completed") && row.contains("delivered") && row.contains("200"),
        "{shown}"
    );
    let json: Value = serde_json::from_str(&nekton(&["webhook", "deliveries", &id, "--json"]))
        .expect("--json prints JSON");
    assert_eq!(json["deliveries"][0]["attempts"][0]["status"], 503);

    let redelivered = nekton(&["webhook", "redeliver", &id, &delivery]);
    assert!(redelivered.contains("queued again"), "{redelivered}");
    rx.wait_for(3, Duration::from_secs(10)).await;

    let removed = nekton(&["webhook", "rm", &id]);
    assert!(removed.contains("deleted"), "{removed}");
    assert!(!nekton(&["webhook", "ls"]).contains(&id));
}
