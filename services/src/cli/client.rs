//! A typed async client for nekton's v1 HTTP API, used by the CLI and by the integration tests.
//!
//! Every method returns `anyhow::Result`; a non-2xx answer becomes an [`ApiError`] (downcast the
//! `anyhow::Error` to read its status, code, message and field). Log and batch event streams
//! (`text/event-stream`) are followed with automatic reconnection: a dropped connection is resumed
//! with `Last-Event-ID`, so a follower never loses or duplicates an event.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use reqwest::{StatusCode, Url, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::api::types::{
    ArtifactList, Batch, BatchCancelled, BatchCreated, BatchPage, BatchSpec, CreatedWebhook,
    Delivery, DeliveryPage, ErrorBody, ExitEvent, GcResult, Image, ImageList, ImportResult, Job,
    JobPage, JobSpec, JobState, LogEvent, Module, ModulePage, NewWebhook, PullBlob, PullPolicyView,
    PullRequest, PullResolvedEvent, PullResult, StateEvent, VersionInfo, Webhook,
};

/// The server the CLI talks to when neither `--server` nor `NEKTON_SERVER` says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Time allowed to open a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence tolerated on a connection (an event stream is then resumed).
const READ_TIMEOUT: Duration = Duration::from_secs(90);
/// Time allowed for an ordinary request/response exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for a module upload or a plain log download.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Time allowed for an image pull or import (large images over slow links).
const PULL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Reconnection attempts in a row (without an event received in between) before a follower gives
/// up, and the backoff between them.
const MAX_STREAM_FAILURES: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection that stayed up this long counts as healthy even if it carried no event.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(5);

/// An error answer (4xx/5xx) from the server, in the API's one error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code.
    pub status: u16,
    /// The server's machine-readable code (`not_found`, `validation_failed`, ...), or `http_<status>`
    /// when the body was not the API's error shape.
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
    /// The offending request field, when the server named one.
    pub field: Option<String>,
}

impl ApiError {
    /// Builds the error from a status and a response body.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => Self {
                status,
                code: b.error.code.to_string(),
                message: b.error.message,
                field: b.error.field,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("no error message")
                        .to_string()
                } else {
                    truncate_chars(text, 500)
                };
                Self {
                    status,
                    code: format!("http_{status}"),
                    message,
                    field: None,
                }
            }
        }
    }

    async fn from_response(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Self::from_body(status, &body)
    }

    /// True for errors that retrying the same request may cure (5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        self.status >= 500 || self.status == 408 || self.status == 429
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server said {} {}: {}",
            self.status, self.code, self.message
        )?;
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// One of a job's two output streams (the model's one stream type).
/// Collects the items of every page from `cursor` on: `page(cursor)` fetches one page and its
/// `next_cursor`; it stops at the last page (or if the server repeats a cursor).
async fn all_pages<T, F, Fut>(mut cursor: Option<String>, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    let mut items = Vec::new();
    loop {
        let (got, next) = page(cursor.clone()).await?;
        items.extend(got);
        match next {
            Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
            _ => return Ok(items),
        }
    }
}

pub use crate::model::OutputStream as StdStream;

/// Decodes the payload of an SSE `log` event into the stream it belongs to and its raw bytes.
pub fn decode_log_event(ev: &LogEvent) -> Result<(StdStream, Vec<u8>)> {
    let stream = StdStream::parse(&ev.stream).ok_or_else(|| {
        anyhow!(
            "log event names stream {:?}; expected \"stdout\" or \"stderr\"",
            ev.stream
        )
    })?;
    let bytes = crate::api::types::bytes_of(ev.text.as_deref(), ev.base64.as_deref())
        .map_err(|e| anyhow!("log event {e}"))?;
    Ok((stream, bytes))
}

/// What a plain log read selects (`GET /v1/jobs/{id}/logs` query parameters).
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only this stream.
    pub stream: Option<StdStream>,
    /// Only the last N lines.
    pub tail: Option<u32>,
    /// Only output stored at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Each line prefixed with its time.
    pub timestamps: bool,
}

/// One event of a job's log stream (`GET /v1/jobs/{id}/logs`, SSE), with the event's `id:`.
#[derive(Debug, Clone, PartialEq)]
pub enum LogStreamEvent {
    /// The job changed state (queued, running, ...).
    State { id: String, event: StateEvent },
    /// A chunk of output, decoded to the exact bytes the job wrote.
    Log {
        id: String,
        stream: StdStream,
        bytes: Vec<u8>,
        /// When the server stored it (absent for output stored before it recorded times).
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The job finished; always the last event.
    Exit { id: String, event: Box<ExitEvent> },
    /// A test-suite job's `build_finished`, `case_started` or `case_finished`.
    Suite {
        id: String,
        event: Box<crate::grading::SuiteEvent>,
    },
}

impl LogStreamEvent {
    /// The SSE event id; pass it as `last_event_id` to resume right after this event.
    pub fn id(&self) -> &str {
        match self {
            Self::State { id, .. }
            | Self::Log { id, .. }
            | Self::Exit { id, .. }
            | Self::Suite { id, .. } => id,
        }
    }
}

/// One event of a batch's completion stream (`GET /v1/batches/{id}/events`, SSE).
#[derive(Debug, Clone)]
pub enum BatchStreamEvent {
    /// A job of the batch reached a final state.
    Job(Box<Job>),
    /// Every job of the batch is final; always the last event.
    Done(Batch),
}

/// Filters for `GET /v1/jobs`. Empty fields are not sent.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    /// Each pair is sent as one `label=key=value` parameter.
    pub labels: Vec<(String, String)>,
    pub batch: Option<Uuid>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Filters for `GET /v1/batches`. Empty fields are not sent.
#[derive(Debug, Clone, Default)]
pub struct BatchFilter {
    /// Each pair is sent as one `label=key=value` parameter.
    pub labels: Vec<(String, String)>,
    /// Only finished (`true`) or unfinished (`false`) batches.
    pub done: Option<bool>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// A client for one nekton API server. Cheap to clone.
/// Installs rustls' ring crypto provider for this process (idempotent). The workspace builds
/// reqwest with rustls but without a default provider (oci-client's TLS feature), and reqwest
/// panics when it builds a client while none is installed.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`; a path prefix is kept),
    /// without a token.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_token(base_url, None)
    }

    /// A client that sends `Authorization: Bearer <token>` on every request.
    pub fn with_token(base_url: &str, token: Option<&str>) -> Result<Self> {
        let trimmed = base_url.trim();
        let mut base = Url::parse(trimmed).with_context(|| {
            format!(
                "invalid server URL {trimmed:?}: expected something like {DEFAULT_SERVER} \
                 (set it with --server or NEKTON_SERVER)"
            )
        })?;
        match base.scheme() {
            "http" => {}
            "https" => anyhow::bail!(
                "server URL {trimmed:?} uses https, which this build of nekton does not speak; \
                 use an http:// URL (e.g. through a local TLS-terminating proxy)"
            ),
            other => anyhow::bail!(
                "server URL {trimmed:?} has scheme {other:?}; use an http:// URL like {DEFAULT_SERVER}"
            ),
        }
        if base.host_str().is_none_or(str::is_empty) {
            anyhow::bail!("server URL {trimmed:?} has no host; use a URL like {DEFAULT_SERVER}");
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        base.set_fragment(None);
        install_crypto_provider();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .context("the API token holds characters an HTTP header cannot carry")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("nekton-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { base, http })
    }

    /// The server's base URL (always ending in `/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The underlying HTTP client, for requests this type has no method for.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The absolute URL of an API path such as `v1/jobs` (a leading `/` is ignored).
    pub fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("cannot build a URL for {path:?} below {}", self.base))
    }

    /// `POST /v1/modules`: uploads a Wasm module; returns its record (digest) whether it was new
    /// or already stored.
    pub async fn push_module(&self, wasm: Vec<u8>) -> Result<Module> {
        let url = self.url("v1/modules")?;
        let req = self
            .http
            .post(url.clone())
            .timeout(TRANSFER_TIMEOUT)
            .header(header::CONTENT_TYPE, "application/wasm")
            .body(wasm);
        self.send_json(req, &url).await
    }

    /// `POST /v1/jobs`: submits a job. With an idempotency key, a retry of the same submission
    /// returns the job created the first time.
    pub async fn submit(&self, spec: &JobSpec, idempotency_key: Option<&str>) -> Result<Job> {
        self.post_job(spec, idempotency_key, None).await
    }

    /// `POST /v1/jobs?wait=SECS`: submits and answers once the job has finished (its `output`
    /// set) or when `wait_secs` (1–60) ran out (the job as it was then).
    pub async fn submit_wait(
        &self,
        spec: &JobSpec,
        idempotency_key: Option<&str>,
        wait_secs: u32,
    ) -> Result<Job> {
        self.post_job(spec, idempotency_key, Some(wait_secs)).await
    }

    /// `POST /v1/jobs`, with `?wait=` when `wait_secs` is given (the request's timeout grows by
    /// the wait).
    async fn post_job(
        &self,
        spec: &JobSpec,
        idempotency_key: Option<&str>,
        wait_secs: Option<u32>,
    ) -> Result<Job> {
        let mut url = self.url("v1/jobs")?;
        let mut timeout = REQUEST_TIMEOUT;
        if let Some(secs) = wait_secs {
            url.query_pairs_mut().append_pair("wait", &secs.to_string());
            timeout += Duration::from_secs(secs.into());
        }
        let mut req = self.http.post(url.clone()).timeout(timeout).json(spec);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        self.send_json(req, &url).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn get_job(&self, id: Uuid) -> Result<Job> {
        let url = self.url(&format!("v1/jobs/{id}"))?;
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `GET /v1/jobs`: one page of jobs, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<JobPage> {
        let mut url = self.url("v1/jobs")?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(state) = filter.state {
                q.append_pair("state", state.as_str());
            }
            for (k, v) in &filter.labels {
                q.append_pair("label", &format!("{k}={v}"));
            }
            if let Some(batch) = filter.batch {
                q.append_pair("batch", &batch.to_string());
            }
            if let Some(cursor) = &filter.cursor {
                q.append_pair("cursor", cursor);
            }
            if let Some(limit) = filter.limit {
                q.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// Every job matching `filter`, following `next_cursor` from `filter.cursor` to the last page.
    pub async fn list_all_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        all_pages(filter.cursor.clone(), |cursor| {
            let filter = JobFilter {
                cursor,
                ..filter.clone()
            };
            async move {
                let page = self.list_jobs(&filter).await?;
                Ok((page.jobs, page.next_cursor))
            }
        })
        .await
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: Uuid) -> Result<Job> {
        let url = self.url(&format!("v1/jobs/{id}/cancel"))?;
        let req = self.http.post(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `GET /v1/jobs/{id}/artifacts`: the artifacts of the job's latest attempt.
    pub async fn list_artifacts(&self, id: Uuid) -> Result<ArtifactList> {
        let url = self.url(&format!("v1/jobs/{id}/artifacts"))?;
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `GET /v1/jobs/{id}/artifacts/{path}`: one artifact's stored bytes as a stream of chunks,
    /// with what the response headers say about them.
    pub async fn artifact(&self, id: Uuid, path: &str) -> Result<ArtifactDownload> {
        let mut url = self.url(&format!("v1/jobs/{id}/artifacts"))?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("the server URL {} cannot take a path", self.base))?
            .extend(path.split('/'));
        let req = self.http.get(url.clone()).timeout(TRANSFER_TIMEOUT);
        let resp = self.send(req, &url).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let sha256 = header("x-nekton-sha256");
        let truncated = header("x-nekton-truncated").is_some_and(|v| v == "true");
        let size = header("x-nekton-size").and_then(|v| v.parse().ok());
        let length = resp.content_length();
        let what = url.to_string();
        Ok(ArtifactDownload {
            sha256,
            truncated,
            size,
            length,
            body: resp
                .bytes_stream()
                .map(move |r| r.with_context(|| format!("reading the artifact from {what} failed")))
                .boxed(),
        })
    }

    /// `GET /v1/jobs/{id}/logs` with `query`'s parameters.
    fn logs_url(&self, id: Uuid, query: &LogQuery) -> Result<Url> {
        let mut url = self.url(&format!("v1/jobs/{id}/logs"))?;
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(s) = query.stream {
                pairs.append_pair("stream", s.as_str());
            }
            if let Some(n) = query.tail {
                pairs.append_pair("tail", &n.to_string());
            }
            if let Some(t) = query.since {
                pairs.append_pair(
                    "since",
                    &t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                );
            }
            if query.timestamps {
                pairs.append_pair("timestamps", "true");
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }

    /// `GET /v1/jobs/{id}/logs` without SSE: the stored log bytes of the latest attempt as a
    /// stream of chunks, as `query` selects them.
    pub async fn plain_logs(
        &self,
        id: Uuid,
        query: &LogQuery,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let url = self.logs_url(id, query)?;
        let req = self.http.get(url.clone()).timeout(TRANSFER_TIMEOUT);
        let resp = self.send(req, &url).await?;
        let what = url.to_string();
        Ok(resp
            .bytes_stream()
            .map(move |r| r.with_context(|| format!("reading the log from {what} failed")))
            .boxed())
    }

    /// Like [`Client::plain_logs`] for the whole log (or one stream), collected into one buffer.
    pub async fn plain_log_bytes(&self, id: Uuid, stream: Option<StdStream>) -> Result<Vec<u8>> {
        let query = LogQuery {
            stream,
            ..LogQuery::default()
        };
        let mut chunks = self.plain_logs(id, &query).await?;
        let mut out = Vec::new();
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Follows `GET /v1/jobs/{id}/logs` as SSE: every event after `last_event_id` (from the start
    /// when `None`) up to and including `Exit`, after which the stream ends. A connection lost
    /// before `Exit` is resumed with `Last-Event-ID`; the stream yields an error (and then ends)
    /// only when the server refuses the request or stays unreachable after several retries.
    pub fn follow_logs(
        &self,
        id: Uuid,
        last_event_id: Option<String>,
    ) -> impl Stream<Item = Result<LogStreamEvent>> + Send + 'static + use<> {
        self.follow_logs_from(id, &LogQuery::default(), last_event_id)
    }

    /// [`Client::follow_logs`] starting from `query`'s `tail` lines or `since` time (its
    /// `stream` and `timestamps` are the caller's to apply: the stream carries both streams and
    /// each chunk's time).
    pub fn follow_logs_from(
        &self,
        id: Uuid,
        query: &LogQuery,
        last_event_id: Option<String>,
    ) -> impl Stream<Item = Result<LogStreamEvent>> + Send + 'static + use<> {
        let query = LogQuery {
            stream: None,
            timestamps: false,
            ..query.clone()
        };
        let url = self.logs_url(id, &query);
        resumable_sse(
            self.clone(),
            url,
            format!("the log stream of job {id}"),
            last_event_id,
            parse_log_sse,
        )
    }

    /// `POST /v1/batches`.
    pub async fn submit_batch(&self, spec: &BatchSpec) -> Result<BatchCreated> {
        let url = self.url("v1/batches")?;
        let req = self
            .http
            .post(url.clone())
            .timeout(TRANSFER_TIMEOUT)
            .json(spec);
        self.send_json(req, &url).await
    }

    /// `GET /v1/batches/{id}`.
    pub async fn get_batch(&self, id: Uuid) -> Result<Batch> {
        let url = self.url(&format!("v1/batches/{id}"))?;
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `GET /v1/batches`: one page of the tenant's batches, newest first.
    pub async fn list_batches(&self, filter: &BatchFilter) -> Result<BatchPage> {
        let mut url = self.url("v1/batches")?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &filter.labels {
                q.append_pair("label", &format!("{k}={v}"));
            }
            if let Some(done) = filter.done {
                q.append_pair("done", if done { "true" } else { "false" });
            }
            if let Some(cursor) = &filter.cursor {
                q.append_pair("cursor", cursor);
            }
            if let Some(limit) = filter.limit {
                q.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// Every batch matching `filter`, following `next_cursor` from `filter.cursor` to the end.
    pub async fn list_all_batches(&self, filter: &BatchFilter) -> Result<Vec<Batch>> {
        all_pages(filter.cursor.clone(), |cursor| {
            let filter = BatchFilter {
                cursor,
                ..filter.clone()
            };
            async move {
                let page = self.list_batches(&filter).await?;
                Ok((page.batches, page.next_cursor))
            }
        })
        .await
    }

    /// Every module of the tenant from `cursor` on, `limit` per request.
    pub async fn list_all_modules(
        &self,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> Result<Vec<Module>> {
        all_pages(cursor, |cursor| async move {
            let page = self.list_modules(cursor.as_deref(), limit).await?;
            Ok((page.modules, page.next_cursor))
        })
        .await
    }

    /// `POST /v1/batches/{id}/cancel`.
    pub async fn cancel_batch(&self, id: Uuid) -> Result<BatchCancelled> {
        let url = self.url(&format!("v1/batches/{id}/cancel"))?;
        let req = self.http.post(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `GET /v1/modules`: one page of the tenant's modules, newest first.
    pub async fn list_modules(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ModulePage> {
        let mut url = self.url("v1/modules")?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(cursor) = cursor {
                q.append_pair("cursor", cursor);
            }
            if let Some(limit) = limit {
                q.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `GET /v1/version`.
    pub async fn version(&self) -> Result<VersionInfo> {
        let url = self.url("v1/version")?;
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// Follows `GET /v1/batches/{id}/events`: a `Job` per job that reached a final state (in the
    /// order they finished), then `Done`, after which the stream ends. Reconnects like
    /// [`Client::follow_logs`], resuming after the last event received.
    pub fn batch_events(
        &self,
        id: Uuid,
    ) -> impl Stream<Item = Result<BatchStreamEvent>> + Send + 'static {
        let url = self.url(&format!("v1/batches/{id}/events"));
        resumable_sse(
            self.clone(),
            url,
            format!("the event stream of batch {id}"),
            None,
            parse_batch_sse,
        )
    }

    /// `POST /v1/images/pull`: pulls an image on the server's worker host and waits for it.
    pub async fn pull_image(&self, reference: &str, always: bool) -> Result<PullResult> {
        let url = self.url("v1/images/pull")?;
        let req = self
            .http
            .post(url.clone())
            .timeout(PULL_TIMEOUT)
            .json(&pull_request(reference, always));
        self.send_json(req, &url).await
    }

    /// `POST /v1/images/pull` with `Accept: text/event-stream`: the pull's progress events, ending
    /// with [`PullStreamEvent::Done`] (or an `Err` carrying the server's [`ApiError`]). Not
    /// resumed on a dropped connection (the pull goes on on the server; pull again to join it).
    pub async fn pull_image_events(
        &self,
        reference: &str,
        always: bool,
    ) -> Result<BoxStream<'static, Result<PullStreamEvent>>> {
        let url = self.url("v1/images/pull")?;
        let req = self
            .http
            .post(url.clone())
            .header(header::ACCEPT, "text/event-stream")
            .json(&pull_request(reference, always));
        let resp = self.send(req, &url).await?;
        let what = url.to_string();
        let events = resp.bytes_stream().eventsource();
        Ok(events
            .filter_map(move |ev| {
                let what = what.clone();
                async move {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            return Some(Err(anyhow!("{e}")
                                .context(format!("reading the pull stream from {what}"))));
                        }
                    };
                    parse_pull_sse(&ev).transpose()
                }
            })
            .boxed())
    }

    /// `GET /v1/images`.
    pub async fn list_images(&self) -> Result<ImageList> {
        let url = self.url("v1/images")?;
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `GET /v1/images/{reference}`.
    pub async fn get_image(&self, reference: &str) -> Result<Image> {
        let url = self.url(&format!("v1/images/{}", encode_reference(reference)))?;
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `DELETE /v1/images/{reference}`: removes the image's record; returns it.
    pub async fn delete_image(&self, reference: &str) -> Result<Image> {
        let url = self.url(&format!("v1/images/{}", encode_reference(reference)))?;
        let req = self.http.delete(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `POST /v1/images/import`: uploads a tar of an OCI image layout.
    pub async fn import_image(
        &self,
        tar: reqwest::Body,
        reference: Option<&str>,
    ) -> Result<ImportResult> {
        let mut url = self.url("v1/images/import")?;
        if let Some(r) = reference {
            url.query_pairs_mut().append_pair("reference", r);
        }
        let req = self
            .http
            .post(url.clone())
            .timeout(PULL_TIMEOUT)
            .header(header::CONTENT_TYPE, "application/x-tar")
            .body(tar);
        self.send_json(req, &url).await
    }

    /// `POST /v1/images/gc`.
    pub async fn gc_images(&self) -> Result<GcResult> {
        let url = self.url("v1/images/gc")?;
        let req = self.http.post(url.clone()).timeout(TRANSFER_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `POST /v1/webhooks`: creates an endpoint; the answer holds its secret (shown once).
    pub async fn create_webhook(&self, new: &NewWebhook) -> Result<CreatedWebhook> {
        let url = self.url("v1/webhooks")?;
        let req = self
            .http
            .post(url.clone())
            .timeout(REQUEST_TIMEOUT)
            .json(new);
        self.send_json(req, &url).await
    }

    /// `GET /v1/webhooks`.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        let url = self.url("v1/webhooks")?;
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `DELETE /v1/webhooks/{id}`.
    pub async fn delete_webhook(&self, id: Uuid) -> Result<Webhook> {
        let url = self.url(&format!("v1/webhooks/{id}"))?;
        let req = self.http.delete(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `GET /v1/webhooks/{id}/deliveries`: one page, newest first.
    pub async fn webhook_deliveries(
        &self,
        id: Uuid,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DeliveryPage> {
        let mut url = self.url(&format!("v1/webhooks/{id}/deliveries"))?;
        if let Some(c) = cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        if let Some(l) = limit {
            url.query_pairs_mut().append_pair("limit", &l.to_string());
        }
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// `POST /v1/webhooks/{id}/deliveries/{delivery}/redeliver`.
    pub async fn redeliver_webhook(&self, id: Uuid, delivery: Uuid) -> Result<Delivery> {
        let url = self.url(&format!("v1/webhooks/{id}/deliveries/{delivery}/redeliver"))?;
        let req = self.http.post(url.clone()).timeout(REQUEST_TIMEOUT);
        self.send_json(req, &url).await
    }

    /// Sends a request; a transport failure or a non-2xx answer becomes a descriptive error.
    async fn send(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| self.transport_error(e, url))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(ApiError::from_response(resp).await.into())
        }
    }

    /// Any JSON endpoint: `method path` with an optional JSON body; the answer as JSON.
    pub async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = self.url(path)?;
        let mut req = self
            .http
            .request(method, url.clone())
            .timeout(REQUEST_TIMEOUT);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send_json(req, &url).await
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<T> {
        let resp = self.send(req, url).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(e, url))?;
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "the answer from {url} is not the JSON this client expects ({}); is {} a nekton \
                 server of the same version as this CLI?",
                describe_body(&body),
                self.base
            )
        })
    }

    fn transport_error(&self, e: reqwest::Error, url: &Url) -> anyhow::Error {
        let msg = if e.is_connect() {
            format!(
                "cannot connect to the nekton server at {}; is it running (`nekton serve`)? \
                 Point the CLI at another server with --server URL or NEKTON_SERVER",
                self.base
            )
        } else if e.is_timeout() {
            format!(
                "the nekton server at {} did not answer in time ({url})",
                self.base
            )
        } else {
            format!("the request to {url} failed")
        };
        anyhow::Error::new(e).context(msg)
    }
}

/// An artifact being downloaded ([`Client::artifact`]).
pub struct ArtifactDownload {
    /// SHA-256 of the stored bytes in hex (`X-Nekton-Sha256`).
    pub sha256: Option<String>,
    /// A cap cut the file: the body is its first bytes (`X-Nekton-Truncated`).
    pub truncated: bool,
    /// The file's size when collected (`X-Nekton-Size`).
    pub size: Option<u64>,
    /// The body's length (`Content-Length`).
    pub length: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl fmt::Debug for ArtifactDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactDownload")
            .field("sha256", &self.sha256)
            .field("truncated", &self.truncated)
            .field("size", &self.size)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// One event of an image pull's progress stream (`POST /v1/images/pull`, SSE).
#[derive(Debug, Clone, PartialEq)]
pub enum PullStreamEvent {
    Resolved(PullResolvedEvent),
    Progress(PullBlob),
    Cached(PullBlob),
    Extracting(PullBlob),
    Extracted(PullBlob),
    Done(Box<PullResult>),
}

fn parse_pull_sse(ev: &Event) -> Result<Option<PullStreamEvent>> {
    Ok(Some(match ev.event.as_str() {
        "resolved" => PullStreamEvent::Resolved(parse_data(ev)?),
        "progress" => PullStreamEvent::Progress(parse_data(ev)?),
        "cached" => PullStreamEvent::Cached(parse_data(ev)?),
        "extracting" => PullStreamEvent::Extracting(parse_data(ev)?),
        "extracted" => PullStreamEvent::Extracted(parse_data(ev)?),
        "done" => PullStreamEvent::Done(Box::new(parse_data(ev)?)),
        "error" => {
            let body: ErrorBody = parse_data(ev)?;
            return Err(ApiError {
                status: 200,
                code: body.error.code.to_string(),
                message: body.error.message,
                field: body.error.field,
            }
            .into());
        }
        _ => return Ok(None),
    }))
}

fn pull_request(reference: &str, always: bool) -> PullRequest {
    PullRequest {
        reference: reference.to_string(),
        policy: Some(if always {
            PullPolicyView::Always
        } else {
            PullPolicyView::IfNotPresent
        }),
    }
}

/// An image reference as one URL path segment: everything but unreserved characters, `:` and
/// `@` percent-encoded (so `/` becomes `%2F`).
pub fn encode_reference(reference: &str) -> String {
    let mut out = String::with_capacity(reference.len() + 8);
    for b in reference.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A short description of a response body for error messages.
fn describe_body(body: &[u8]) -> String {
    if body.is_empty() {
        return "empty body".to_string();
    }
    format!(
        "body starts {:?}",
        truncate_chars(&String::from_utf8_lossy(body), 120)
    )
}

/// The first `max` characters of `s`, with `…` when cut.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// What a parsed SSE event means to a follower.
enum Parsed<T> {
    /// Deliver it and go on.
    Item(T),
    /// Deliver it; it is the last one.
    Final(T),
    /// Not an event this client knows (keep-alive, future event type): skip it.
    Skip,
}

type SseParser<T> = fn(&Event) -> Result<Parsed<T>>;
type SseEvents = BoxStream<'static, Result<Event, EventStreamError<reqwest::Error>>>;

fn parse_data<T: DeserializeOwned>(ev: &Event) -> Result<T> {
    serde_json::from_str(&ev.data).with_context(|| {
        format!(
            "the server sent a malformed `{}` event (id {:?}): {}",
            ev.event,
            ev.id,
            truncate_chars(&ev.data, 200)
        )
    })
}

fn parse_log_sse(ev: &Event) -> Result<Parsed<LogStreamEvent>> {
    let id = ev.id.clone();
    Ok(match ev.event.as_str() {
        "state" => Parsed::Item(LogStreamEvent::State {
            id,
            event: parse_data(ev)?,
        }),
        "log" => {
            let log: LogEvent = parse_data(ev)?;
            let (stream, bytes) = decode_log_event(&log)
                .with_context(|| format!("the server sent a malformed `log` event (id {id:?})"))?;
            Parsed::Item(LogStreamEvent::Log {
                id,
                stream,
                bytes,
                at: log.at,
            })
        }
        "exit" => Parsed::Final(LogStreamEvent::Exit {
            id,
            event: Box::new(parse_data(ev)?),
        }),
        "build_finished" => Parsed::Item(LogStreamEvent::Suite {
            id,
            event: Box::new(crate::grading::SuiteEvent::BuildFinished(parse_data(ev)?)),
        }),
        "case_started" => Parsed::Item(LogStreamEvent::Suite {
            id,
            event: Box::new(crate::grading::SuiteEvent::CaseStarted(parse_data(ev)?)),
        }),
        "case_finished" => Parsed::Item(LogStreamEvent::Suite {
            id,
            event: Box::new(crate::grading::SuiteEvent::CaseFinished(parse_data(ev)?)),
        }),
        _ => Parsed::Skip,
    })
}

fn parse_batch_sse(ev: &Event) -> Result<Parsed<BatchStreamEvent>> {
    Ok(match ev.event.as_str() {
        "job" => Parsed::Item(BatchStreamEvent::Job(Box::new(parse_data(ev)?))),
        "done" => Parsed::Final(BatchStreamEvent::Done(parse_data(ev)?)),
        _ => Parsed::Skip,
    })
}

/// Why connecting an event stream failed.
enum ConnectError {
    /// Worth another try (transport failure, 5xx).
    Transient(anyhow::Error),
    /// Retrying cannot help (4xx, not an event stream).
    Fatal(anyhow::Error),
}

/// The state of one resumable SSE follower.
struct SseFollower<T> {
    client: Client,
    url: Url,
    what: String,
    last_id: Option<String>,
    events: Option<SseEvents>,
    connected_at: Instant,
    failures: u32,
    finished: bool,
    parse: SseParser<T>,
}

fn resumable_sse<T: Send + 'static>(
    client: Client,
    url: Result<Url>,
    what: String,
    last_id: Option<String>,
    parse: SseParser<T>,
) -> impl Stream<Item = Result<T>> + Send + 'static {
    let start: Result<SseFollower<T>> = url.map(|url| SseFollower {
        client,
        url,
        what,
        last_id: last_id.filter(|id| !id.is_empty()),
        events: None,
        connected_at: Instant::now(),
        failures: 0,
        finished: false,
        parse,
    });
    futures::stream::unfold(Some(start), |state| async move {
        match state? {
            Err(e) => Some((Err(e), None)),
            Ok(mut f) => {
                let item = f.next_item().await?;
                Some((item, Some(Ok(f))))
            }
        }
    })
}

/// Opens an event stream (resuming after `last_id`). A free function so that the future holds
/// no reference to the follower's (non-`Sync`) open stream.
async fn connect_sse(
    client: &Client,
    url: &Url,
    last_id: Option<&str>,
) -> Result<SseEvents, ConnectError> {
    let mut req = client
        .http
        .get(url.clone())
        .header(header::ACCEPT, "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| ConnectError::Transient(client.transport_error(e, url)))?;
    if !resp.status().is_success() {
        let err = ApiError::from_response(resp).await;
        return Err(if err.is_transient() {
            ConnectError::Transient(err.into())
        } else {
            ConnectError::Fatal(err.into())
        });
    }
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !ctype.starts_with("text/event-stream") {
        return Err(ConnectError::Fatal(anyhow!(
            "{url} answered with content type {ctype:?} instead of an event stream \
                 (text/event-stream); is {} a nekton server?",
            client.base
        )));
    }
    Ok(resp.bytes_stream().eventsource().boxed())
}

impl<T> SseFollower<T> {
    /// Counts one failure and sleeps before the next attempt; false when it is time to give up.
    async fn back_off(&mut self) -> bool {
        if self.connected_at.elapsed() >= HEALTHY_CONNECTION {
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures > MAX_STREAM_FAILURES {
            return false;
        }
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(MAX_BACKOFF);
        tokio::time::sleep(delay).await;
        true
    }

    fn give_up(&mut self, err: anyhow::Error) -> Option<Result<T>> {
        self.finished = true;
        self.events = None;
        let resume = match &self.last_id {
            Some(id) => format!("the last event received had id {id:?}"),
            None => "no event was received".to_string(),
        };
        Some(Err(err.context(format!(
            "lost {} and could not resume it after {MAX_STREAM_FAILURES} attempts ({resume})",
            self.what
        ))))
    }

    async fn next_item(&mut self) -> Option<Result<T>> {
        loop {
            if self.finished {
                return None;
            }
            let Some(events) = self.events.as_mut() else {
                self.connected_at = Instant::now();
                match connect_sse(&self.client, &self.url, self.last_id.as_deref()).await {
                    Ok(events) => self.events = Some(events),
                    Err(ConnectError::Fatal(e)) => {
                        self.finished = true;
                        return Some(Err(e.context(format!("cannot follow {}", self.what))));
                    }
                    Err(ConnectError::Transient(e)) => {
                        if !self.back_off().await {
                            return self.give_up(e);
                        }
                    }
                }
                continue;
            };
            let lost = match events.next().await {
                Some(Ok(ev)) => {
                    self.failures = 0;
                    if !ev.id.is_empty() {
                        self.last_id = Some(ev.id.clone());
                    }
                    match (self.parse)(&ev) {
                        Ok(Parsed::Skip) => continue,
                        Ok(Parsed::Item(item)) => return Some(Ok(item)),
                        Ok(Parsed::Final(item)) => {
                            self.finished = true;
                            self.events = None;
                            return Some(Ok(item));
                        }
                        Err(e) => {
                            self.finished = true;
                            self.events = None;
                            return Some(Err(e));
                        }
                    }
                }
                Some(Err(EventStreamError::Transport(e))) => {
                    self.client.transport_error(e, &self.url)
                }
                Some(Err(e)) => {
                    self.finished = true;
                    self.events = None;
                    return Some(Err(anyhow!(
                        "{} from {} is not a valid event stream: {e}",
                        self.what,
                        self.url
                    )));
                }
                None => anyhow!("the server closed {} before its final event", self.what),
            };
            self.events = None;
            if !self.back_off().await {
                return self.give_up(lost);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn log(stream: &str, text: Option<&str>, b64: Option<&str>) -> LogEvent {
        LogEvent {
            stream: stream.to_string(),
            text: text.map(str::to_string),
            base64: b64.map(str::to_string),
            at: None,
        }
    }

    #[test]
    fn decodes_text_log_events() {
        let (s, b) = decode_log_event(&log("stdout", Some("héllo\n"), None)).unwrap();
        assert_eq!(s, StdStream::Stdout);
        assert_eq!(b, "héllo\n".as_bytes());
    }

    #[test]
    fn decodes_base64_log_events_byte_exact() {
        let raw = [0u8, 0xff, 0xfe, b'\n', 0x80];
        let enc = base64::engine::general_purpose::STANDARD.encode(raw);
        let (s, b) = decode_log_event(&log("stderr", None, Some(&enc))).unwrap();
        assert_eq!(s, StdStream::Stderr);
        assert_eq!(b, raw);
    }

    #[test]
    fn rejects_malformed_log_events() {
        assert!(decode_log_event(&log("stdin", Some("x"), None)).is_err());
        assert!(decode_log_event(&log("stdout", None, None)).is_err());
        assert!(decode_log_event(&log("stdout", Some("x"), Some("eA=="))).is_err());
        let err = decode_log_event(&log("stdout", None, Some("!!!"))).unwrap_err();
        assert!(format!("{err:#}").contains("base64"), "{err:#}");
    }

    #[test]
    fn empty_text_is_an_empty_chunk() {
        let (_, b) = decode_log_event(&log("stdout", Some(""), None)).unwrap();
        assert!(b.is_empty());
    }

    #[test]
    fn parses_sse_log_events() {
        let ev = Event {
            event: "log".into(),
            data: r#"{"stream":"stdout","text":"hi"}"#.into(),
            id: "7".into(),
            retry: None,
        };
        match parse_log_sse(&ev).unwrap() {
            Parsed::Item(LogStreamEvent::Log {
                id, stream, bytes, ..
            }) => {
                assert_eq!(
                    (id.as_str(), stream, bytes.as_slice()),
                    ("7", StdStream::Stdout, &b"hi"[..])
                );
            }
            _ => panic!("expected a log item"),
        }
        let exit = Event {
            event: "exit".into(),
            data: r#"{"state":"succeeded","attempt":1,"outcome":{"reason":"exited","exit_code":0,"signal":null},"usage":null}"#.into(),
            id: "9".into(),
            retry: None,
        };
        assert!(matches!(
            parse_log_sse(&exit).unwrap(),
            Parsed::Final(LogStreamEvent::Exit { .. })
        ));
        let ping = Event {
            event: "ping".into(),
            data: "{}".into(),
            id: String::new(),
            retry: None,
        };
        assert!(matches!(parse_log_sse(&ping).unwrap(), Parsed::Skip));
        let bad = Event {
            event: "state".into(),
            data: "not json".into(),
            id: "1".into(),
            retry: None,
        };
        assert!(parse_log_sse(&bad).is_err());
    }

    #[test]
    fn api_errors_read_the_error_shape_and_fall_back() {
        let e = ApiError::from_body(
            422,
            br#"{"error":{"code":"validation_failed","message":"too big","field":"limits.memory_bytes"}}"#,
        );
        assert_eq!(e.code, "validation_failed");
        assert_eq!(e.field.as_deref(), Some("limits.memory_bytes"));
        let shown = e.to_string();
        assert!(
            shown.contains("422")
                && shown.contains("too big")
                && shown.contains("limits.memory_bytes")
        );
        let e = ApiError::from_body(502, b"");
        assert_eq!(e.code, "http_502");
        assert_eq!(e.message, "Bad Gateway");
        assert!(e.is_transient());
        let e = ApiError::from_body(404, b"<html>nope</html>");
        assert_eq!(e.message, "<html>nope</html>");
        assert!(!e.is_transient());
    }

    #[test]
    fn client_urls_keep_prefixes_and_reject_bad_servers() {
        let c = Client::new("http://h:1/prefix").unwrap();
        assert_eq!(
            c.url("/v1/jobs").unwrap().as_str(),
            "http://h:1/prefix/v1/jobs"
        );
        let c = Client::new("http://h:1").unwrap();
        assert_eq!(c.url("v1/jobs").unwrap().as_str(), "http://h:1/v1/jobs");
        assert!(Client::new("https://h").is_err());
        assert!(Client::new("h:80").is_err());
        assert!(Client::new("not a url").is_err());
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate_chars("ééé", 2), "éé…");
        assert_eq!(truncate_chars("ab", 2), "ab");
    }
}
