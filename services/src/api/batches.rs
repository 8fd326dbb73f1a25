//! `/v1/batches`: many jobs in one request and one transaction, a summary by state, and an SSE
//! stream of completions.

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::auth::Caller;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode, page_cursor, page_limit, parse_json};
use super::jobs::{
    ModuleCheck, idempotency_key, label_filter, parse_id, prepare, query_with_labels,
};
use super::types::{
    Batch, BatchCancelled, BatchCreated, BatchPage, BatchSpec, ErrorBody, Job, JobSpec,
};
use super::validate::{MAX_LABELS, canonical_hash};
use super::{AppState, Body, sse};
use crate::model::auth::Scope;
use crate::store::jobs::{self as store_jobs, BatchFilter, BatchSubmitted, NewBatch};
use crate::telemetry::TraceParent;
use tracing::Instrument as _;

/// Most jobs in one batch.
pub const MAX_BATCH_JOBS: usize = 10_000;
/// Finished jobs read per query by the event stream.
const EVENT_PAGE: i64 = 256;

/// Overlays `job` on `defaults`: job fields win; `env`, `labels` and `limits` merge key by key.
pub fn merge_defaults(
    defaults: &serde_json::Map<String, serde_json::Value>,
    job: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let serde_json::Value::Object(job) = job else {
        return Err("a job must be a JSON object".into());
    };
    let mut merged = defaults.clone();
    for (k, v) in job {
        match (merged.get_mut(&k), v) {
            (Some(serde_json::Value::Object(base)), serde_json::Value::Object(over))
                if matches!(k.as_str(), "env" | "labels" | "limits") =>
            {
                base.extend(over);
            }
            (_, v) => {
                merged.insert(k, v);
            }
        }
    }
    Ok(serde_json::Value::Object(merged))
}

/// Submit many jobs at once (all stored or none). Each job is `defaults` overlaid with its own
/// fields; the batch's labels are added to every job.
#[utoipa::path(post, path = "/v1/batches", operation_id = "submitBatch", tag = "batches",
    request_body = BatchSpec,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes retries safe, as for jobs. 1–255 visible ASCII characters"),
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context (`00-<trace id>-<parent span id>-<flags>`): every job of the batch joins the caller's trace (one trace per batch). A value that is not a valid traceparent is ignored (a new trace is started), never refused.")),
    responses(
        (status = 201, body = BatchCreated),
        (status = 200, description = "Replay of an earlier request with the same Idempotency-Key", body = BatchCreated),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BatchCreated>), ApiError> {
    caller.require(Scope::JobsWrite)?;
    let id = Uuid::now_v7();
    let span = tracing::debug_span!(
        "job.submit",
        batch.id = %id,
        tenant = %caller.tenant(),
        batch.jobs = tracing::field::Empty,
    );
    // One trace per batch: every job keeps this span's trace context.
    let trace = crate::telemetry::job_trace(&span, crate::telemetry::incoming(&headers));
    submit_traced(state, caller, headers, body, id, trace)
        .instrument(span)
        .await
}

async fn submit_traced(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    batch_id: Uuid,
    trace: TraceParent,
) -> Result<(StatusCode, Json<BatchCreated>), ApiError> {
    let body = body.json_sized()?;
    let spec: BatchSpec = parse_json(&body)?;
    let key = idempotency_key(&headers)?;
    if spec.jobs.is_empty() || spec.jobs.len() > MAX_BATCH_JOBS {
        return Err(ApiError::invalid(
            "jobs",
            format!(
                "a batch holds 1 to {MAX_BATCH_JOBS} jobs, got {}",
                spec.jobs.len()
            ),
        ));
    }
    if spec.labels.len() > MAX_LABELS {
        return Err(ApiError::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels are allowed"),
        ));
    }
    let batch_hash = canonical_hash(&spec);
    let mut jobs = Vec::with_capacity(spec.jobs.len());
    let mut queues = Vec::new();
    let mut known_modules = HashSet::new();
    let tenant = state.tenants.of(&state.pool, &caller).await?;
    for (i, raw) in spec.jobs.iter().enumerate() {
        let at = |e: ApiError| {
            let field = e
                .field
                .as_deref()
                .map_or_else(|| format!("jobs[{i}]"), |f| format!("jobs[{i}].{f}"));
            ApiError {
                message: format!("job {i}: {}", e.message),
                field: Some(field),
                ..e
            }
        };
        let merged = merge_defaults(&spec.defaults, raw.clone())
            .map_err(|m| at(ApiError::invalid("", m)))?;
        let mut job_spec: JobSpec = parse_json(merged.to_string().as_bytes()).map_err(at)?;
        for (k, v) in &spec.labels {
            job_spec
                .labels
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        let job = prepare(
            &state,
            &tenant,
            job_spec,
            Uuid::now_v7(),
            None,
            ModuleCheck::Here {
                known: &mut known_modules,
            },
            &trace,
        )
        .await
        .map_err(at)?;
        if !queues.contains(&job.queue) {
            queues.push(job.queue.clone());
        }
        jobs.push(job);
    }
    let labels = serde_json::to_value(&spec.labels).unwrap_or_default();
    tracing::Span::current().record("batch.jobs", jobs.len());
    let batch = NewBatch {
        id: batch_id,
        labels,
        spec_hash: batch_hash,
        idempotency_key: key,
        jobs,
        wakes: queues
            .iter()
            .filter_map(|q| state.notifier.wake(q))
            .collect(),
    };
    match store_jobs::submit_batch(&state.pool, &tenant, &batch).await? {
        BatchSubmitted::Created { id, job_ids } => {
            state.local_wake.notify_one();
            state.metrics.jobs_submitted.inc_by(job_ids.len() as u64);
            Ok((StatusCode::CREATED, Json(BatchCreated { id, job_ids })))
        }
        BatchSubmitted::Replayed { id, job_ids } => Ok((StatusCode::OK, Json(BatchCreated { id, job_ids }))),
        BatchSubmitted::Refused(r) => Err(super::jobs::refused(r)),
        BatchSubmitted::KeyConflict { existing } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            format!("this Idempotency-Key was already used for batch {existing} with a different request; use a new key"),
        )
        .with_field("Idempotency-Key")),
    }
}

/// A batch's jobs counted by state.
#[utoipa::path(get, path = "/v1/batches/{id}", operation_id = "getBatch", tag = "batches",
    params(("id" = Uuid, Path, description = "Batch id")),
    responses((status = 200, body = Batch), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Batch>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_id(&id)?;
    let batch = store_jobs::batch(&state.pool, caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no batch {id}")))?;
    Ok(Json(batch.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BatchListParams {
    /// Only batches with this label, as `key=value`; repeat the parameter for several labels (all
    /// must match).
    #[serde(default)]
    #[param(style = Form, explode, pattern = "^[^=\\u0000]+=[^\\u0000]*$")]
    pub label: Vec<String>,
    /// `true`: only batches whose jobs have all finished; `false`: only batches with a job still
    /// waiting or running.
    pub done: Option<bool>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// List the tenant's batches, newest first, with keyset pagination; each with its jobs counted
/// by state (as `GET /v1/batches/{id}`).
#[utoipa::path(get, path = "/v1/batches", operation_id = "listBatches", tag = "batches",
    params(BatchListParams),
    responses(
        (status = 200, description = "One page of batches, newest first", body = BatchPage),
        (status = 400, description = "An unknown, repeated or malformed query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<BatchPage>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let (labels, p): (_, BatchListParams) =
        query_with_labels(query.as_deref().unwrap_or_default())?;
    let limit = page_limit(p.limit, 50, 500)?;
    let filter = BatchFilter {
        labels: label_filter(&labels, "batch")?,
        done: p.done,
        before: page_cursor(p.cursor.as_deref())?,
        limit,
    };
    let batches = store_jobs::list_batches(&state.pool, caller.tenant(), &filter).await?;
    let next_cursor = if batches.len() as i64 == limit {
        batches.last().map(|b| b.id.to_string())
    } else {
        None
    };
    Ok(Json(BatchPage {
        batches: batches.into_iter().map(Batch::from).collect(),
        next_cursor,
    }))
}

/// Cancel every unfinished job of a batch: waiting jobs are cancelled at once, running jobs'
/// sandboxes are killed within about a second (as `POST /v1/jobs/{id}/cancel` does for one job).
/// Cancelling a finished batch changes nothing and answers 200 with zero counts.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", operation_id = "cancelBatch", tag = "batches",
    params(("id" = Uuid, Path, description = "Batch id")),
    responses(
        (status = 200, description = "The jobs affected and the batch afterwards", body = BatchCancelled),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such batch for this tenant", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BatchCancelled>, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let id = parse_id(&id)?;
    let not_found = || ApiError::not_found(format!("no batch {id}"));
    let done = store_jobs::cancel_batch(&state.pool, caller.tenant(), id, &caller.actor())
        .await?
        .ok_or_else(not_found)?;
    let batch = store_jobs::batch(&state.pool, caller.tenant(), id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(BatchCancelled {
        cancelled: done.cancelled,
        cancel_requested: done.cancel_requested,
        batch: batch.into(),
    }))
}

/// Where a batch event stream resumes: after the `n`th finished job, or after `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchPosition {
    After(i32),
    Done,
}

impl BatchPosition {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "done" => Some(Self::Done),
            n => n.parse().ok().filter(|n| *n >= 0).map(Self::After),
        }
    }
}

/// SSE stream of the batch's completions: a `job` event (the job record) for each job that
/// reaches a final state, in the order they finished, then `done` (the batch summary) when all
/// have finished. A `job` event's id is its position `n` (1..total) in that order; `done`'s is
/// `done`. Send `Last-Event-ID` to resume: only the jobs after that position follow; after
/// `done`, the answer is 204 (nothing more will come).
#[utoipa::path(get, path = "/v1/batches/{id}/events", operation_id = "streamBatchEvents", tag = "batches",
    params(("id" = Uuid, Path, description = "Batch id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (a position, or `done`)")),
    responses(
        (status = 200, description = "The SSE stream: a `job` event per finished job (in finish order), then `done`; the payloads are `BatchStreamEvent`",
            content((super::types::BatchStreamEvent = "text/event-stream"))),
        (status = 204, description = "Resume after the `done` event of a finished batch: nothing more will come"),
        (status = 400, description = "Last-Event-ID is not an id this stream sent", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "This API process serves its maximum of event streams (`--max-streams`); retry after Retry-After", body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_id(&id)?;
    let Some(batch) = store_jobs::batch(&state.pool, caller.tenant(), id).await? else {
        return Err(ApiError::not_found(format!("no batch {id}")));
    };
    let resume = sse::last_event_id(&headers, BatchPosition::parse, "a job's position or `done`")?
        .unwrap_or(BatchPosition::After(0));
    let after = match resume {
        // Everything was sent: 204 tells an EventSource to stop reconnecting.
        BatchPosition::Done if batch.finished => {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // `done` of a batch that is not finished cannot have been sent: start over.
        BatchPosition::Done => 0,
        BatchPosition::After(n) => n,
    };
    let tenant = caller.tenant().to_string();
    let streams = state.streams.clone();
    sse::respond(&streams, state.metrics.clone(), 256, move |tx| async move {
        if let Err(e) = follow_batch(&state, &tenant, id, after, &tx).await {
            tracing::warn!(batch = %id, error = %e, "batch stream ended early");
        }
    })
}

async fn follow_batch(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    mut after: i32,
    tx: &mpsc::Sender<Event>,
) -> Result<(), crate::store::StoreError> {
    let mut any_state = state.hub.watch_any_state();
    // Set once the batch was seen finished: every completion had committed by then, so one more
    // read gets the rest (fewer than `total` positions only if retention removed jobs).
    let mut final_read = false;
    loop {
        any_state.borrow_and_update();
        let jobs =
            store_jobs::finished_batch_jobs(&state.pool, tenant, id, after, EVENT_PAGE).await?;
        let full_page = jobs.len() as i64 == EVENT_PAGE;
        for (seq, job) in jobs {
            after = seq;
            let ev = sse::json_event("job", seq.to_string(), &Job::from(job));
            if tx.send(ev).await.is_err() {
                return Ok(());
            }
        }
        if full_page {
            continue;
        }
        let Some(batch) = store_jobs::batch(&state.pool, tenant, id).await? else {
            return Ok(());
        };
        // Every finished job has a position 1..total: `done` only once all were sent.
        if batch.finished && (i64::from(after) >= batch.total || final_read) {
            let ev = sse::json_event("done", "done", &Batch::from(batch));
            let _ = tx.send(ev).await;
            return Ok(());
        }
        if batch.finished {
            // Finished since the read above: read the rest at once.
            final_read = true;
            continue;
        }
        tokio::select! {
            _ = any_state.changed() => tokio::time::sleep(Duration::from_millis(200)).await,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tx.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_merge_key_by_key() {
        let defaults = serde_json::json!({"module": "m", "env": {"A": "1", "B": "2"}, "limits": {"fuel": 5}, "args": ["x"]});
        let job =
            serde_json::json!({"env": {"B": "3"}, "args": ["y"], "limits": {"wall_time_ms": 9}});
        let merged = merge_defaults(defaults.as_object().unwrap(), job).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({"module": "m", "env": {"A": "1", "B": "3"}, "limits": {"fuel": 5, "wall_time_ms": 9}, "args": ["y"]})
        );
        assert!(merge_defaults(defaults.as_object().unwrap(), serde_json::json!(1)).is_err());
    }
}
