//! `/v1/batches`: many jobs in one request and one transaction, a summary by state, and an SSE
//! stream of completions.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode, parse_json};
use super::jobs::{idempotency_key, parse_id, prepare};
use super::types::{Batch, BatchCreated, BatchSpec, ErrorBody, JobSpec};
use super::validate::{MAX_LABELS, canonical_hash};
use super::{AppState, Body};
use crate::model::auth::Scope;
use crate::store::jobs::{self as store_jobs, BatchSubmitted, NewBatch};

/// Most jobs in one batch.
pub const MAX_BATCH_JOBS: usize = 10_000;

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
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe, as for jobs")),
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
            &mut known_modules,
        )
        .await
        .map_err(at)?;
        if !queues.contains(&job.queue) {
            queues.push(job.queue.clone());
        }
        jobs.push(job);
    }
    let labels = serde_json::to_value(&spec.labels).unwrap_or_default();
    let batch = NewBatch {
        id: Uuid::now_v7(),
        labels,
        spec_hash: batch_hash,
        idempotency_key: key,
        jobs,
        notify_queues: queues,
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
    Ok(Json(batch))
}

/// SSE stream of the batch's completions: a `job` event (the job record, id = job id) for each job
/// that reaches a final state — on connect, every job already finished — then `done` (the batch
/// summary) when all have finished. Reconnecting replays the finished jobs; skip ids already seen.
#[utoipa::path(get, path = "/v1/batches/{id}/events", operation_id = "streamBatchEvents", tag = "batches",
    params(("id" = Uuid, Path, description = "Batch id")),
    responses((status = 200, description = "text/event-stream", body = String), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_id(&id)?;
    if store_jobs::batch(&state.pool, caller.tenant(), id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no batch {id}")));
    }
    let (tx, rx) = mpsc::channel::<Event>(256);
    let tenant = caller.tenant().to_string();
    tokio::spawn(async move {
        state.metrics.sse_clients.inc();
        if let Err(e) = follow_batch(&state, &tenant, id, &tx).await {
            tracing::warn!(batch = %id, error = %e, "batch stream ended early");
        }
        state.metrics.sse_clients.dec();
    });
    let events = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn follow_batch(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    tx: &mpsc::Sender<Event>,
) -> Result<(), crate::store::StoreError> {
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut any_state = state.hub.watch_any_state();
    loop {
        any_state.borrow_and_update();
        for job in store_jobs::finished_batch_jobs(&state.pool, tenant, id).await? {
            if seen.insert(job.id) {
                let ev = Event::default()
                    .event("job")
                    .id(job.id.to_string())
                    .data(serde_json::to_string(&job).unwrap_or_default());
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
            }
        }
        let Some(batch) = store_jobs::batch(&state.pool, tenant, id).await? else {
            return Ok(());
        };
        if batch.finished {
            let ev = Event::default()
                .event("done")
                .id("done")
                .data(serde_json::to_string(&batch).unwrap_or_default());
            let _ = tx.send(ev).await;
            return Ok(());
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
