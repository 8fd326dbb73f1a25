//! `/v1/jobs`: submit, get, list, cancel.

use std::collections::HashSet;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::error::{ApiError, ErrorCode, parse_json};
use super::types::{ErrorBody, Job, JobPage, JobSpec, JobState};
use super::validate::{canonical_hash, resolve};
use super::{AppState, Body};
use crate::store::jobs::{self as store_jobs, CancelResult, ListFilter, NewJob, Submitted};
use crate::store::modules;

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

/// Validates a spec, resolves its defaults and checks its module exists (images are pulled by the
/// worker that runs the job): a job ready to store.
/// `known_modules` remembers digests already found to exist (a batch checks each once).
pub async fn prepare(
    state: &AppState,
    spec: JobSpec,
    id: Uuid,
    idempotency_key: Option<String>,
    known_modules: &mut HashSet<String>,
) -> Result<NewJob, ApiError> {
    let spec_hash = canonical_hash(&spec);
    let resolved = resolve(spec, &state.policy)?;
    let is_module = resolved.module.is_some();
    let program = resolved
        .module
        .clone()
        .or_else(|| resolved.image.clone())
        .unwrap_or_default();
    if is_module
        && !known_modules.contains(&program)
        && !modules::exists(&state.pool, state.tenant(), &program).await?
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ModuleNotFound,
            format!("no module {program} is stored; upload it first with POST /v1/modules (or `nekton module push FILE.wasm`)"),
        )
        .with_field("module"));
    }
    if is_module {
        known_modules.insert(program.clone());
    }
    Ok(NewJob {
        id,
        queue: resolved.queue.clone().unwrap_or_else(|| "default".into()),
        priority: resolved.priority.unwrap_or(0),
        max_attempts: resolved.max_attempts.unwrap_or(1) as i32,
        labels: serde_json::to_value(&resolved.labels).unwrap_or_default(),
        program,
        spec: crate::model::ResolvedJob::try_from(resolved.clone())
            .map_err(|e| {
                tracing::error!(error = %e, "a resolved spec did not convert to the job model");
                ApiError::internal()
            })?
            .to_stored(),
        spec_hash,
        idempotency_key,
    })
}

/// Submit a job. It is queued at once; follow it with `GET /v1/jobs/{id}/logs`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = JobSpec,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body return the same job; the same key with another body is a 422")),
    responses(
        (status = 201, description = "Queued", body = Job),
        (status = 200, description = "Replay of an earlier request with the same Idempotency-Key", body = Job),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid spec, unknown module, or Idempotency-Key reused with another body", body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let body = body.json_sized()?;
    let spec: JobSpec = parse_json(&body)?;
    let key = idempotency_key(&headers)?;
    let job = prepare(&state, spec, Uuid::now_v7(), key, &mut HashSet::new()).await?;
    let queue = job.queue.clone();
    let notify = state.notifier.notify_now(&queue);
    match store_jobs::submit(&state.pool, state.tenant(), job, notify).await? {
        Submitted::Created(job) => {
            state.local_wake.notify_one();
            state.metrics.jobs_submitted.inc();
            Ok((StatusCode::CREATED, Json(*job)))
        }
        Submitted::Replayed(job) => Ok((StatusCode::OK, Json(*job))),
        Submitted::KeyConflict { existing } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            format!("this Idempotency-Key was already used for job {existing} with a different request; use a new key for a new job"),
        )
        .with_field("Idempotency-Key")),
    }
}

/// Get a job: its state, outcome and usage.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    let job = store_jobs::get(&state.pool, state.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(job))
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
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs with this label, as `key=value`.
    pub label: Option<String>,
    /// Only jobs of this batch.
    pub batch: Option<Uuid>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    pub limit: Option<i64>,
}

/// List jobs, newest first, with keyset pagination.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListParams),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(p) = params.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            e.body_text(),
        )
    })?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            "limit must be between 1 and 500",
        )
        .with_field("limit"));
    }
    let job_state = p
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, format!("unknown state `{s}`; use queued, scheduled, running, succeeded, failed, cancelled or error"))
                    .with_field("state")
            })
        })
        .transpose()?;
    let labels = p
        .label
        .as_deref()
        .map(|l| {
            let (k, v) = l.split_once('=').ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidQuery,
                    "label filter must look like `key=value`",
                )
                .with_field("label")
            })?;
            Ok::<_, ApiError>(serde_json::json!({ k: v }))
        })
        .transpose()?;
    let before = p
        .cursor
        .as_deref()
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidQuery,
                    "cursor is not one this API returned; pass `next_cursor` as is",
                )
                .with_field("cursor")
            })
        })
        .transpose()?;
    let filter = ListFilter {
        state: job_state,
        batch: p.batch,
        labels,
        before,
        limit,
    };
    let jobs = store_jobs::list(&state.pool, state.tenant(), &filter).await?;
    let next_cursor = if jobs.len() as i64 == limit {
        jobs.last().map(|j| j.id.to_string())
    } else {
        None
    };
    Ok(Json(JobPage { jobs, next_cursor }))
}

/// Cancel a job: a queued job is cancelled at once; a running job's sandbox is killed within a
/// second and the job ends `cancelled`.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled, or cancel requested (the job is running)", body = Job),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job already finished", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    match store_jobs::cancel(&state.pool, state.tenant(), id).await? {
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
            let job = store_jobs::get(&state.pool, state.tenant(), id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
            Ok(Json(job))
        }
    }
}
