//! The v1 HTTP API (axum). `app(state)` builds the router; the OpenAPI document is generated
//! from the handlers' annotations (utoipa) and served at `/openapi.json`.
//!
//! Invariants: every error has the shape of [`types::ErrorBody`]; a rejected request stores
//! nothing; handlers never hold a database transaction across an await on anything but the
//! database.

pub mod artifacts;
pub mod auth;
pub mod batches;
pub mod console;
pub mod cors;
pub mod error;
mod examples;
pub mod hub;
pub mod images;
pub mod jobs;
pub mod logs;
pub mod modules;
pub mod sse;
pub mod system;
pub mod tenants;
pub mod types;
pub mod validate;
pub mod wait;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router};
use image_store::ImageService;
use sqlx::PgPool;
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::config::LimitPolicy;
use crate::metrics::Metrics;
use crate::store::queue::Notices;
use crate::store::{CHANNEL_JOBS, wake_payload};
use error::{ApiError, ErrorCode};

/// Largest JSON body (jobs and batches carry input files).
pub const MAX_JSON_BODY: usize = 16 << 20;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Connections the handlers share, the most recently used first (`store::Warm`): the lone
    /// submission's statement and a stream's first read run on a warm backend.
    pub warm: Arc<crate::store::Warm>,
    pub policy: Arc<LimitPolicy>,
    pub metrics: Metrics,
    pub hub: hub::Hub,
    pub notifier: Arc<QueueNotifier>,
    /// Poked after every stored job so a worker in this process claims at once.
    pub local_wake: Arc<Notify>,
    /// The image store of this process's worker (None: an API-only process, whose image
    /// endpoints answer 503).
    pub images: Option<ImageService>,
    /// Token lookups (and whether tokens are required at all).
    pub auth: Arc<auth::Authenticator>,
    /// Tenants' quotas, cached for a second.
    pub tenants: Arc<tenants::TenantCache>,
    /// Origins whose browser pages may call the API (`--cors-origin`; none: no CORS headers).
    pub cors_origins: Arc<Vec<axum::http::HeaderValue>>,
    /// One permit per open event stream (`policy.max_streams`), see [`sse::respond`].
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The worker in this process, which lone jobs are handed to when it has a free slot
    /// (None: an API-only process; every job waits for a claim).
    pub handoff: Option<Arc<crate::store::handoff::Handoff>>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        policy: LimitPolicy,
        metrics: Metrics,
        local_wake: Arc<Notify>,
    ) -> Self {
        let warm = Arc::new(crate::store::Warm::new(pool.clone()));
        if tokio::runtime::Handle::try_current().is_ok() {
            crate::store::Warm::spawn_sweeper(&warm);
        }
        Self {
            notifier: Arc::new(QueueNotifier::new(pool.clone(), Uuid::now_v7())),
            warm,
            streams: Arc::new(tokio::sync::Semaphore::new(policy.max_streams)),
            pool,
            policy: Arc::new(policy),
            hub: hub::Hub::new(metrics.sse_job_reads.clone()),
            metrics,
            local_wake,
            images: None,
            auth: Arc::new(auth::Authenticator::new(auth::AuthMode::On)),
            tenants: Arc::new(tenants::TenantCache::default()),
            cors_origins: Arc::new(Vec::new()),
            handoff: None,
        }
    }

    /// Hands lone jobs to `handoff`, the worker in this process, when it has a free slot
    /// ([`crate::store::handoff`]; None: no worker here).
    pub fn with_handoff(mut self, handoff: Option<Arc<crate::store::handoff::Handoff>>) -> Self {
        self.handoff = handoff;
        self
    }

    /// Names this process `origin` in the API's job NOTIFYs (a worker in the same process, told
    /// the same id, skips them: it is poked directly). With [`Notices::InProcess`] (every worker
    /// of the database is the one in this process) no job NOTIFY is sent at all.
    pub fn with_origin(mut self, origin: Uuid, notices: Notices) -> Self {
        self.notifier = Arc::new(QueueNotifier {
            notices,
            ..QueueNotifier::new(self.pool.clone(), origin)
        });
        self
    }

    /// Uses `hub` for this process's followers (one created beforehand, so that a worker in
    /// the same process can tell it of completions: [`hub::Hub::stored_locally`]).
    pub fn with_hub(mut self, hub: hub::Hub) -> Self {
        self.hub = hub;
        self
    }

    /// Allows browser pages of exactly these origins to call the API (see [`cors`]).
    pub fn with_cors(mut self, origins: Vec<axum::http::HeaderValue>) -> Self {
        self.cors_origins = Arc::new(origins);
        self
    }

    /// Sets whether requests need a token (the default: they do).
    pub fn with_auth(mut self, mode: auth::AuthMode) -> Self {
        self.auth = Arc::new(auth::Authenticator::new(mode));
        self
    }

    /// Serves the image endpoints from `images` (the worker's image service in this process).
    pub fn with_images(mut self, images: Option<ImageService>) -> Self {
        self.images = images;
        self
    }
}

/// NOTIFY for new jobs, debounced: in a burst of submissions, at most one per queue per
/// [`QueueNotifier::WINDOW`] per process. The first job in a window is announced inside its
/// insert transaction; later ones in the same window get one trailing NOTIFY at the window's end.
/// A submission that is not part of a burst — none for its queue in the [`QueueNotifier::QUIET`]
/// before it — is announced inside its transaction at once, whatever the window: a worker in
/// another process then claims a lone job at once instead of at the window's end (sequential
/// lone jobs waited ~90 ms for it), and such submissions are too far apart to contend at commit.
/// Every NOTIFY names this process (`origin`, [`crate::store::wake_payload`]): a worker in the
/// same process, poked directly after each stored job, skips it. A notifier for
/// [`Notices::InProcess`] sends none: the only worker is that one.
pub struct QueueNotifier {
    pool: PgPool,
    origin: Uuid,
    notices: Notices,
    last: Mutex<HashMap<String, QueueNotices>>,
}

/// What the notifier remembers of one queue.
#[derive(Debug, Clone, Copy)]
struct QueueNotices {
    /// The last NOTIFY sent (or the start of the trailing one's window).
    notified: Instant,
    /// The last submission.
    submitted: Instant,
    /// A trailing NOTIFY is arranged.
    trailing: bool,
}

/// What one submission does about the NOTIFY.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    /// NOTIFY inside its transaction.
    Now,
    /// Arrange a trailing NOTIFY after this long.
    Trailing(Duration),
    /// A trailing NOTIFY is already arranged.
    Covered,
}

impl QueueNotices {
    fn new(now: Instant) -> Self {
        Self {
            notified: now,
            submitted: now,
            trailing: false,
        }
    }

    /// The NOTIFY the last [`Notice::Now`] asked for was not sent (its job was handed to the
    /// worker in this process, which needs none): the next submission notifies at once instead of
    /// counting on it.
    fn unsent(&mut self, now: Instant) {
        if let Some(long_ago) = now.checked_sub(QueueNotifier::WINDOW) {
            self.notified = self.notified.min(long_ago);
        }
    }

    fn submission(&mut self, now: Instant) -> Notice {
        let quiet = now.duration_since(self.submitted) >= QueueNotifier::QUIET;
        self.submitted = now;
        if quiet || now.duration_since(self.notified) >= QueueNotifier::WINDOW {
            self.notified = now;
            Notice::Now
        } else if self.trailing {
            Notice::Covered
        } else {
            self.trailing = true;
            Notice::Trailing(
                QueueNotifier::WINDOW.saturating_sub(now.duration_since(self.notified)),
            )
        }
    }
}

impl QueueNotifier {
    pub const WINDOW: Duration = Duration::from_millis(100);
    /// A submission this long after the previous one of its queue is not part of a burst.
    pub const QUIET: Duration = Duration::from_millis(2);

    /// A notifier whose NOTIFYs name process `origin`.
    pub fn new(pool: PgPool, origin: Uuid) -> Self {
        Self {
            pool,
            origin,
            notices: Notices::Notify,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The payload of the NOTIFY that announces a new job of `queue` (a batch's, sent in its
    /// transaction whatever the window), or None when no NOTIFY is sent ([`Notices::InProcess`]).
    pub fn wake(&self, queue: &str) -> Option<String> {
        match self.notices {
            Notices::Notify => Some(wake_payload(queue, self.origin)),
            Notices::InProcess => None,
        }
    }

    /// The NOTIFY [`Self::notify_now`] gave a payload for was not sent: the submission's job was
    /// handed to the worker in this process (docs/queue.md §2). Without this, the next job of a
    /// burst would wait for a trailing NOTIFY, counting on one that never went out.
    pub fn unsent(&self, queue: &str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = last.get_mut(queue) {
            q.unsent(Instant::now());
        }
    }

    /// The payload to NOTIFY with now (in the caller's transaction), or None when a trailing
    /// NOTIFY is arranged (or already was) instead, or when none is sent ([`Notices::InProcess`]).
    pub fn notify_now(self: &Arc<Self>, queue: &str) -> Option<String> {
        if self.notices == Notices::InProcess {
            return None;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let notice = match last.get_mut(queue) {
            Some(q) => q.submission(now),
            None => {
                last.insert(queue.to_string(), QueueNotices::new(now));
                Notice::Now
            }
        };
        match notice {
            Notice::Now => Some(wake_payload(queue, self.origin)),
            Notice::Covered => None,
            Notice::Trailing(wait) => {
                let this = self.clone();
                let queue = queue.to_string();
                let payload = wake_payload(&queue, self.origin);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(q) = this
                        .last
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&queue)
                    {
                        q.notified = Instant::now();
                        q.trailing = false;
                    }
                    if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL_JOBS)
                        .bind(&payload)
                        .execute(&this.pool)
                        .await
                    {
                        tracing::warn!(error = %e, "trailing NOTIFY failed; workers will poll");
                    }
                });
                None
            }
        }
    }
}

/// A request body read up to the route's limit; an oversize body is a 413 in the API's shape.
pub struct Body(pub Bytes);

impl Body {
    /// The body, refused with 413 when larger than a JSON body may be.
    pub fn json_sized(self) -> Result<Bytes, ApiError> {
        if self.0.len() > MAX_JSON_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!(
                    "JSON bodies are limited to {MAX_JSON_BODY} bytes; send fewer or smaller files, or split the batch"
                ),
            ));
        }
        Ok(self.0)
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rejection) => {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Err(ApiError::new(
                        status,
                        ErrorCode::PayloadTooLarge,
                        "the request body is larger than this endpoint accepts (16 MiB for JSON, the module limit for uploads); send less",
                    ))
                } else {
                    Err(ApiError::new(
                        status,
                        ErrorCode::BadRequest,
                        format!("could not read the request body: {}", rejection.body_text()),
                    ))
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nekton",
        description = "Sandboxed job execution: submit jobs, watch their logs live, read their outcome and bill.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    servers((url = "/", description = "The server that serves this document (`nekton serve` listens on 127.0.0.1:8080 by default)")),
    tags(
        (name = "jobs", description = "Submit, inspect, list and cancel jobs"),
        (name = "logs", description = "Live and stored job output"),
        (name = "batches", description = "Many jobs at once: submit, list, inspect, cancel, and follow their completions"),
        (name = "modules", description = "Wasm modules: upload and list"),
        (name = "images", description = "OCI images on worker hosts: pull (with SSE progress), list, inspect, delete, import, gc. Images live on worker hosts: these endpoints are served by processes that run both the API and a worker (`nekton serve`); an API-only process (`nekton api`) answers 503"),
        (name = "webhooks", description = "Job and batch completion events POSTed to the tenant's endpoints, signed per Standard Webhooks, retried for at least 24 h; delivery logs and redelivery"),
        (name = "admin", description = "Tenants, tokens, quotas, the audit log and usage"),
        (name = "system", description = "Health, readiness, metrics, version")
    ),
    security(("bearer" = [])),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

/// Declares the bearer-token security scheme every `/v1` endpoint uses.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("nk_<32 letters or digits>")
                    .description(Some(
                        "An API token: `Authorization: Bearer nk_...`. The first start of a server writes an admin token to <state-dir>/admin.token; `nekton token create` makes more.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "console_cookie",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    auth::TOKEN_COOKIE,
                    "The web console's way to authenticate an EventSource (which cannot send headers): the same API token in the `nekton_token` cookie (Path=/v1, SameSite=Strict). Accepted on GET and HEAD of /v1 paths only, never for a request that changes state (so no cross-site request can use it); `Authorization` wins when both are sent. Declared on the log stream, the endpoint it exists for (docs/console.md).",
                ),
            )),
        );
    }
}

fn routes() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi());
    // An artifact's path spans slashes: axum's wildcard `{*path}` serves it, while the document
    // (which has no wildcard parameters) describes it as `{path}`, from the same annotation.
    let download = OpenApiRouter::<AppState>::new()
        .routes(routes!(artifacts::get))
        .into_openapi();
    router.get_openapi_mut().merge(download);
    router
        .route(
            "/v1/jobs/{id}/artifacts/{*path}",
            axum::routing::get(artifacts::get),
        )
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cases))
        .routes(routes!(artifacts::list))
        .routes(routes!(jobs::cancel))
        .routes(routes!(logs::logs))
        .routes(routes!(batches::submit, batches::list))
        .routes(routes!(batches::get))
        .routes(routes!(batches::cancel))
        .routes(routes!(batches::events))
        .routes(routes!(modules::upload, modules::list))
        .routes(routes!(images::pull))
        .routes(routes!(images::list))
        .routes(routes!(images::get, images::delete))
        .routes(routes!(images::gc))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(images::import))
                // The upload is streamed to disk and capped by the handler itself.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant, tenants::update_tenant))
        .routes(routes!(tenants::create_token, tenants::list_tokens))
        .routes(routes!(tenants::revoke_token))
        .routes(routes!(tenants::audit))
        .routes(routes!(tenants::usage))
        .routes(routes!(tenants::me))
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::version))
}

/// The OpenAPI document (what `/openapi.json` serves and `openapi/openapi.json` holds).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().split_for_parts().1;
    complete_responses(&mut doc);
    doc
}

/// Gives every response a description (OpenAPI requires one): the status's reason phrase where
/// the handler's annotation has none.
fn complete_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    let global_security = doc.security.clone();
    examples::for_each_operation(doc, |op| {
        let public = op
            .security
            .as_ref()
            .or(global_security.as_ref())
            .is_none_or(|reqs| {
                reqs.iter()
                    .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
            });
        // A malformed path id, query parameter, header or JSON body is a 400 on every
        // operation that takes one.
        let takes_input =
            op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
        if takes_input {
            op.responses
                .responses
                .entry("400".to_string())
                .or_insert_with(|| {
                    RefOr::T(error_response(
                        "Malformed input: a path id, query parameter, header or body that does not parse; the error names it",
                    ))
                });
        }
        if !public {
            for (status, description) in [
                (
                    "401",
                    "No valid API token: send `Authorization: Bearer nk_...` (`nekton token create` makes one)",
                ),
                (
                    "403",
                    "The token lacks the scope this operation needs, or the operation is an admin's",
                ),
            ] {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(error_response(description)));
            }
        }
        for (status, response) in op.responses.responses.iter_mut() {
            if let RefOr::T(r) = response {
                document_sse(r);
            }
            if let RefOr::T(r) = response
                && r.description.is_empty()
            {
                r.description = status
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("Response")
                    .to_string();
            }
        }
    });
    events_any_of(doc);
    examples::add(doc);
}

/// The SSE payload unions (`LogStreamEvent`, `BatchStreamEvent`, `PullStreamEvent`) as `anyOf`: an event's `event:`
/// name says which payload it is, not its `data`, and a `oneOf` would reject an `exit` payload,
/// which also fits the `state` schema.
fn events_any_of(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AnyOfBuilder, Schema};
    let Some(components) = &mut doc.components else {
        return;
    };
    for name in ["LogStreamEvent", "BatchStreamEvent", "PullStreamEvent"] {
        if let Some(RefOr::T(Schema::OneOf(one))) = components.schemas.get(name) {
            let any = one
                .items
                .iter()
                .cloned()
                .fold(AnyOfBuilder::new(), AnyOfBuilder::item)
                .description(one.description.clone())
                .build();
            components
                .schemas
                .insert(name.to_string(), RefOr::T(Schema::AnyOf(any)));
        }
    }
}

/// A response whose body is an [`types::ErrorBody`].
fn error_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// An SSE response (`text/event-stream`) is declared with the schema of its events' `data` in the
/// handler's annotation. OpenAPI 3.1 has no place for the schema of a stream's items (3.2's
/// `itemSchema`), and generators read `schema` as the schema of the whole body, which is text:
/// so the body becomes a string and the events' schema moves to the extension `x-sse-data`
/// (one of the payloads, by the SSE `event:` name; the schema's description says which).
fn document_sse(response: &mut utoipa::openapi::Response) {
    use utoipa::openapi::extensions::ExtensionsBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let Some(utoipa::openapi::RefOr::T(content)) = response.content.get_mut("text/event-stream")
    else {
        return;
    };
    let Some(events) = content.schema.take() else {
        return;
    };
    let Ok(events) = serde_json::to_value(&events) else {
        return;
    };
    content.schema = Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Server-sent events; each event's `data` is JSON described by `x-sse-data`",
            ))
            .into(),
    );
    let extensions = ExtensionsBuilder::new().add("x-sse-data", events).build();
    match &mut content.extensions {
        Some(existing) => existing.merge(extensions),
        None => content.extensions = Some(extensions),
    }
}

/// The API's router.
pub fn app(state: AppState) -> Router {
    let (router, mut doc) = routes().split_for_parts();
    complete_responses(&mut doc);
    let doc = Arc::new(doc);
    let metrics = state.metrics.clone();
    let body_limit = state.policy.max_module_bytes.max(MAX_JSON_BODY);
    let cors = cors::layer(&state.cors_origins);
    let router = router
        .merge(console::routes())
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see /openapi.json for the API").into_response()
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this endpoint does not accept that method; see /openapi.json",
            )
            .into_response()
        })
        // Inside the response counter, so 401s are counted too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let metrics = metrics.clone();
                async move {
                    let res = next.run(req).await;
                    metrics
                        .http_responses
                        .get_or_create(&crate::metrics::RequestLabels {
                            status: res.status().as_u16(),
                        })
                        .inc();
                    res
                }
            },
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit));
    // Outside authentication: a preflight is answered here, without a token.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    |res: &axum::response::Response, latency: Duration, span: &tracing::Span| {
                        span.record("http.response.status_code", res.status().as_u16());
                        tower_http::trace::OnResponse::on_response(
                            tower_http::trace::DefaultOnResponse::default(),
                            res,
                            latency,
                            span,
                        );
                    },
                ),
        )
        .with_state(state)
}

/// The `http.request` span of a request (docs/operations.md, "Tracing"): a child of the caller's
/// span when the request carries a valid W3C `traceparent` header (an invalid one is ignored).
fn request_span(req: &Request) -> tracing::Span {
    let span = tracing::debug_span!(
        "http.request",
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(parent) = crate::telemetry::incoming(req.headers()) {
        crate::telemetry::set_parent(&span, &parent);
    }
    span
}

#[cfg(test)]
mod notifier_tests {
    use super::{Notice, QueueNotices};
    use std::time::{Duration, Instant};

    #[test]
    fn lone_submissions_notify_at_once_and_bursts_once_per_window() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut q = QueueNotices::new(t0);
        // Lone jobs 15 ms apart (a client waiting for each): every one notifies at once.
        for i in 1..=5 {
            assert_eq!(q.submission(t0 + ms(15 * i)), Notice::Now, "lone job {i}");
        }
        // A burst 1 ms apart: its first notifies, the next arranges one trailing NOTIFY, the
        // rest are covered by it.
        let b = t0 + ms(200);
        assert_eq!(q.submission(b), Notice::Now);
        assert_eq!(q.submission(b + ms(1)), Notice::Trailing(ms(99)));
        for i in 2..50 {
            assert_eq!(q.submission(b + ms(i)), Notice::Covered, "burst job {i}");
        }
    }

    #[test]
    fn a_notify_not_sent_does_not_cover_the_next_submission() {
        let ms = Duration::from_millis;
        let t0 = Instant::now() + ms(1000);
        let mut q = QueueNotices::new(t0);
        // A job handed over: its statement sent no NOTIFY. The next one, 1 ms later, notifies at
        // once instead of arranging a trailing NOTIFY behind one that never went out.
        assert_eq!(q.submission(t0 + ms(15)), Notice::Now);
        q.unsent(t0 + ms(15));
        assert_eq!(q.submission(t0 + ms(16)), Notice::Now);
        // Sent this time: the burst goes on as usual.
        assert_eq!(q.submission(t0 + ms(17)), Notice::Trailing(ms(99)));
    }
}
