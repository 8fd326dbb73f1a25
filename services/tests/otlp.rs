//! Tracing end to end: an API process and a worker process (`nekton api`, `nekton worker`) export
//! their spans over OTLP/HTTP to a receiver in this test (127.0.0.1). A job submitted with a W3C
//! `traceparent` keeps the caller's trace id, and the spans of its submission and of its attempt
//! on the worker (another process: the context travels in the job's row) form one trace:
//! caller → http.request → job.submit → job.claim → job.run / job.complete.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::guests;
use nekton::api::types::{Job, JobState};
use nekton::cli::Client;
use nekton::testing::TestDb;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_nekton");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One span as the receiver got it (OTLP/JSON: ids are hex strings).
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, Value>,
}

/// An OTLP/HTTP receiver on 127.0.0.1: keeps every span posted to /v1/traces.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let posts: Arc<Mutex<usize>> = Arc::default();
        let (s, p) = (spans.clone(), posts.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (spans, posts) = (s.clone(), p.clone());
                    async move {
                        *posts.lock().unwrap() += 1;
                        // OTLP/HTTP JSON; anything else is kept as a span named after the
                        // problem, which the waiting test shows.
                        let json = headers
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes() == b"application/json");
                        let found = match serde_json::from_slice::<Value>(&body) {
                            Ok(doc) if json => parse_spans(&doc),
                            _ => vec![Span {
                                name: format!("UNEXPECTED BODY ({headers:?})"),
                                trace_id: String::new(),
                                span_id: String::new(),
                                parent: String::new(),
                                attributes: HashMap::new(),
                            }],
                        };
                        spans.lock().unwrap().extend(found);
                        ([("content-type", "application/json")], "{}".to_string())
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans, posts }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    fn posts(&self) -> usize {
        *self.posts.lock().unwrap()
    }

    /// Waits until the spans of `trace` include every name in `names` (the exporters batch
    /// every 100 ms here).
    async fn wait_for(&self, trace: &str, names: &[&str]) -> Vec<Span> {
        let wanted: Vec<(&str, usize)> = names.iter().map(|n| (*n, 1)).collect();
        self.wait_for_n(trace, &wanted).await
    }

    /// Waits until the spans of `trace` include at least `n` spans named `name` for each pair.
    async fn wait_for_n(&self, trace: &str, wanted: &[(&str, usize)]) -> Vec<Span> {
        let names: Vec<&str> = wanted.iter().map(|(n, _)| *n).collect();
        let start = Instant::now();
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace)
                .collect();
            if wanted
                .iter()
                .all(|(name, n)| spans.iter().filter(|s| s.name == *name).count() >= *n)
            {
                return spans;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "after 30 s the receiver has, for trace {trace}, only {:?} (wanted {names:?}); all spans: {:#?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The spans of an ExportTraceServiceRequest in OTLP/JSON.
fn parse_spans(doc: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                let attributes = s["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let v = &a["value"];
                        let v = v
                            .get("stringValue")
                            .or_else(|| v.get("intValue"))
                            .or_else(|| v.get("boolValue"))
                            .cloned()
                            .unwrap_or(Value::Null);
                        (a["key"].as_str().unwrap_or_default().to_string(), v)
                    })
                    .collect();
                out.push(Span {
                    name: text("name"),
                    trace_id: text("traceId").to_lowercase(),
                    span_id: text("spanId").to_lowercase(),
                    parent: text("parentSpanId").to_lowercase(),
                    attributes,
                });
            }
        }
    }
    out
}

/// `nekton api` and `nekton worker` on the test database, with `extra` arguments and the
/// environment `env` (OTEL_BSP_SCHEDULE_DELAY=100: the exporters post every 100 ms).
struct Service {
    base: String,
    client: Client,
    http: reqwest::Client,
    _api: Proc,
    _worker: Proc,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn spawn(role: &str, db: &TestDb, state: &Path, args: &[String], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args([role, "--database-url", db.url()])
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("NEKTON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("starting {BIN} {role}: {e}")),
    )
}

impl Service {
    async fn start(db: &TestDb, extra: &[String], env: &[(&str, &str)]) -> Service {
        let port = common::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut api_args = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--auth".into(),
            "off".into(),
        ];
        api_args.extend_from_slice(extra);
        let api = spawn("api", db, dirs.0.path(), &api_args, env);
        // reqwest is built with rustls and no default crypto provider (as in nekton's client).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nekton api did not answer /healthz on {base} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut worker_args = vec![
            "--slots".to_string(),
            "4".into(),
            "--no-bridge-network".into(),
        ];
        worker_args.extend_from_slice(extra);
        let worker = spawn("worker", db, dirs.1.path(), &worker_args, env);
        Service {
            client: Client::with_token(&base, None).unwrap(),
            base,
            http,
            _api: api,
            _worker: worker,
            _dirs: dirs,
        }
    }

    /// POST /v1/jobs with the given headers; the job (201 expected).
    async fn submit(&self, body: &Value, headers: &[(&str, &str)]) -> Job {
        let mut req = self.http.post(format!("{}/v1/jobs", self.base)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("submit");
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 201, "submission refused: {text}");
        serde_json::from_str(&text).expect("a job")
    }

    async fn finished(&self, id: uuid::Uuid) -> Job {
        let job = common::wait_finished(&self.client, id, Duration::from_secs(60)).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        job
    }
}

fn is_trace_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        && s != "00000000000000000000000000000000"
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_spans_from_the_request_to_its_completion_form_the_callers_trace() {
    let receiver = Receiver::start().await;
    let db = TestDb::new().await;
    let svc = Service::start(
        &db,
        &["--otlp-endpoint".to_string(), receiver.url.clone()],
        &[],
    )
    .await;
    let digest = svc
        .client
        .push_module(guests::hello())
        .await
        .expect("module upload")
        .digest;

    // A caller's trace context: the job keeps the trace id, every span joins that trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{caller_span}-01");
    let job = svc
        .submit(
            &json!({ "module": digest }),
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    assert_eq!(
        job.trace_id.as_deref(),
        Some(trace),
        "the caller's trace id"
    );
    let done = svc.finished(job.id).await;
    assert_eq!(done.trace_id.as_deref(), Some(trace), "kept on the job");

    let spans = receiver
        .wait_for(
            trace,
            &[
                "http.request",
                "job.submit",
                "job.claim",
                "job.run",
                "job.complete",
            ],
        )
        .await;
    // The API's request span is the caller's span's child; the submission is the request's.
    let submit_request = spans
        .iter()
        .find(|s| s.name == "http.request" && s.parent == caller_span)
        .unwrap_or_else(|| panic!("an http.request span under the caller's span: {spans:#?}"));
    assert_eq!(
        submit_request.attributes.get("http.request.method"),
        Some(&json!("POST"))
    );
    assert_eq!(
        submit_request.attributes.get("url.path"),
        Some(&json!("/v1/jobs"))
    );
    let submit = one(&spans, "job.submit");
    assert_eq!(submit.parent, submit_request.span_id, "{spans:#?}");
    assert_eq!(
        submit.attributes.get("job.id"),
        Some(&json!(job.id.to_string()))
    );
    // The worker (another process) continues the trace under the submission.
    let claim = one(&spans, "job.claim");
    assert_eq!(claim.parent, submit.span_id, "job.claim under job.submit");
    assert_eq!(
        claim.attributes.get("job.id"),
        Some(&json!(job.id.to_string()))
    );
    let run = one(&spans, "job.run");
    assert_eq!(run.parent, claim.span_id, "job.run under job.claim");
    assert_eq!(run.attributes.get("backend"), Some(&json!("wasm")));
    assert_eq!(run.attributes.get("job.outcome"), Some(&json!("exited")));
    let complete = one(&spans, "job.complete");
    assert_eq!(
        complete.parent, claim.span_id,
        "job.complete under job.claim"
    );
    assert_eq!(
        complete.attributes.get("job.state"),
        Some(&json!("succeeded"))
    );

    // Without a traceparent (or with an invalid one, which is ignored, not refused), a job
    // starts a trace of its own, and its spans are in it.
    for headers in [
        vec![],
        vec![(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )],
        vec![("traceparent", "not a trace context")],
    ] {
        let own = svc.submit(&json!({ "module": digest }), &headers).await;
        let id = own.trace_id.clone().expect("a trace id");
        assert!(is_trace_id(&id), "{id:?} is 32 lowercase hex digits");
        assert_ne!(id, trace, "a new trace for {headers:?}");
        svc.finished(own.id).await;
        let spans = receiver
            .wait_for(&id, &["http.request", "job.submit", "job.claim"])
            .await;
        let request = one(&spans, "http.request");
        assert_eq!(request.parent, "", "a root span: {spans:#?}");
        assert_eq!(one(&spans, "job.submit").parent, request.span_id);
        assert_eq!(
            one(&spans, "job.claim").parent,
            one(&spans, "job.submit").span_id
        );
    }

    // A batch is one trace: every job keeps it.
    let batch_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = svc
        .http
        .post(format!("{}/v1/batches", svc.base))
        .header(
            "traceparent",
            format!("00-{batch_trace}-b7ad6b7169203331-01"),
        )
        .json(&json!({ "jobs": [{ "module": digest }, { "module": digest }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    for id in created["job_ids"].as_array().expect("job ids") {
        let id: uuid::Uuid = id.as_str().unwrap().parse().unwrap();
        let job = svc.finished(id).await;
        assert_eq!(job.trace_id.as_deref(), Some(batch_trace));
    }
    let spans = receiver
        .wait_for_n(batch_trace, &[("job.submit", 1), ("job.claim", 2)])
        .await;
    let submit = one(&spans, "job.submit");
    let claims: Vec<&Span> = spans.iter().filter(|s| s.name == "job.claim").collect();
    assert_eq!(claims.len(), 2, "{spans:#?}");
    assert!(claims.iter().all(|c| c.parent == submit.span_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_nothing_is_exported_and_jobs_still_get_trace_ids() {
    let receiver = Receiver::start().await;
    let db = TestDb::new().await;
    // The SDK's own per-signal variable points at the receiver: only nekton's flag (or
    // OTEL_EXPORTER_OTLP_ENDPOINT) turns the export on, so nothing may arrive.
    let traces_url = format!("{}/v1/traces", receiver.url);
    let svc = Service::start(
        &db,
        &[],
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_url.as_str())],
    )
    .await;
    let digest = svc
        .client
        .push_module(guests::hello())
        .await
        .expect("module upload")
        .digest;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let job = svc
        .submit(
            &json!({ "module": digest }),
            &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
        )
        .await;
    assert_eq!(job.trace_id.as_deref(), Some(trace));
    let own = svc.submit(&json!({ "module": digest }), &[]).await;
    let id = own.trace_id.clone().expect("a trace id");
    assert!(is_trace_id(&id) && id != trace, "{id:?}");
    svc.finished(job.id).await;
    svc.finished(own.id).await;
    // Ten times the exporters' batch delay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.posts(),
        0,
        "spans were exported: {:#?}",
        receiver.spans()
    );
}
