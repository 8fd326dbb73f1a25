//! `GET /v1/jobs/{id}/logs`: live output over SSE, resumable with `Last-Event-ID`, or the plain
//! stored log.
//!
//! Event ids are stream positions `"{attempt}.{seq}"`: a `log` event is chunk `seq` of `attempt`;
//! the `state` event announcing attempt `a` is `"{a}.0"`; other `state` events carry the position
//! reached so far; the final `exit` event is `"{attempt}.end"`. Resuming after an id sends exactly
//! the events after that position, across queued → running → finished (and retries).

use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use super::jobs::parse_id;
use super::sse::{self, json_event};
use super::types::{ErrorBody, ExitEvent, Job, JobState, LogEvent, StateEvent};
use crate::model::OutputStream;
use crate::model::auth::Scope;
use crate::store::jobs as store_jobs;
use crate::store::logs::{self, StoredChunk};

/// Chunks read per query.
const PAGE: i64 = 256;
/// Streams re-check the database this often even without a notification.
const RECHECK: Duration = Duration::from_secs(1);

/// A position in a job's event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Position {
    At { attempt: i32, seq: i32 },
    End,
}

impl Position {
    pub const START: Position = Position::At { attempt: 0, seq: 0 };

    pub fn parse(s: &str) -> Option<Self> {
        let (a, rest) = s.trim().split_once('.')?;
        let attempt: i32 = a.parse().ok().filter(|a| *a >= 0)?;
        if rest == "end" {
            return Some(Position::End);
        }
        let seq: i32 = rest.parse().ok().filter(|s| *s >= 0)?;
        Some(Position::At { attempt, seq })
    }

    fn id(self) -> String {
        match self {
            Position::At { attempt, seq } => format!("{attempt}.{seq}"),
            Position::End => "end".into(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Plain log only: `stdout` or `stderr` (default both, interleaved as written).
    pub stream: Option<String>,
}

/// A job's output. With `Accept: text/event-stream`: SSE events `state`, `log` and finally `exit`
/// (see the module docs for ids; send `Last-Event-ID` to resume). Otherwise: the stored output of
/// the latest attempt as raw bytes.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", operation_id = "getJobLogs", tag = "logs",
    security(("bearer" = []), ("console_cookie" = [])),
    params(("id" = Uuid, Path, description = "Job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
        LogParams),
    responses(
        (status = 200, description = "With `Accept: text/event-stream`: the SSE stream, whose events `state`, `log` and `exit` carry the JSON payloads of `LogStreamEvent`. Otherwise the stored output as raw bytes",
            content((super::types::LogStreamEvent = "text/event-stream"), (super::types::BinaryBody = "application/octet-stream"))),
        (status = 204, description = "SSE resume after the final `exit` event of a finished job: nothing more will come"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_id(&id)?;
    let Query(params) = params.map_err(ApiError::from_query)?;
    let stream = match params
        .stream
        .as_deref()
        .map(|n| (n, OutputStream::parse(n)))
    {
        None => None,
        Some((_, Some(stream))) => Some(stream),
        Some((other, None)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidQuery,
                format!("unknown stream `{other}`; use stdout or stderr"),
            )
            .with_field("stream"));
        }
    };
    let job = store_jobs::get(&state.pool, caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_sse {
        return Ok(plain(state, job, stream));
    }
    if stream.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            "`stream` applies to the plain log; SSE carries both streams",
        ));
    }
    let resume = sse::last_event_id(&headers, Position::parse, "`ATTEMPT.SEQ` or `ATTEMPT.end`")?;
    // A client resuming after the final `exit` event has everything: 204 tells an EventSource
    // to stop reconnecting (the SSE specification's way to end a stream for good).
    if resume == Some(Position::End) && job.state.is_terminal() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let tenant = caller.tenant().to_string();
    Ok(sse::respond(state.metrics.clone(), 64, move |tx| {
        follow(state, tenant, id, resume, tx)
    }))
}

fn log_event(c: &StoredChunk) -> Event {
    let stream = c.stream.as_str();
    let payload = match std::str::from_utf8(&c.data) {
        Ok(text) => LogEvent {
            stream: stream.into(),
            text: Some(text.to_string()),
            base64: None,
        },
        Err(_) => LogEvent {
            stream: stream.into(),
            text: None,
            base64: Some(base64::engine::general_purpose::STANDARD.encode(&c.data)),
        },
    };
    json_event(
        "log",
        Position::At {
            attempt: c.attempt,
            seq: c.seq,
        }
        .id(),
        &payload,
    )
}

/// Feeds one SSE client until the job's `exit` event or until the client goes away.
async fn follow(
    state: AppState,
    tenant: String,
    id: Uuid,
    resume: Option<Position>,
    tx: mpsc::Sender<Event>,
) {
    if let Err(e) = follow_inner(&state, &tenant, id, resume, &tx).await {
        tracing::warn!(job = %id, error = %e, "log stream ended early");
    }
}

async fn follow_inner(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    resume: Option<Position>,
    tx: &mpsc::Sender<Event>,
) -> Result<(), crate::store::StoreError> {
    let (mut attempt, mut seq) = match resume.unwrap_or(Position::START) {
        Position::End => return Ok(()),
        Position::At { attempt, seq } => (attempt, seq),
    };
    let mut watch = state.hub.watch_job(id);
    let mut last_state: Option<(JobState, i32)> = None;
    let send = |e: Event| async move { tx.send(e).await.is_ok() };
    loop {
        // Mark the current notification as seen before reading, so none is missed.
        watch.rx.borrow_and_update();
        let chunks = logs::chunks_after(&state.pool, id, (attempt, seq), PAGE).await?;
        for c in &chunks {
            if c.attempt != attempt {
                attempt = c.attempt;
                let ev = StateEvent {
                    state: JobState::Running,
                    attempt,
                };
                last_state = Some((JobState::Running, attempt));
                if !send(json_event(
                    "state",
                    Position::At { attempt, seq: 0 }.id(),
                    &ev,
                ))
                .await
                {
                    return Ok(());
                }
            }
            seq = c.seq;
            if !send(log_event(c)).await {
                return Ok(());
            }
        }
        if chunks.len() as i64 == PAGE {
            continue;
        }
        let Some(job) = store_jobs::get(&state.pool, tenant, id).await? else {
            return Ok(());
        };
        if job.state.is_terminal() {
            // Output is stored before the completion; read what arrived since the last query.
            let more = logs::chunks_after(&state.pool, id, (attempt, seq), 1).await?;
            if !more.is_empty() {
                continue;
            }
            let _ = send(exit_event(&job)).await;
            return Ok(());
        }
        let current = (job.state, job.attempt);
        if last_state != Some(current) {
            last_state = Some(current);
            let pos = if job.state == JobState::Running && job.attempt > attempt {
                attempt = job.attempt;
                seq = 0;
                Position::At { attempt, seq }
            } else {
                Position::At { attempt, seq }
            };
            let ev = StateEvent {
                state: job.state,
                attempt: job.attempt,
            };
            if !send(json_event("state", pos.id(), &ev)).await {
                return Ok(());
            }
        }
        tokio::select! {
            _ = watch.rx.changed() => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = tx.closed() => return Ok(()),
        }
    }
}

fn exit_event(job: &Job) -> Event {
    let ev = ExitEvent {
        state: job.state,
        attempt: job.attempt,
        outcome: job.outcome.clone(),
        usage: job.usage.clone(),
    };
    json_event("exit", format!("{}.end", job.attempt), &ev)
}

/// The stored output of the job's latest attempt, streamed page by page.
fn plain(state: AppState, job: Job, stream: Option<OutputStream>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut after = 0;
        loop {
            match logs::attempt_chunks_after(&state.pool, job.id, job.attempt, after, stream, PAGE)
                .await
            {
                Ok(chunks) => {
                    let n = chunks.len() as i64;
                    for c in chunks {
                        after = c.seq;
                        if tx.send(Ok(c.data)).await.is_err() {
                            return;
                        }
                    }
                    if n < PAGE {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e, "reading the log failed");
                    let _ = tx
                        .send(Err(std::io::Error::other("reading the log failed")))
                        .await;
                    return;
                }
            }
        }
    });
    let body = HttpBody::from_stream(ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order() {
        for s in ["0.0", "1.5", "3.2147483647"] {
            assert_eq!(Position::parse(s).unwrap().id(), s);
        }
        assert_eq!(Position::parse("2.end"), Some(Position::End));
        for bad in ["", "1", "a.b", "-1.0", "1.-2", "1.2.3"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
        assert!(Position::parse("1.9").unwrap() < Position::parse("2.0").unwrap());
    }
}
