//! Tenancy, checked over HTTP as clients see it: every endpoint of the OpenAPI document ×
//! {own token, another tenant's token, no token, a revoked token, a token without the scope}
//! answers 2xx / 404 / 401 / 401 / 403, and no answer ever carries another tenant's data.
//! Then tokens (expiry, revocation within the cache's second, shown once, hashed at rest),
//! quotas at submission (rate, waiting jobs, limit maxima, bridge), usage, and the audit log.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Harness, guests, http_client};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const ALL_BUT_ADMIN: [&str; 4] = ["jobs:read", "jobs:write", "modules:write", "images:write"];

/// Tokens of tenant `a` without one scope each (the "token without the scope" column).
fn without(scope: &str) -> Vec<&'static str> {
    ALL_BUT_ADMIN.into_iter().filter(|s| *s != scope).collect()
}

struct Tokens {
    admin: String,
    a: String,
    b: String,
    revoked: String,
    a_without: std::collections::HashMap<&'static str, String>,
}

async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<(&str, Vec<u8>)>,
    sse: bool,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = http.request(method, url);
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    if sse {
        req = req.header("accept", "text/event-stream");
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    // A stream of the caller's own job ends (the job is finished); read at most a little of it.
    let bytes = if sse && status.is_success() {
        let mut res = res;
        let mut buf = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, res.chunk()).await {
            buf.extend_from_slice(&chunk);
        }
        buf
    } else {
        res.bytes().await.expect("body").to_vec()
    };
    (status, headers, bytes)
}

/// One row of the matrix: an endpoint with the caller's own objects in its path or body.
/// An admin endpoint: method, OpenAPI path, concrete path, body, the admin's status.
type AdminRow = (Method, &'static str, String, Option<Vec<u8>>, u16);

struct Row {
    method: Method,
    /// The path as the OpenAPI document names it (for the coverage check).
    template: &'static str,
    /// The concrete path (the objects of tenant `a`).
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    sse: bool,
    /// The scope the endpoint needs.
    scope: &'static str,
    /// What the owner gets (a 2xx, or the documented answer where the owner's request cannot
    /// succeed on this host, such as an image that is not there).
    own: u16,
    /// What another tenant gets: 404 for an object of `a`; for listings and creations, the
    /// status it gets for its own (empty) view.
    other: u16,
    /// The body is a job (or batch) of a's module, built for each call.
    fresh: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_by_tenant_token_and_scope() {
    // The webhook delivery loop looks at its outbox once, at start: a's deliveries stay pending
    // (and its endpoint is never contacted), so redelivering one always finds it waiting.
    let h = Harness::start_with(|o| o.webhooks.poll = Duration::from_secs(3600)).await;
    let admin = h.admin_token.clone().expect("admin token");
    let a = h.tenant_token("a", &ALL_BUT_ADMIN).await;
    let b = h.tenant_token("b", &ALL_BUT_ADMIN).await;
    let revoked = h.tenant_token("a", &ALL_BUT_ADMIN).await;
    let mut a_without = std::collections::HashMap::new();
    for s in ALL_BUT_ADMIN {
        a_without.insert(s, h.tenant_token("a", &without(s)).await);
    }
    // Revoke through the API; the lookup cache lives at most a second.
    let tokens: Value = h
        .http
        .get(format!("{}/v1/tokens?tenant=a", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revoked_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            revoked.starts_with(t["hint"].as_str().unwrap())
                && t["scopes"].as_array().unwrap().len() == 4
        })
        .map(|t| t["id"].as_str().unwrap().to_string())
        .expect("the token to revoke is listed");
    // Listings never show secrets.
    assert!(
        !tokens.to_string().contains(&revoked[3..]),
        "a listing shows a secret: {tokens}"
    );
    let t = Tokens {
        admin,
        a,
        b,
        revoked,
        a_without,
    };

    // Objects of tenant a: a module, a finished job with output, a queued job (on a queue no
    // worker serves), a batch, an idempotency key.
    let (a_client, a_http) = h.clients_for(&t.a);
    let digest = a_client.push_module(guests::hello()).await.unwrap().digest;
    // A webhook endpoint of a's (127.0.0.1:1: nothing listens, and nothing is sent), created
    // before a's first job so that job's end writes a delivery.
    let r = a_http
        .post(format!("{}/v1/webhooks", h.base))
        .json(&json!({ "url": "http://127.0.0.1:1/hook", "events": ["job.completed"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let hook: Value = r.json().await.unwrap();
    let hook_id = hook["id"].as_str().unwrap().to_string();
    // Its input file is collected back as an artifact (the artifact rows below).
    let done_spec = nekton::api::types::JobSpec {
        files: vec![nekton::api::types::InputFileSpec {
            path: "out.txt".into(),
            content: "a's artifact".into(),
            encoding: None,
            mode: None,
        }],
        artifacts: vec!["out.txt".into()],
        ..Harness::spec(&digest)
    };
    let done = a_client.submit(&done_spec, Some("key-1")).await.unwrap();
    let done = common::wait_finished(&a_client, done.id, WAIT).await;
    let out = a_client.plain_log_bytes(done.id, None).await.unwrap();
    assert!(!out.is_empty(), "the hello job printed nothing");
    // Written with the job's completion.
    let delivery_id: Uuid = sqlx::query_scalar(
        "SELECT id FROM webhook_deliveries WHERE webhook_id = $1::uuid AND payload->'data'->>'id' = $2",
    )
    .bind(&hook_id)
    .bind(done.id.to_string())
    .fetch_one(&h.db.pool)
    .await
    .expect("the finished job's webhook delivery");
    let parked = |queue: &str| {
        json!({ "module": digest, "queue": queue, "labels": { "owner": "a" } })
            .to_string()
            .into_bytes()
    };
    let r = a_http
        .post(format!("{}/v1/jobs", h.base))
        .header("content-type", "application/json")
        .body(parked("nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let queued: Value = r.json().await.unwrap();
    let queued_id = queued["id"].as_str().unwrap().to_string();
    let r = a_http
        .post(format!("{}/v1/batches", h.base))
        .json(&json!({ "jobs": [{ "module": digest }, { "module": digest }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let batch: Value = r.json().await.unwrap();
    let batch_id = batch["id"].as_str().unwrap().to_string();
    let page: Value = a_http
        .get(format!("{}/v1/jobs?limit=1", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a_cursor = page["next_cursor"]
        .as_str()
        .expect("a has more than one job")
        .to_string();
    // Wait for the batch to finish so its event stream ends.
    {
        let start = std::time::Instant::now();
        loop {
            let b = a_client.get_batch(batch_id.parse().unwrap()).await.unwrap();
            if b.finished {
                break;
            }
            assert!(start.elapsed() < WAIT, "batch did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let r = h
        .http
        .delete(format!("{}/v1/tokens/{revoked_id}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let job = done.id.to_string();
    let rows = vec![
        Row {
            method: Method::GET,
            template: "/v1/jobs/{id}",
            path: format!("/v1/jobs/{job}"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/jobs/{id}/logs",
            path: format!("/v1/jobs/{job}/logs"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/jobs/{id}/logs",
            path: format!("/v1/jobs/{job}/logs"),
            body: None,
            sse: true,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        // Not a test suite: its owner gets the 404 saying so.
        Row {
            method: Method::GET,
            template: "/v1/jobs/{id}/cases",
            path: format!("/v1/jobs/{job}/cases"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 404,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/jobs/{id}/artifacts",
            path: format!("/v1/jobs/{job}/artifacts"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/jobs/{id}/artifacts/{path}",
            path: format!("/v1/jobs/{job}/artifacts/out.txt"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/jobs",
            path: "/v1/jobs".into(),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/jobs",
            path: format!("/v1/jobs?cursor={a_cursor}"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/jobs",
            path: format!("/v1/jobs?batch={batch_id}"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/jobs",
            path: "/v1/jobs?label=owner%3Da".into(),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/batches/{id}",
            path: format!("/v1/batches/{batch_id}"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/batches/{id}/events",
            path: format!("/v1/batches/{batch_id}/events"),
            body: None,
            sse: true,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/batches",
            path: "/v1/batches".into(),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        // a's batch id as a cursor: b's page is still b's (empty) view.
        Row {
            method: Method::GET,
            template: "/v1/batches",
            path: format!("/v1/batches?cursor={batch_id}&done=true"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        // a's batch has finished: the owner's cancel changes nothing and answers 200.
        Row {
            method: Method::POST,
            template: "/v1/batches/{id}/cancel",
            path: format!("/v1/batches/{batch_id}/cancel"),
            body: None,
            sse: false,
            scope: "jobs:write",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/modules",
            path: "/v1/modules".into(),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/version",
            path: "/v1/version".into(),
            body: None,
            sse: false,
            scope: "",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::POST,
            template: "/v1/jobs",
            path: "/v1/jobs".into(),
            body: None,
            sse: false,
            scope: "jobs:write",
            own: 201,
            // b cannot run a's module: it is not b's (and b learns nothing of it).
            other: 422,
            fresh: true,
        },
        Row {
            method: Method::POST,
            template: "/v1/batches",
            path: "/v1/batches".into(),
            body: None,
            sse: false,
            scope: "jobs:write",
            own: 201,
            other: 422,
            fresh: true,
        },
        Row {
            method: Method::POST,
            template: "/v1/modules",
            path: "/v1/modules".into(),
            body: Some(("application/wasm", guests::hello())),
            sse: false,
            scope: "modules:write",
            own: 200,
            other: 201,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/usage",
            path: "/v1/usage".into(),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/me",
            path: "/v1/me".into(),
            body: None,
            sse: false,
            scope: "",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/images",
            path: "/v1/images".into(),
            body: None,
            sse: false,
            scope: "images:write",
            own: 200,
            other: 200,
            fresh: false,
        },
        // No image of that name on this host: the owner passes authentication and gets the
        // image store's 404.
        Row {
            method: Method::GET,
            template: "/v1/images/{reference}",
            path: "/v1/images/127.0.0.1%3A1%2Fnone%3A1".into(),
            body: None,
            sse: false,
            scope: "images:write",
            own: 404,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::POST,
            template: "/v1/images/pull",
            path: "/v1/images/pull".into(),
            // A closed port on loopback: the registry is unreachable (502).
            body: Some((
                "application/json",
                br#"{"reference":"127.0.0.1:1/none:1"}"#.to_vec(),
            )),
            sse: false,
            scope: "images:write",
            own: 502,
            other: 502,
            fresh: false,
        },
        Row {
            method: Method::POST,
            template: "/v1/images/import",
            path: "/v1/images/import".into(),
            body: Some(("application/x-tar", b"not a tar".to_vec())),
            sse: false,
            scope: "images:write",
            own: 422,
            other: 422,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/webhooks",
            path: "/v1/webhooks".into(),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 200,
            fresh: false,
        },
        Row {
            method: Method::POST,
            template: "/v1/webhooks",
            path: "/v1/webhooks".into(),
            body: Some((
                "application/json",
                br#"{"url":"http://127.0.0.1:1/other"}"#.to_vec(),
            )),
            sse: false,
            scope: "jobs:write",
            own: 201,
            other: 201,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/webhooks/{id}",
            path: format!("/v1/webhooks/{hook_id}"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::GET,
            template: "/v1/webhooks/{id}/deliveries",
            path: format!("/v1/webhooks/{hook_id}/deliveries"),
            body: None,
            sse: false,
            scope: "jobs:read",
            own: 200,
            other: 404,
            fresh: false,
        },
        Row {
            method: Method::POST,
            template: "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            path: format!("/v1/webhooks/{hook_id}/deliveries/{delivery_id}/redeliver"),
            body: None,
            sse: false,
            scope: "jobs:write",
            own: 202,
            other: 404,
            fresh: false,
        },
        // Deleting a's endpoint comes after the rows that need it.
        Row {
            method: Method::DELETE,
            template: "/v1/webhooks/{id}",
            path: format!("/v1/webhooks/{hook_id}"),
            body: None,
            sse: false,
            scope: "jobs:write",
            own: 200,
            other: 404,
            fresh: false,
        },
        // The last job of a's: cancelling it last keeps it queued for the rows above.
        Row {
            method: Method::POST,
            template: "/v1/jobs/{id}/cancel",
            path: format!("/v1/jobs/{queued_id}/cancel"),
            body: None,
            sse: false,
            scope: "jobs:write",
            own: 200,
            other: 404,
            fresh: false,
        },
    ];
    // Admin endpoints: no tenant owns them; a tenant token without admin gets 403.
    let admin_rows: Vec<AdminRow> = vec![
        (Method::GET, "/v1/tenants", "/v1/tenants".into(), None, 200),
        (
            Method::POST,
            "/v1/tenants",
            "/v1/tenants".into(),
            Some(br#"{"id":"c"}"#.to_vec()),
            201,
        ),
        (
            Method::GET,
            "/v1/tenants/{id}",
            "/v1/tenants/a".into(),
            None,
            200,
        ),
        (
            Method::PATCH,
            "/v1/tenants/{id}",
            "/v1/tenants/a".into(),
            Some(br#"{"weight":2}"#.to_vec()),
            200,
        ),
        (Method::GET, "/v1/tokens", "/v1/tokens".into(), None, 200),
        (
            Method::POST,
            "/v1/tokens",
            "/v1/tokens".into(),
            Some(br#"{"tenant":"c","scopes":["jobs:read"]}"#.to_vec()),
            201,
        ),
        (
            Method::DELETE,
            "/v1/tokens/{id}",
            format!("/v1/tokens/{revoked_id}"),
            None,
            200,
        ),
        (Method::GET, "/v1/audit", "/v1/audit".into(), None, 200),
        (Method::GET, "/metrics", "/metrics".into(), None, 200),
        (
            Method::POST,
            "/v1/images/gc",
            "/v1/images/gc".into(),
            None,
            200,
        ),
        (
            Method::DELETE,
            "/v1/images/{reference}",
            "/v1/images/127.0.0.1%3A1%2Fnone%3A1".into(),
            None,
            404,
        ),
    ];

    // Coverage: every operation of the OpenAPI document is in one of the tables (a new
    // endpoint without a row fails here).
    let doc: Value = reqwest::get(format!("{}/openapi.json", h.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut covered: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.as_str().to_lowercase(), r.template.to_string()))
        .collect();
    covered.extend(
        admin_rows
            .iter()
            .map(|(m, t, ..)| (m.as_str().to_lowercase(), t.to_string())),
    );
    for open in ["/healthz", "/readyz"] {
        covered.insert(("get".into(), open.into()));
        let r = reqwest::get(format!("{}{open}", h.base)).await.unwrap();
        assert_eq!(r.status(), 200, "{open} stays open without a token");
    }
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                covered.contains(&(method.clone(), path.clone())),
                "{method} {path} has no row in the tenancy matrix"
            );
        }
    }

    let a_secrets = [
        job.clone(),
        queued_id.clone(),
        batch_id.clone(),
        digest.clone(),
        hook_id.clone(),
        delivery_id.to_string(),
        "a's artifact".to_string(),
    ];
    let no_token = http_client(None);
    let http = |tok: &str| http_client(Some(tok));
    let body_for = |row: &Row| -> Option<(&'static str, Vec<u8>)> {
        if row.fresh {
            return Some(match row.template {
                "/v1/jobs" => (
                    "application/json",
                    json!({ "module": digest }).to_string().into_bytes(),
                ),
                _ => (
                    "application/json",
                    json!({ "jobs": [{ "module": digest }] })
                        .to_string()
                        .into_bytes(),
                ),
            });
        }
        row.body.clone()
    };
    for row in &rows {
        let url = format!("{}{}", h.base, row.path);
        let shown = format!(
            "{} {}{}",
            row.method,
            row.path,
            if row.sse { " (SSE)" } else { "" }
        );
        // No token, and a revoked token: 401 with the challenge and the error shape.
        for (who, client) in [
            ("no token", &no_token),
            ("revoked token", &http(&t.revoked)),
        ] {
            let (status, headers, bytes) =
                send(client, row.method.clone(), &url, body_for(row), row.sse).await;
            assert_eq!(
                status,
                401,
                "{shown} with {who}: {}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(
                headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{shown} with {who}: no WWW-Authenticate: Bearer"
            );
            let err: Value = serde_json::from_slice(&bytes).expect("401 body is JSON");
            assert_eq!(err["error"]["code"], "unauthorized", "{shown}: {err}");
        }
        // Without the scope: 403.
        if !row.scope.is_empty() {
            let (status, _, bytes) = send(
                &http(&t.a_without[row.scope]),
                row.method.clone(),
                &url,
                body_for(row),
                row.sse,
            )
            .await;
            assert_eq!(
                status,
                403,
                "{shown} without {}: {}",
                row.scope,
                String::from_utf8_lossy(&bytes)
            );
            let err: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(err["error"]["code"], "forbidden");
        }
        // Another tenant: 404 for a's objects, and nothing of a's in any answer.
        let (status, _, bytes) = send(
            &http(&t.b),
            row.method.clone(),
            &url,
            body_for(row),
            row.sse,
        )
        .await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status.as_u16(), row.other, "{shown} as tenant b: {text}");
        let sent = format!(
            "{}{}",
            row.path,
            String::from_utf8_lossy(&body_for(row).map(|b| b.1).unwrap_or_default())
        );
        for secret in &a_secrets {
            if sent.contains(secret.as_str())
                || (row.template == "/v1/modules" && secret == &digest)
            {
                // What b sent itself may be echoed (`no job <id>`); b's upload of the same
                // bytes makes the digest b's own.
                continue;
            }
            assert!(
                !text.contains(secret.as_str()),
                "{shown} as tenant b shows a's {secret}: {text}"
            );
        }
        if row.sse {
            assert!(
                !text.contains("event:"),
                "{shown} as b: an event before the 404: {text}"
            );
        }
        // The owner.
        let (status, _, bytes) = send(
            &http(&t.a),
            row.method.clone(),
            &url,
            body_for(row),
            row.sse,
        )
        .await;
        assert_eq!(
            status.as_u16(),
            row.own,
            "{shown} as its owner: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    for (method, _, path, body, own) in &admin_rows {
        let url = format!("{}{path}", h.base);
        let shown = format!("{method} {path}");
        let body = body.clone().map(|b| ("application/json", b));
        for (who, client) in [
            ("no token", &no_token),
            ("revoked token", &http(&t.revoked)),
        ] {
            let (status, headers, _) =
                send(client, method.clone(), &url, body.clone(), false).await;
            assert_eq!(status, 401, "{shown} with {who}");
            assert!(
                headers.contains_key("www-authenticate"),
                "{shown}: no challenge"
            );
        }
        let (status, _, bytes) = send(&http(&t.a), method.clone(), &url, body.clone(), false).await;
        assert_eq!(
            status,
            403,
            "{shown} without admin: {}",
            String::from_utf8_lossy(&bytes)
        );
        let (status, _, bytes) =
            send(&http(&t.admin), method.clone(), &url, body.clone(), false).await;
        assert_eq!(
            status.as_u16(),
            *own,
            "{shown} as admin: {}",
            String::from_utf8_lossy(&bytes)
        );
    }

    // Idempotency keys are per tenant: b's "key-1" with another body is a new job of b's, not
    // a conflict with a's.
    let (b_client, _) = h.clients_for(&t.b);
    let b_digest = b_client
        .push_module(guests::exit_with(3))
        .await
        .unwrap()
        .digest;
    let b_job = b_client
        .submit(&Harness::spec(&b_digest), Some("key-1"))
        .await
        .expect("b's key-1 is b's own");
    assert_ne!(b_job.id, done.id);
    // b's listing, usage and batch filter show only b's jobs.
    let b_jobs = b_client.list_all_jobs(&Default::default()).await.unwrap();
    assert!(
        b_jobs
            .iter()
            .all(|j| j.id != done.id && j.id.to_string() != queued_id)
    );
    assert!(b_jobs.iter().any(|j| j.id == b_job.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_revocations_take_effect_within_a_second() {
    let h = Harness::start().await;
    h.tenant_token("t", &["jobs:read"]).await;
    let expires = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let r = h
        .http
        .post(format!("{}/v1/tokens", h.base))
        .json(&json!({ "tenant": "t", "scopes": ["jobs:read"], "expires_at": expires, "name": "short" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("nk_") && token.len() == 35, "{token}");
    let me = |tok: String| {
        let base = h.base.clone();
        async move {
            http_client(Some(&tok))
                .get(format!("{base}/v1/me"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(token.clone()).await, 200);
    // Only the hash is stored.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT secret_hash FROM api_tokens")
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM api_tokens t")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert!(
        !dump.contains(&token[3..]),
        "a token secret is stored in clear"
    );
    assert!(
        stored.contains(&sha2_256(&token)),
        "the token's SHA-256 is stored"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(me(token.clone()).await, 401, "an expired token still works");

    // Revocation: at most a second of cache.
    let token = h.tenant_token("t", &["jobs:read"]).await;
    assert_eq!(me(token.clone()).await, 200);
    let list: Value = h
        .http
        .get(format!("{}/v1/tokens?tenant=t", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            token.starts_with(t["hint"].as_str().unwrap())
                && t["revoked_at"].is_null()
                && t["name"] == ""
        })
        .unwrap()
        .clone();
    assert!(
        entry["last_used_at"].is_string(),
        "last_used_at is recorded: {entry}"
    );
    let r = h
        .http
        .delete(format!(
            "{}/v1/tokens/{}",
            h.base,
            entry["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        me(token).await,
        401,
        "a revoked token works after its cache second"
    );

    // Malformed headers and non-tokens are 401s too.
    for bad in [
        "Bearer",
        "Bearer nk_short",
        "Basic dXNlcjpwYXNz",
        "Bearer nk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/jobs", h.base))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
    }
    // The audit log has the token changes, newest first.
    let audit: Value = h
        .http
        .get(format!("{}/v1/audit", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions[0], "token.revoke", "{audit}");
    assert!(
        actions.contains(&"token.create") && actions.contains(&"tenant.create"),
        "{audit}"
    );
}

fn sha2_256(s: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_whole_requests_and_store_nothing() {
    let h = Harness::start().await;
    let token = h.tenant_token("q", &ALL_BUT_ADMIN).await;
    let (client, http) = h.clients_for(&token);
    let digest = client.push_module(guests::hello()).await.unwrap().digest;
    let set = |body: Value| {
        let http = h.http.clone();
        let base = h.base.clone();
        async move {
            let r = http
                .patch(format!("{base}/v1/tenants/q"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{body}");
            // Settings are cached for a second per process.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    };
    let parked = json!({ "module": digest, "queue": "parked" });
    let jobs_of_q = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE tenant_id = 'q'")
            .fetch_one(&h.db.pool)
            .await
            .unwrap()
    };

    // max_queued 3: a batch of 4 is refused whole; 3 fit; a 4th single job is refused.
    set(json!({ "max_queued": 3 })).await;
    let r = http
        .post(format!("{}/v1/batches", h.base))
        .json(&json!({ "jobs": [parked, parked, parked, parked] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "quota_exceeded", "{err}");
    assert_eq!(jobs_of_q().await, 0, "a refused batch stored jobs");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM batches WHERE tenant_id = 'q'")
            .fetch_one(&h.db.pool)
            .await
            .unwrap(),
        0
    );
    for _ in 0..3 {
        let r = http
            .post(format!("{}/v1/jobs", h.base))
            .json(&parked)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = http
        .post(format!("{}/v1/jobs", h.base))
        .json(&parked)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(jobs_of_q().await, 3);

    // A submit rate of 1/s with a burst of 2: a burst of 5 gets 2 in and 3 refused with
    // Retry-After; nothing of a refused request is stored.
    set(json!({ "max_queued": null, "submit_rate": 1.0, "submit_burst": 2 })).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = http
            .post(format!("{}/v1/jobs", h.base))
            .json(&parked)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            let secs: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&secs), "Retry-After {secs}");
            let err: Value = r.json().await.unwrap();
            assert_eq!(err["error"]["code"], "rate_limited");
            codes.push(429);
        } else {
            codes.push(r.status().as_u16());
        }
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 2, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 3, "{codes:?}");
    assert_eq!(jobs_of_q().await, 5);
    // A batch larger than the burst can never pass: 422, not a retry loop.
    let r = http
        .post(format!("{}/v1/batches", h.base))
        .json(&json!({ "jobs": [parked, parked, parked] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Limit maxima and bridge networking.
    set(
        json!({ "submit_rate": null, "max_memory_bytes": 64 << 20, "max_wall_time_ms": 2000,
        "max_cpu_time_ms": 1000, "allow_bridge": false }),
    )
    .await;
    for (spec, field) in [
        (
            json!({ "module": digest, "limits": { "memory_bytes": 128 << 20 } }),
            "limits.memory_bytes",
        ),
        (
            json!({ "module": digest, "limits": { "wall_time_ms": 5000 } }),
            "limits.wall_time_ms",
        ),
        (
            json!({ "image": "127.0.0.1:1/x:1", "limits": { "cpu_time_ms": 5000 } }),
            "limits.cpu_time_ms",
        ),
        (
            json!({ "image": "127.0.0.1:1/x:1", "network": "bridge" }),
            "network",
        ),
    ] {
        let r = http
            .post(format!("{}/v1/jobs", h.base))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{spec}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    // A job that sets nothing gets the tenant's maxima as its defaults.
    let r = http
        .post(format!("{}/v1/jobs", h.base))
        .json(&json!({ "module": digest }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job: Value = r.json().await.unwrap();
    let spec: Value = sqlx::query_scalar("SELECT spec FROM job_specs WHERE job_id = $1")
        .bind(Uuid::parse_str(job["id"].as_str().unwrap()).unwrap())
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    let limits = spec["limits"].to_string();
    assert!(
        limits.contains(&(64u64 << 20).to_string()) && limits.contains("2000"),
        "{spec}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_metered_per_tenant() {
    let h = Harness::start().await;
    let ta = h.tenant_token("ua", &ALL_BUT_ADMIN).await;
    let tb = h.tenant_token("ub", &ALL_BUT_ADMIN).await;
    let (a, a_http) = h.clients_for(&ta);
    let (b, b_http) = h.clients_for(&tb);
    // Jobs that take some milliseconds, so their wall time and byte-seconds are above zero.
    let hello = a
        .push_module(guests::sleep_then_print(30))
        .await
        .unwrap()
        .digest;
    let fail = a.push_module(guests::exit_with(2)).await.unwrap().digest;
    let mut ids = Vec::new();
    for d in [&hello, &hello, &fail] {
        ids.push(a.submit(&Harness::spec(d), None).await.unwrap().id);
    }
    for id in ids {
        common::wait_finished(&a, id, WAIT).await;
    }
    let usage: Value = a_http
        .get(format!("{}/v1/usage", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["tenant"], "ua");
    assert_eq!(usage["total"]["jobs_succeeded"], 2, "{usage}");
    assert_eq!(usage["total"]["jobs_failed"], 1, "{usage}");
    assert_eq!(usage["total"]["attempts"], 3, "{usage}");
    assert!(
        usage["total"]["wall_seconds"].as_f64().unwrap() > 0.0,
        "{usage}"
    );
    assert!(
        usage["total"]["memory_byte_seconds"].as_f64().unwrap() > 0.0,
        "{usage}"
    );
    assert!(
        usage["total"]["output_bytes"].as_i64().unwrap() > 0,
        "{usage}"
    );
    assert_eq!(usage["by_outcome"]["exited"]["attempts"], 3, "{usage}");
    // b has used nothing, and may not read a's usage.
    let bu: Value = b_http
        .get(format!("{}/v1/usage", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bu["total"]["attempts"], 0, "{bu}");
    let r = b_http
        .get(format!("{}/v1/usage?tenant=ua", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let _ = b;
    // The admin reads anyone's; a range before the jobs is empty.
    let r: Value = h
        .http
        .get(format!(
            "{}/v1/usage?tenant=ua&to=2020-01-01T00:00:00Z",
            h.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["total"]["attempts"], 0, "{r}");
    // The same figures as Prometheus series labelled by tenant.
    let text = h.metrics_text().await;
    let line = text
        .lines()
        .find(|l| l.starts_with("nekton_tenant_attempts_total{") && l.contains("tenant=\"ua\""))
        .unwrap_or_else(|| panic!("no per-tenant attempts series:\n{text}"));
    assert!(line.ends_with(" 3"), "{line}");
}

/// An API replica with a read-only state takes its admin token from the operator: two replicas
/// on one database both accept it (the second start adopts nothing new), and no admin.token file
/// is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_token_from_the_operator_is_adopted_by_every_replica() {
    let token = nekton::model::auth::new_token().unwrap().token;
    let t = token.clone();
    let h = Harness::start_with(move |o| o.bootstrap_token = Some(t)).await;
    assert_eq!(h.admin_token.as_deref(), Some(token.as_str()));
    assert!(!nekton::server::admin_token_path(h.state_dir.path()).exists());
    nekton::server::adopt_admin_token(&h.db.pool, &token)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "the second adoption stored another token");
    let me: Value = http_client(Some(&token))
        .get(format!("{}/v1/me", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["tenant"], "default");
    assert_eq!(me["scopes"].as_array().unwrap().len(), 5, "{me}");
    // Not a token: refused with the fix in the message.
    let err = nekton::server::adopt_admin_token(&h.db.pool, "secret")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nk_"), "{err}");
}
