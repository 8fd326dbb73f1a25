//! `/v1/jobs`: submit, get, list, cancel.

use std::collections::HashSet;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode, page_cursor, page_limit, parse_json};
use super::types::{CaseList, ErrorBody, Job, JobPage, JobSpec, JobState};
use super::validate::{canonical_hash, resolve};
use super::wait::{SubmitParams, Wait};
use super::{AppState, Body};
use crate::config::LimitPolicy;
use crate::model::JobRecord;
use crate::model::auth::Scope;
use crate::model::tenancy::Tenant;
use crate::store::handoff::{Handoff, Slot};
use crate::store::jobs::{self as store_jobs, CancelResult, ListFilter, NewJob, Submitted};
use crate::store::modules;
use crate::store::queue::{self as store_queue, Claimed};
use crate::store::tenants::Refused;
use crate::telemetry::TraceParent;
use tracing::Instrument as _;

/// Reads and checks the `Idempotency-Key` header.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidHeader,
                "Idempotency-Key must be 1–255 visible ASCII characters",
            )
            .with_field("Idempotency-Key")
        })?;
    Ok(Some(key.to_string()))
}

/// Where [`prepare`] checks that the job's own module is stored.
pub enum ModuleCheck<'a> {
    /// Here, once per digest: `known` remembers the digests already found (a batch).
    Here { known: &'a mut HashSet<String> },
    /// In the statement that stores the job ([`NewJob::required_module`]): a lone submission
    /// saves the round trip. A suite's build and checker modules are still checked here.
    WhenStored,
}

/// The 422 for a module the tenant has not stored.
fn module_not_found(field: &str, digest: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::ModuleNotFound,
        format!("no module {digest} is stored; upload it first with POST /v1/modules (or `nekton module push FILE.wasm`)"),
    )
    .with_field(field)
}

/// Validates a spec, resolves its defaults and checks its modules exist (images are pulled by the
/// worker that runs the job): a job ready to store.
/// `tenant` is the caller's tenant with its quotas (read once per request by the handler).
/// `check`: where the job's own module is checked.
/// `trace`: the trace context the job keeps (see [`crate::telemetry::job_trace`]).
pub async fn prepare(
    state: &AppState,
    tenant: &Tenant,
    spec: JobSpec,
    id: Uuid,
    idempotency_key: Option<String>,
    check: ModuleCheck<'_>,
    trace: &TraceParent,
) -> Result<NewJob, ApiError> {
    let spec_hash = canonical_hash(&spec);
    check_tenant_limits(&spec, tenant)?;
    let policy = tenant_policy(&state.policy, tenant);
    let resolved = resolve(spec, &policy)?;
    let is_module = resolved.module.is_some();
    let program = resolved
        .module
        .clone()
        .or_else(|| resolved.image.clone())
        .unwrap_or_default();
    // The job's module, and a Wasm suite's build and checker modules, must be stored.
    let suite_modules = resolved.tests.iter().flat_map(|suite| {
        [
            ("tests.build.module", &suite.build),
            ("tests.checker.module", &suite.checker),
        ]
        .into_iter()
        .filter_map(|(field, step)| Some((field, step.as_ref()?.module.clone()?)))
    });
    let mut none_known = HashSet::new();
    let (known_modules, required_module) = match check {
        ModuleCheck::Here { known } => (known, None),
        ModuleCheck::WhenStored => (&mut none_known, is_module.then(|| program.clone())),
    };
    let modules_needed: Vec<(&str, String)> = (is_module && required_module.is_none())
        .then(|| ("module", program.clone()))
        .into_iter()
        .chain(suite_modules)
        .collect();
    for (field, digest) in modules_needed {
        if !known_modules.contains(&digest)
            && !modules::exists(&state.pool, &tenant.id, &digest).await?
        {
            return Err(module_not_found(field, &digest));
        }
        known_modules.insert(digest);
    }
    Ok(NewJob {
        id,
        queue: resolved.queue.clone().unwrap_or_else(|| "default".into()),
        priority: resolved.priority.unwrap_or(0),
        max_attempts: resolved.max_attempts.unwrap_or(1) as i32,
        labels: serde_json::to_value(&resolved.labels).unwrap_or_default(),
        program,
        spec: {
            let mut job = crate::model::ResolvedJob::try_from(resolved.clone()).map_err(|e| {
                tracing::error!(error = %e, "a resolved spec did not convert to the job model");
                ApiError::internal()
            })?;
            if let Some(artifacts) = job.artifacts.take() {
                job.artifacts = Some(crate::model::ResolvedArtifacts::new(
                    artifacts.patterns,
                    &policy,
                ));
            }
            job.to_stored()
        },
        spec_hash,
        required_module,
        idempotency_key,
        traceparent: Some(trace.to_string()),
    })
}

/// The operator's limit policy narrowed to a tenant's maxima: a job asking for more than the
/// tenant may have is refused (422, naming the maximum), and defaults above a maximum come down
/// to it.
pub fn tenant_policy<'a>(
    policy: &'a LimitPolicy,
    tenant: &Tenant,
) -> std::borrow::Cow<'a, LimitPolicy> {
    if tenant.max_memory_bytes.is_none()
        && tenant.max_wall_time_ms.is_none()
        && tenant.max_output_bytes.is_none()
    {
        return std::borrow::Cow::Borrowed(policy);
    }
    let mut p = policy.clone();
    let cap = |max: &mut u64, default: &mut u64, tenant: Option<i64>| {
        if let Some(t) = tenant {
            let t = u64::try_from(t).unwrap_or(0);
            *max = (*max).min(t);
            *default = (*default).min(*max);
        }
    };
    cap(
        &mut p.max_memory_bytes,
        &mut p.default_memory_bytes,
        tenant.max_memory_bytes,
    );
    cap(
        &mut p.max_wall_time_ms,
        &mut p.default_wall_time_ms,
        tenant.max_wall_time_ms,
    );
    cap(
        &mut p.max_output_bytes,
        &mut p.default_output_bytes,
        tenant.max_output_bytes,
    );
    std::borrow::Cow::Owned(p)
}

/// The tenant's rules that are not limits with defaults: CPU time (containers only, so it has
/// no default here: a Wasm image would refuse it; the wall-time maximum bounds such jobs) and
/// bridge networking.
fn check_tenant_limits(spec: &JobSpec, tenant: &Tenant) -> Result<(), ApiError> {
    if let (Some(max), Some(asked)) = (
        tenant.max_cpu_time_ms,
        spec.limits.as_ref().and_then(|l| l.cpu_time_ms),
    ) && asked > u64::try_from(max).unwrap_or(0)
    {
        return Err(ApiError::invalid(
            "limits.cpu_time_ms",
            format!(
                "this tenant's jobs may have at most {max} ms of CPU time; ask for less (or ask the operator to raise the tenant's max_cpu_time_ms)"
            ),
        ));
    }
    if spec.network_mode() == Some(crate::model::NetworkMode::Bridge) && !tenant.allow_bridge {
        return Err(ApiError::invalid(
            "network",
            "this tenant's jobs may not use bridge networking (the operator set allow_bridge = false); use `network: none`",
        ));
    }
    Ok(())
}

/// A quota refusal as an API error: 429 (with Retry-After) for a spent rate or a full queue,
/// 422 for a request that can never fit.
pub fn refused(r: Refused) -> ApiError {
    match r {
        Refused::Rate { retry_after, rate } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("this tenant may submit {rate} jobs per second; retry after the Retry-After header's seconds (nothing was stored)"),
        )
        .with_retry_after(retry_after.as_secs_f64().ceil().max(1.0) as u32),
        Refused::QueueFull { max, waiting, adding } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::QuotaExceeded,
            format!("this tenant may have {max} jobs waiting; {waiting} wait now and this request adds {adding} (nothing was stored); retry when some have started"),
        )
        .with_retry_after(1),
        Refused::LargerThanBurst { burst, adding } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::QuotaExceeded,
            format!("this request adds {adding} jobs but the tenant may submit at most {burst} at once; split it"),
        ),
    }
}

/// Submit a job. It is queued at once (or, on a server whose worker is idle, started at once);
/// follow it with `GET /v1/jobs/{id}/logs`, or ask with `?wait=SECS` for an answer once it has
/// finished, output included.
#[utoipa::path(post, path = "/v1/jobs", operation_id = "submitJob", tag = "jobs",
    request_body = JobSpec,
    params(SubmitParams,("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes retries safe: the same key and body return the same job; the same key with another body is a 422. 1–255 visible ASCII characters"),
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context (`00-<trace id>-<parent span id>-<flags>`): the job joins the caller's trace: its `trace_id` is the caller's trace id and the spans of its submission and attempts are children of the caller's span. A value that is not a valid traceparent is ignored (a new trace is started), never refused.")),
    responses(
        (status = 201, description = "Stored: `queued`, or already `running` when the worker in the same process (`nekton serve`) had a free slot and nothing waited before it; with `wait`, finished (`output` set) or as it was when the wait ran out", body = Job),
        (status = 200, description = "Replay of an earlier request with the same Idempotency-Key (with `wait`, waited for like a new one)", body = Job),
        (status = 400, description = "Malformed JSON, or `wait` out of range", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid spec, unknown module, or Idempotency-Key reused with another body", body = ErrorBody),
        (status = 429, description = "The tenant's submit rate or waiting-jobs quota is spent; retry after Retry-After", body = ErrorBody),
        (status = 503, description = "With `wait`: this API process has no room for another waiting request (`--max-streams`); nothing was stored, retry after Retry-After", body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    params: Result<Query<SubmitParams>, QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    caller.require(Scope::JobsWrite)?;
    let Query(params) = params.map_err(ApiError::from_query)?;
    let wait = params.wait()?;
    let id = Uuid::now_v7();
    let span = tracing::debug_span!(
        "job.submit",
        job.id = %id,
        tenant = %caller.tenant(),
        job.queue = tracing::field::Empty,
    );
    // The job keeps this span's trace context: the worker's spans of the job are its children.
    let trace = crate::telemetry::job_trace(&span, crate::telemetry::incoming(&headers));
    submit_traced(state, caller, headers, body, id, trace, wait)
        .instrument(span)
        .await
}

async fn submit_traced(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    id: Uuid,
    trace: TraceParent,
    wait: Option<std::time::Duration>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    crate::timeline!(id, "api.received");
    let body = body.json_sized()?;
    let spec: JobSpec = parse_json(&body)?;
    let key = idempotency_key(&headers)?;
    let tenant = state.tenants.of(&state.pool, &caller).await?;
    let job = prepare(
        &state,
        &tenant,
        spec,
        id,
        key,
        ModuleCheck::WhenStored,
        &trace,
    )
    .await?;
    let queue = job.queue.clone();
    tracing::Span::current().record("job.queue", queue.as_str());
    // A waiting submission subscribes before the job is stored: its end cannot be missed.
    let waiting = wait.map(|w| Wait::begin(&state, id, w)).transpose()?;
    let notify = state.notifier.notify_now(&queue);
    // A free slot of the worker in this process: the job may start there without a claim.
    let hand = state
        .handoff
        .as_ref()
        .filter(|_| store_jobs::may_be_handed(&tenant))
        .and_then(|h| {
            let container = store_queue::runs_in_container(&job.spec);
            Some((h, h.reserve(&queue, container)?, job.spec.clone()))
        });
    let to = hand.as_ref().map(|(h, _, _)| h.to());
    // A waited-for job's answer comes after a later flush (its end's commit, or the wait's own
    // when it runs out): its submission need not wait for one.
    let commit = if waiting.is_some() {
        store_jobs::SubmitCommit::Deferred
    } else {
        store_jobs::SubmitCommit::Flushed
    };
    let submitted =
        store_jobs::submit(&state.warm, &tenant, job, notify.as_deref(), to, commit).await?;
    crate::timeline!(id, "api.stored");
    // The slot set aside serves only a job stored running on the worker. Any other outcome gives
    // it back now: before the poke below (the claim it starts counts the free slots) and before
    // a replay's wait.
    let hand = match &submitted {
        Submitted::Created(job) if job.state == crate::model::JobState::Running => hand,
        _ => {
            drop(hand);
            None
        }
    };
    let (status, job) = match submitted {
        Submitted::Created(job) => {
            state.metrics.jobs_submitted.inc();
            match hand {
                Some((handoff, slot, spec)) => {
                    // A handed job's statement sends no NOTIFY (the worker here needs none).
                    if notify.is_some() {
                        state.notifier.unsent(&queue);
                    }
                    let job = hand_over(&state, handoff, slot, spec, &tenant.id, *job, &trace).await;
                    (StatusCode::CREATED, job)
                }
                // Not handed (something waits in the worker's queues, the tenant is capped, or
                // there is no worker here): a claim takes it.
                None => {
                    state.local_wake.notify_one();
                    (StatusCode::CREATED, *job)
                }
            }
        }
        Submitted::Replayed(job) => (StatusCode::OK, *job),
        Submitted::Refused(r) => return Err(refused(r)),
        Submitted::ModuleMissing { digest } => return Err(module_not_found("module", &digest)),
        Submitted::KeyConflict { existing } => return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            format!("this Idempotency-Key was already used for job {existing} with a different request; use a new key for a new job"),
        )
        .with_field("Idempotency-Key")),
    };
    let job = match waiting {
        // A replay names the job of the earlier request: that one is waited for.
        Some(w) => {
            w.of(&state, job.id)
                .finish(&state, caller.tenant(), job)
                .await?
        }
        None => Job::from(job),
    };
    crate::timeline!(id, "api.answered");
    Ok((status, Json(job)))
}

/// Passes a job stored `running` on the worker in this process to it. If that worker has just
/// stopped taking jobs (it is shutting down), the job goes back to its queue at once instead, as
/// if never handed (a claim by another worker runs it), and the record returned says so.
async fn hand_over(
    state: &AppState,
    handoff: &Handoff,
    slot: Slot,
    spec: serde_json::Value,
    tenant: &str,
    job: JobRecord,
    trace: &TraceParent,
) -> JobRecord {
    let claimed = Claimed {
        id: job.id,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        queue_wait: std::time::Duration::ZERO,
        spec,
        tenant: tenant.to_string(),
        trace: Some(*trace),
    };
    let Err(back) = handoff.hand(slot, claimed) else {
        return job;
    };
    tracing::info!(job = %back.id, "the worker in this process stopped taking jobs; the job goes back to its queue");
    // The job is stored either way: a failure here is no reason to fail the request (a retry
    // without an idempotency key would store a second job). Left running, the job is taken back
    // by the rescue when its lease expires.
    let back_in_queue = async {
        store_queue::return_unstarted(&state.pool, handoff.worker(), &[back.id]).await?;
        store_jobs::get(&state.pool, tenant, back.id).await
    };
    match back_in_queue.await {
        Ok(Some(record)) => record,
        Ok(None) => job,
        Err(e) => {
            tracing::warn!(job = %back.id, error = %e, "putting a job the worker did not take back in its queue failed; the rescue takes it back when its lease expires");
            job
        }
    }
}

/// Get a job: its state, outcome and usage.
#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "getJob", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_id(&id)?;
    let job = store_jobs::get(&state.pool, caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(job.into()))
}

/// A test-suite job's cases, as its latest attempt left them: each one `pending`, `running` or
/// `finished` with its verdict, bill, first difference and output; and the build's result.
#[utoipa::path(get, path = "/v1/jobs/{id}/cases", operation_id = "getJobCases", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = CaseList),
        (status = 404, description = "No such job, or the job is not a test suite", body = ErrorBody)))]
pub async fn cases(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CaseList>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_id(&id)?;
    let job = store_jobs::get(&state.pool, caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let spec = store_jobs::stored_spec(&state.pool, caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let suite = crate::model::ResolvedJob::from_stored(&spec)
        .ok()
        .and_then(|j| j.tests)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "job {id} is not a test suite (submit one with a `tests` section)"
            ))
        })?;
    let events = crate::store::logs::attempt_events(&state.pool, id, job.attempt).await?;
    Ok(Json(crate::grading::case_list(
        &suite,
        job.attempt,
        &events,
    )))
}

/// Parses a job or batch id from a path.
pub fn parse_id(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidId,
            format!("`{s}` is not a job id (a UUID)"),
        )
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>)]
    pub state: Option<String>,
    /// Only jobs with this label, as `key=value`; repeat the parameter for several labels (all
    /// must match).
    #[serde(default)]
    #[param(style = Form, explode, pattern = "^[^=\\u0000]+=[^\\u0000]*$")]
    pub label: Vec<String>,
    /// Only jobs of this batch.
    pub batch: Option<Uuid>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Parses the listing's query: `label` may repeat, every other parameter at most once (an
/// unknown or repeated one is a 400 naming it).
fn list_params(query: &str) -> Result<ListParams, ApiError> {
    let (labels, mut p): (_, ListParams) = query_with_labels(query)?;
    p.label = labels;
    Ok(p)
}

/// Parses a listing's query into `T`, taking the repeatable `label` parameters out first; every
/// other parameter may appear at most once (an unknown or repeated one is a 400 naming it).
pub(crate) fn query_with_labels<T: serde::de::DeserializeOwned>(
    query: &str,
) -> Result<(Vec<String>, T), ApiError> {
    let bad = |m: String| ApiError::invalid_query(m);
    // The URL type decodes and encodes form pairs (`+`, percent escapes) the standard way.
    let mut parsed =
        reqwest::Url::parse("http://query.invalid/").map_err(|_| ApiError::internal())?;
    parsed.set_query(Some(query));
    let mut labels = Vec::new();
    let mut rest =
        reqwest::Url::parse("http://query.invalid/").map_err(|_| ApiError::internal())?;
    let mut seen = HashSet::new();
    {
        let mut out = rest.query_pairs_mut();
        for (k, v) in parsed.query_pairs() {
            if k == "label" {
                labels.push(v.into_owned());
            } else if !seen.insert(k.clone().into_owned()) {
                return Err(
                    bad(format!("query parameter `{k}` is given twice")).with_field(k.into_owned())
                );
            } else {
                out.append_pair(&k, &v);
            }
        }
    }
    let uri: axum::http::Uri = format!("/?{}", rest.query().unwrap_or_default())
        .parse()
        .map_err(|_| bad("the query string is malformed".into()))?;
    let Query(p) =
        Query::<T>::try_from_uri(&uri).map_err(|e: QueryRejection| bad(e.body_text()))?;
    Ok((labels, p))
}

/// `label=key=value` filters as the JSON object the labels must contain (`None`: no filter);
/// `what` names the listed objects in the error for contradicting values.
pub(crate) fn label_filter(
    labels: &[String],
    what: &str,
) -> Result<Option<serde_json::Value>, ApiError> {
    let mut wanted = serde_json::Map::new();
    for l in labels {
        let (k, v) = l.split_once('=').ok_or_else(|| {
            ApiError::invalid_query("label filter must look like `key=value`").with_field("label")
        })?;
        if l.contains('\0') {
            return Err(ApiError::invalid_query(
                "label filters cannot contain NUL (%00); labels never do",
            )
            .with_field("label"));
        }
        if wanted
            .insert(k.to_string(), v.into())
            .is_some_and(|old| old != v)
        {
            return Err(ApiError::invalid_query(format!(
                "label `{k}` is asked for with two values; no {what} has both"
            ))
            .with_field("label"));
        }
    }
    Ok((!wanted.is_empty()).then_some(serde_json::Value::Object(wanted)))
}

/// List jobs, newest first, with keyset pagination.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "listJobs", tag = "jobs", params(ListParams),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<JobPage>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let p = list_params(query.as_deref().unwrap_or_default())?;
    let limit = page_limit(p.limit, 50, 500)?;
    let job_state = p
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::invalid_query(format!("unknown state `{s}`; use queued, scheduled, running, succeeded, failed, cancelled or error"))
                    .with_field("state")
            })
        })
        .transpose()?;
    let labels = label_filter(&p.label, "job")?;
    let before = page_cursor(p.cursor.as_deref())?;
    let filter = ListFilter {
        state: job_state,
        batch: p.batch,
        labels,
        before,
        limit,
    };
    let jobs = store_jobs::list(&state.pool, caller.tenant(), &filter).await?;
    let next_cursor = if jobs.len() as i64 == limit {
        jobs.last().map(|j| j.id.to_string())
    } else {
        None
    };
    Ok(Json(JobPage {
        jobs: jobs.into_iter().map(Job::from).collect(),
        next_cursor,
    }))
}

/// Cancel a job: a queued job is cancelled at once; a running job's sandbox is killed within a
/// second and the job ends `cancelled`.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", operation_id = "cancelJob", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled, or cancel requested (the job is running)", body = Job),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job already finished", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let id = parse_id(&id)?;
    match store_jobs::cancel(&state.pool, caller.tenant(), id, &caller.actor()).await? {
        CancelResult::NotFound => Err(ApiError::not_found(format!("no job {id}"))),
        CancelResult::AlreadyFinished(s) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyFinished,
            format!(
                "job {id} already finished ({}); there is nothing to cancel",
                s.as_str()
            ),
        )),
        CancelResult::CancelledNow | CancelResult::Requested => {
            let job = store_jobs::get(&state.pool, caller.tenant(), id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
            Ok(Json(job.into()))
        }
    }
}
