//! The API's handlers without sockets: each request goes through the real router
//! ([`nekton::api::app`]) with `tower::ServiceExt::oneshot`, on a fresh real PostgreSQL database
//! ([`nekton::testing::TestDb`], migrated), with no worker and no TCP listener. This is where
//! table-driven request checks live (status, error code, message and `field` path, and that a
//! refused request stores nothing): they need the router and the database, not a running
//! service, so they run in the default (no-root) test tier and take milliseconds each.
//! End-to-end behaviour (jobs that run, SSE over a socket) stays in `tests/api.rs`.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::guests;
use nekton::api::{AppState, app};
use nekton::config::LimitPolicy;
use nekton::metrics::Metrics;
use nekton::store::handoff::Handoff;
use nekton::testing::TestDb;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::ServiceExt as _;

/// The router on a fresh migrated database; no worker, no listener, no image service.
struct Api {
    db: TestDb,
    router: Router,
    /// The admin token (what a server's first start writes to admin.token).
    token: String,
    _state_dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Self {
        Self::with_policy(LimitPolicy::default()).await
    }

    async fn with_policy(policy: LimitPolicy) -> Self {
        Self::build(policy, None).await
    }

    /// With `handoff`, the API hands lone jobs to that (test-driven) worker's slots.
    async fn build(policy: LimitPolicy, handoff: Option<Arc<Handoff>>) -> Self {
        let db = TestDb::new().await;
        nekton::store::migrate(&db.pool)
            .await
            .expect("migrations apply");
        let state = AppState::new(
            db.pool.clone(),
            policy,
            Metrics::new(),
            Arc::new(Notify::new()),
        )
        .with_handoff(handoff);
        let state_dir = tempfile::tempdir().expect("temp dir");
        let token = nekton::server::bootstrap_admin_token(&db.pool, state_dir.path())
            .await
            .expect("admin token");
        Api {
            router: app(state),
            db,
            token,
            _state_dir: state_dir,
        }
    }

    /// Sends one request through the router; returns the status and the body (JSON, or
    /// `Value::Null` for an empty body).
    async fn call(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        self.call_with(method, uri, content_type, &[], body).await
    }

    /// [`Api::call`] with extra request headers.
    async fn call_with(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Body::from(body)).expect("request");
        let res = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
            .await
            .expect("response body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    async fn post_json(&self, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some("application/json"), body)
            .await
    }

    /// `POST /v1/jobs` of `spec`, with an Idempotency-Key when `key` is given.
    async fn submit_keyed(&self, spec: Value, key: Option<&str>) -> (StatusCode, Value) {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let body = spec.to_string().into_bytes();
        self.call_with(
            Method::POST,
            "/v1/jobs",
            Some("application/json"),
            &headers,
            body,
        )
        .await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None, Vec::new()).await
    }

    /// Uploads a module through the router; returns its digest.
    async fn push(&self, wasm: Vec<u8>) -> String {
        let (status, body) = self
            .call(Method::POST, "/v1/modules", Some("application/wasm"), wasm)
            .await;
        assert!(status.is_success(), "module upload: {status} {body}");
        body["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("module upload answered no digest: {body}"))
            .to_string()
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }
}

/// Asserts the API's error shape: `{"error": {"code", "message", "field"?}}` with a message that
/// says something, the given code, and (when given) the given field path.
fn assert_error(
    (status, err): &(StatusCode, Value),
    want_status: u16,
    code: &str,
    field: Option<&str>,
    shown: &str,
) {
    assert_eq!(status.as_u16(), want_status, "{shown}: {err}");
    assert_eq!(err["error"]["code"], code, "{shown}: {err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "{shown}: {err}"
    );
    if let Some(f) = field {
        assert_eq!(err["error"]["field"], f, "{shown}: {err}");
    }
}

// Moved from `tests/api.rs` (where it started the API and a worker on a socket): every
// assertion is kept, sent through the router instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_creates_nothing() {
    let h = Api::new().await;
    let hello = h.push(guests::hello()).await;

    let cases: Vec<(Vec<u8>, u16, &str, Option<&str>)> = vec![
        (b"{not json".to_vec(), 400, "invalid_json", None),
        (b"".to_vec(), 400, "invalid_json", None),
        (
            json!({"module": hello, "bogus": 1})
                .to_string()
                .into_bytes(),
            422,
            "validation_failed",
            None,
        ),
        (
            json!({"module": hello, "limits": {"wall_time_ms": -5}})
                .to_string()
                .into_bytes(),
            422,
            "validation_failed",
            Some("limits.wall_time_ms"),
        ),
        (
            json!({"module": hello, "limits": {"memory_bytes": 1u64 << 50}})
                .to_string()
                .into_bytes(),
            422,
            "validation_failed",
            Some("limits.memory_bytes"),
        ),
        (
            json!({"module": format!("sha256:{}", "0".repeat(64))})
                .to_string()
                .into_bytes(),
            422,
            "module_not_found",
            Some("module"),
        ),
        (
            json!({"module": "not-a-digest"}).to_string().into_bytes(),
            422,
            "validation_failed",
            Some("module"),
        ),
        (
            json!({"args": ["x"]}).to_string().into_bytes(),
            422,
            "validation_failed",
            Some("module"),
        ),
        (
            json!({"module": hello, "files": [{"path": "../x", "content": ""}]})
                .to_string()
                .into_bytes(),
            422,
            "validation_failed",
            Some("files[0].path"),
        ),
        (
            json!({"module": hello, "env": "nope"})
                .to_string()
                .into_bytes(),
            422,
            "validation_failed",
            Some("env"),
        ),
        // Egress allow-lists: the entry, or the list, is named.
        (
            json!({"image": "busybox", "network": {"mode": "bridge",
                "allow": ["10.0.0.0/8", "192.0.2.1:53", "198.51.100.2/24"]}})
            .to_string()
            .into_bytes(),
            422,
            "validation_failed",
            Some("network.allow[2]"),
        ),
        (
            json!({"image": "busybox", "network": {"mode": "bridge", "allow": ["10.0.0.0/8", 5]}})
                .to_string()
                .into_bytes(),
            422,
            "validation_failed",
            Some("network.allow[1]"),
        ),
        (
            json!({"image": "busybox", "network": {"mode": "none", "allow": []}})
                .to_string()
                .into_bytes(),
            422,
            "validation_failed",
            Some("network.allow"),
        ),
        (
            json!({"image": "busybox", "network": {"mode": "bridge",
                "allow": (0..65).map(|i| format!("10.0.{i}.0/24")).collect::<Vec<_>>()}})
            .to_string()
            .into_bytes(),
            422,
            "validation_failed",
            Some("network.allow"),
        ),
        (
            json!({"module": hello, "network": {"mode": "bridge", "allow": ["10.0.0.0/8"]}})
                .to_string()
                .into_bytes(),
            422,
            "validation_failed",
            Some("network"),
        ),
    ];
    for (body, status, code, field) in cases {
        let shown = String::from_utf8_lossy(&body).to_string();
        let res = h.post_json("/v1/jobs", body).await;
        assert_error(&res, status, code, field, &shown);
    }
    // 100 MB: refused with 413 before anything is stored.
    let (status, err) = h.post_json("/v1/jobs", vec![b' '; 100 << 20]).await;
    assert_eq!(status, 413);
    assert_eq!(err["error"]["code"], "payload_too_large");
    // Unknown endpoints and ids answer in the same shape.
    let (status, err) = h.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
    let (status, _) = h.get("/v1/nope").await;
    assert_eq!(status, 404);
    assert_eq!(h.count("jobs").await, 0);
    assert_eq!(h.count("job_specs").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_ids_and_methods_answer_in_the_error_shape() {
    let h = Api::new().await;
    let id = uuid::Uuid::now_v7();
    let cases = [
        (Method::GET, "/v1/nope".to_string(), 404, "not_found"),
        (Method::GET, format!("/v1/jobs/{id}"), 404, "not_found"),
        (Method::GET, format!("/v1/batches/{id}"), 404, "not_found"),
        (
            Method::POST,
            format!("/v1/jobs/{id}/cancel"),
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/jobs/not-a-uuid".to_string(),
            400,
            "invalid_id",
        ),
        (
            Method::DELETE,
            "/v1/modules".to_string(),
            405,
            "method_not_allowed",
        ),
        (
            Method::PUT,
            "/v1/jobs".to_string(),
            405,
            "method_not_allowed",
        ),
    ];
    for (method, uri, status, code) in cases {
        let shown = format!("{method} {uri}");
        let res = h.call(method, &uri, None, Vec::new()).await;
        assert_error(&res, status, code, None, &shown);
        // Not-found errors name what was not found.
        if status == 404 && uri.contains(&id.to_string()) {
            assert!(
                res.1["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&id.to_string())),
                "{shown}: {}",
                res.1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_query_errors_name_the_parameter() {
    let h = Api::new().await;
    let cases = [
        ("/v1/jobs?limit=0", Some("limit")),
        ("/v1/jobs?limit=501", Some("limit")),
        ("/v1/jobs?state=melted", Some("state")),
        ("/v1/jobs?label=novalue", Some("label")),
        ("/v1/jobs?cursor=xyz", Some("cursor")),
        ("/v1/jobs?limit=ten", None),
        ("/v1/jobs?bogus=1", None),
        ("/v1/jobs?state=queued&state=failed", Some("state")),
        ("/v1/jobs?label=a%3D1&label=a%3D2", Some("label")),
    ];
    for (uri, field) in cases {
        let res = h.get(uri).await;
        assert_error(&res, 400, "invalid_query", field, uri);
    }
    // A valid query on an empty database is an empty page.
    let (status, page) = h.get("/v1/jobs?limit=500&state=queued").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["jobs"], json!([]), "{page}");
}

/// `label` repeats: every label given must match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_label_filters_must_all_match() {
    let h = Api::new().await;
    let hello = h.push(guests::hello()).await;
    for labels in [
        json!({ "suite": "a", "lang": "rust" }),
        json!({ "suite": "a", "lang": "c" }),
        json!({ "suite": "b", "lang": "rust" }),
    ] {
        let (status, body) = h
            .post_json(
                "/v1/jobs",
                json!({ "module": hello, "labels": labels })
                    .to_string()
                    .into_bytes(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for (uri, n) in [
        ("/v1/jobs?label=suite%3Da", 2),
        ("/v1/jobs?label=suite=a&label=lang=rust", 1),
        ("/v1/jobs?label=lang%3Drust&label=suite%3Db&limit=10", 1),
        ("/v1/jobs?label=suite%3Da&label=lang%3Dgo", 0),
    ] {
        let (status, page) = h.get(uri).await;
        assert_eq!(status, 200, "{uri}: {page}");
        assert_eq!(page["jobs"].as_array().unwrap().len(), n, "{uri}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_uploads_are_checked_and_stored_once() {
    let h = Api::with_policy(LimitPolicy {
        max_module_bytes: 4096,
        ..LimitPolicy::default()
    })
    .await;
    // Not Wasm: 422 invalid_module, nothing stored.
    let res = h
        .call(
            Method::POST,
            "/v1/modules",
            Some("application/wasm"),
            b"definitely not wasm".to_vec(),
        )
        .await;
    assert_error(&res, 422, "invalid_module", None, "garbage module");
    // Over this server's module limit (but under the JSON body limit): the handler's 413,
    // which names both sizes.
    let res = h
        .call(
            Method::POST,
            "/v1/modules",
            Some("application/wasm"),
            vec![0u8; 5000],
        )
        .await;
    assert_error(&res, 413, "payload_too_large", None, "oversize module");
    let message = res.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("5000") && message.contains("4096"),
        "{message}"
    );
    assert_eq!(h.count("modules").await, 0);
    // A valid module: 201 with its digest, then 200 with the same digest for the same bytes.
    let wasm = guests::hello();
    let (status, first) = h
        .call(
            Method::POST,
            "/v1/modules",
            Some("application/wasm"),
            wasm.clone(),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = h
        .call(Method::POST, "/v1/modules", Some("application/wasm"), wasm)
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(first["digest"], again["digest"]);
    assert!(
        first["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:") && d.len() == 7 + 64),
        "{first}"
    );
    assert_eq!(h.count("modules").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_errors_name_the_job_and_its_field_and_store_nothing() {
    let h = Api::new().await;
    let hello = h.push(guests::hello()).await;
    let missing = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!({"jobs": []}), 422, "validation_failed", Some("jobs")),
        (
            json!({"jobs": [{"module": hello}, {"module": hello, "limits": {"wall_time_ms": -1}}]}),
            422,
            "validation_failed",
            Some("jobs[1].limits.wall_time_ms"),
        ),
        (
            json!({"jobs": [{"module": hello}, {"module": hello}, {"module": missing}]}),
            422,
            "module_not_found",
            Some("jobs[2].module"),
        ),
        (
            json!({"jobs": [{"module": hello, "files": [{"path": "/abs", "content": ""}]}]}),
            422,
            "validation_failed",
            Some("jobs[0].files[0].path"),
        ),
        (
            json!({"defaults": {"module": hello}, "jobs": [{"args": ["a"]}, {"bogus": true}]}),
            422,
            "validation_failed",
            None,
        ),
        (
            json!({"jobs": [{"module": hello}], "surprise": 1}),
            422,
            "validation_failed",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let shown = body.to_string();
        let res = h.post_json("/v1/batches", shown.clone().into_bytes()).await;
        assert_error(&res, status, code, field, &shown);
        // Batch errors say which job is to blame.
        if field.is_some_and(|f| f.starts_with("jobs[")) {
            let message = res.1["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("job "), "{shown}: {message}");
        }
    }
    let res = h
        .post_json("/v1/batches", br#"{"jobs": [{"module"#.to_vec())
        .await;
    assert_error(&res, 400, "invalid_json", None, "truncated batch");
    assert_eq!(h.count("jobs").await, 0);
    assert_eq!(h.count("job_specs").await, 0);
    assert_eq!(h.count("batches").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_idempotency_key_is_a_400_naming_the_header() {
    let h = Api::new().await;
    let hello = h.push(guests::hello()).await;
    let res = h
        .submit_keyed(json!({ "module": hello }), Some(&"k".repeat(256)))
        .await;
    assert_error(
        &res,
        400,
        "invalid_header",
        Some("Idempotency-Key"),
        "256-byte key",
    );
    assert_eq!(h.count("jobs").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_module_is_refused_by_the_submissions_own_statement_on_both_paths() {
    // The lone submission checks its module in the statement that stores it: one statement
    // without an Idempotency-Key, the transaction with one. Either way an unknown module is a
    // 422 naming `module`, nothing is stored, and a known one is accepted.
    let h = Api::new().await;
    let hello = h.push(guests::hello()).await;
    let missing = format!("sha256:{}", "0".repeat(64));
    let post = |module: &str, key| h.submit_keyed(json!({ "module": module }), key);
    for key in [None, Some("k-missing")] {
        let res = post(&missing, key).await;
        assert_error(
            &res,
            422,
            "module_not_found",
            Some("module"),
            &format!("key {key:?}"),
        );
        let message = res.1["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&missing) && message.contains("POST /v1/modules"),
            "{message}"
        );
    }
    assert_eq!(h.count("jobs").await, 0);
    assert_eq!(h.count("job_specs").await, 0);
    for key in [None, Some("k-hello")] {
        let (status, job) = post(&hello, key).await;
        assert_eq!(status, 201, "key {key:?}: {job}");
        assert_eq!(job["state"], "queued");
    }
    assert_eq!(h.count("jobs").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_job_is_handed_to_the_worker_in_this_process_while_it_has_a_free_slot() {
    // The API beside a worker (`nekton serve`), played here by a Handoff with one slot and the
    // test as its worker: a lone job is stored running on it and arrives with the spec the
    // claim would have read, with or without an Idempotency-Key, a module or an image; with the
    // slot taken or the worker stopped, the job waits in its queue for a claim.
    let worker = uuid::Uuid::now_v7();
    let (handoff, mut worker_rx) = Handoff::new(
        worker,
        vec!["default".into()],
        1,
        1,
        std::time::Duration::from_secs(30),
    );
    let h = Api::build(LimitPolicy::default(), Some(handoff)).await;
    let hello = h.push(guests::hello()).await;
    let plain = || h.submit_keyed(json!({ "module": hello }), None);
    // Claims whatever waits, as another worker would, so the next submission finds none.
    let claim_waiting = || {
        nekton::store::queue::claim(
            &h.db.pool,
            uuid::Uuid::now_v7(),
            "default",
            10,
            std::time::Duration::from_secs(30),
        )
    };

    let (status, job) = plain().await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_i64()),
        (Some("running"), Some(1)),
        "{job}"
    );
    let handed = worker_rx
        .try_recv()
        .expect("the job was handed to the worker");
    assert_eq!(handed.job.id.to_string(), job["id"].as_str().unwrap());
    assert_eq!(
        (handed.job.attempt, handed.job.tenant.as_str()),
        (1, "default")
    );
    let stored: Value = sqlx::query_scalar("SELECT spec FROM job_specs WHERE job_id = $1")
        .bind(handed.job.id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(handed.job.spec, stored, "the spec a claim would have read");
    let owner: Option<uuid::Uuid> = sqlx::query_scalar("SELECT worker_id FROM jobs WHERE id = $1")
        .bind(handed.job.id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(owner, Some(worker));

    // Its one slot is held by that job: the next one waits.
    let (_, next) = plain().await;
    assert_eq!(next["state"], "queued", "{next}");
    assert!(
        worker_rx.try_recv().is_err(),
        "nothing handed without a free slot"
    );
    assert_eq!(claim_waiting().await.unwrap().len(), 1);

    // The slot is free again: a keyed submission is handed too (its key goes into the same
    // statement).
    drop(handed);
    let keyed = || h.submit_keyed(json!({ "module": hello }), Some("k-1"));
    let (status, first) = keyed().await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["state"], "running", "{first}");
    let handed = worker_rx.try_recv().expect("the keyed job was handed");
    assert_eq!(handed.job.id.to_string(), first["id"].as_str().unwrap());
    assert!(
        !handed.slot.has_container(),
        "a Wasm job takes no container slot"
    );
    let key: Option<String> = sqlx::query_scalar("SELECT idempotency_key FROM jobs WHERE id = $1")
        .bind(handed.job.id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(
        key.as_deref(),
        Some("k-1"),
        "the key is stored with the job"
    );
    drop(handed);
    // Its replay answers the same job (200) and the key's reuse with another body a 422; neither
    // stores nor hands anything, and each gives the slot set aside back.
    let (status, replay) = keyed().await;
    assert_eq!(
        (status.as_u16(), &replay["id"]),
        (200, &first["id"]),
        "{replay}"
    );
    let (status, reused) = h
        .submit_keyed(json!({ "module": hello, "args": ["other"] }), Some("k-1"))
        .await;
    assert_eq!(status, 422, "{reused}");
    assert!(
        worker_rx.try_recv().is_err(),
        "nothing handed for a used key"
    );
    let (_, again) = plain().await;
    assert_eq!(again["state"], "running", "the slot came back: {again}");
    drop(worker_rx.try_recv().expect("handed"));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 4, "the replay and the reuse stored no job");

    // An image job is handed the same way, its image recorded among the tenant's.
    let (status, image_job) = h
        .submit_keyed(json!({ "image": "docker.io/library/busybox:1.36" }), None)
        .await;
    assert_eq!(
        (status.as_u16(), image_job["state"].as_str()),
        (201, Some("running")),
        "{image_job}"
    );
    let handed = worker_rx.try_recv().expect("the image job was handed");
    assert_eq!(handed.job.id.to_string(), image_job["id"].as_str().unwrap());
    assert!(
        handed.slot.has_container(),
        "an image job is handed with a container slot"
    );
    let images: Vec<String> =
        sqlx::query_scalar("SELECT reference FROM tenant_images WHERE tenant_id = 'default'")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(
        images,
        vec![image_job["program"].as_str().unwrap().to_string()]
    );
    drop(handed);

    // The worker stopped taking jobs between the slot and the hand-over: the job is back in its
    // queue as if never handed, and the answer says so.
    worker_rx.close();
    let (status, back) = plain().await;
    assert_eq!(status, 201, "{back}");
    assert_eq!(
        (back["state"].as_str(), back["attempt"].as_i64()),
        (Some("queued"), Some(0)),
        "{back}"
    );
    let row: (String, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT state::text, worker_id FROM jobs WHERE id = $1::text::uuid")
            .bind(back["id"].as_str().unwrap())
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(row, ("queued".to_string(), None));
    let claimed = claim_waiting().await.unwrap();
    assert_eq!(
        (claimed.len(), claimed[0].attempt),
        (1, 1),
        "claimed as a fresh first attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_endpoints_without_a_worker_answer_503() {
    // An API-only process has no image store: its image endpoints say so, in the error shape.
    let h = Api::new().await;
    let res = h.get("/v1/images").await;
    assert_error(&res, 503, "images_unavailable", None, "GET /v1/images");
    let message = res.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nekton serve"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_job_is_stored_queued_without_a_worker() {
    // The success path through the router: 201, the job queued in the database, readable back.
    let h = Api::new().await;
    let hello = h.push(guests::hello()).await;
    let (status, job) = h
        .post_json(
            "/v1/jobs",
            json!({"module": hello, "args": ["a"]})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["state"], "queued", "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    let (status, again) = h.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["state"], "queued");
    assert_eq!(h.count("jobs").await, 1);
}
