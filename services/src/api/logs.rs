//! `GET /v1/jobs/{id}/logs`: live output over SSE, resumable with `Last-Event-ID`, or the plain
//! stored log.
//!
//! Event ids are stream positions `"{attempt}.{seq}"`: a `log` event is chunk `seq` of `attempt`;
//! the `state` event announcing attempt `a` is `"{a}.0"`; other `state` events carry the position
//! reached so far; the final `exit` event is `"{attempt}.end"`. Resuming after an id sends exactly
//! the events after that position, across queued → running → finished (and retries).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::hub::{AwaitsAnswer, JobWatch, Taken};
use super::jobs::parse_id;
use super::sse::{self, json_event};
use super::types::{
    ErrorBody, ExitEvent, JobState, LogEvent, OutcomeView, StateEvent, text_or_base64,
};
use crate::grading::SuiteEvent;
use crate::model::JobRecord;
use crate::model::auth::Scope;
use crate::model::{ChunkKind, LineStamper, OutputStream};
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
    #[param(value_type = Option<String>, pattern = "^(stdout|stderr)$")]
    pub stream: Option<String>,
    /// Just the last N lines of the latest attempt's output (a final line without its newline
    /// counts); on the SSE stream, where it starts (ignored when resuming with `Last-Event-ID`).
    #[param(minimum = 0, example = 20)]
    pub tail: Option<u32>,
    /// Just the output stored at or after this time (RFC 3339, e.g.
    /// `2026-12-04T10:00:00Z`). Output stored before the server recorded times is left out.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-12-04T10:00:00Z")]
    pub since: Option<String>,
    /// Plain log only: start each line with the time its output was stored (RFC 3339 in UTC,
    /// microseconds, then a space; `-` for output stored before the server recorded times).
    pub timestamps: Option<bool>,
}

/// The plain log's selection and format, parsed from [`LogParams`].
#[derive(Debug, Clone, Copy, Default)]
struct PlainRequest {
    filter: logs::ChunkFilter,
    tail: Option<u32>,
    timestamps: bool,
}

impl PlainRequest {
    /// What the SSE stream cannot do: it carries both streams, each `log` event with its time.
    fn is_plain_only(&self) -> bool {
        self.filter.stream.is_some() || self.timestamps
    }
}

fn plain_request(params: LogParams) -> Result<PlainRequest, ApiError> {
    let stream = match params
        .stream
        .as_deref()
        .map(|n| (n, OutputStream::parse(n)))
    {
        None => None,
        Some((_, Some(stream))) => Some(stream),
        Some((other, None)) => {
            return Err(ApiError::invalid_query(format!(
                "unknown stream `{other}`; use stdout or stderr"
            ))
            .with_field("stream"));
        }
    };
    let since = match params.since.as_deref() {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    ApiError::invalid_query(format!(
                        "`since` is not an RFC 3339 time ({e}); write e.g. 2026-12-04T10:00:00Z"
                    ))
                    .with_field("since")
                })?
                .with_timezone(&chrono::Utc),
        ),
    };
    Ok(PlainRequest {
        filter: logs::ChunkFilter {
            stream,
            since,
            through_seq: None,
        },
        tail: params.tail,
        timestamps: params.timestamps.unwrap_or(false),
    })
}

/// A job's output. With `Accept: text/event-stream`: SSE events `state`, `log` and finally `exit`
/// (see the module docs for ids; send `Last-Event-ID` to resume), optionally from the last `tail`
/// lines or from a time on (`since`). Otherwise: the stored output of the latest attempt as raw
/// bytes, optionally one stream, the last lines, from a time on, each line with its time.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", operation_id = "getJobLogs", tag = "logs",
    security(("bearer" = []), ("console_cookie" = [])),
    params(("id" = Uuid, Path, description = "Job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
        LogParams),
    responses(
        (status = 200, description = "With `Accept: text/event-stream`: the SSE stream, whose events `state`, `log`, `exit` (and for test suites `build_finished`, `case_started`, `case_finished`) carry the JSON payloads of `LogStreamEvent`. Otherwise the stored output as raw bytes",
            content((super::types::LogStreamEvent = "text/event-stream"), (super::types::BinaryBody = "application/octet-stream"))),
        (status = 204, description = "SSE resume after the final `exit` event of a finished job: nothing more will come"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "SSE only: this API process serves its maximum of event streams (`--max-streams`); retry after Retry-After", body = ErrorBody),
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
    let request = plain_request(params)?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    // A stream subscribes before it reads the job: this read then serves as the stream's first,
    // and every notification after it wakes the stream. It also asks a writer in this process
    // that stores the job's end to read the final record back for it.
    let watch = wants_sse.then(|| (state.hub.watch_job(id), state.hub.following(id)));
    // The resume position, parsed once; a malformed one is refused below, after the job's
    // lookup, as for every stream.
    let resume = sse::last_event_id(&headers, Position::parse, "`ATTEMPT.SEQ` or `ATTEMPT.end`");
    // A stream that starts at a known position (not at a `tail`) reads its first chunks with
    // the job, in one statement.
    let first_after = match (wants_sse, request.tail, &resume) {
        (true, None, Ok(None)) => Some(Position::START),
        (true, _, Ok(Some(at @ Position::At { .. }))) => Some(*at),
        _ => None,
    };
    let missing = || ApiError::not_found(format!("no job {id}"));
    let (job, first_chunks) = match first_after {
        Some(Position::At { attempt, seq }) => {
            // On a connection the handlers share (`store::Warm`), given back after a good read.
            let mut conn = state
                .warm
                .conn()
                .await
                .map_err(crate::store::StoreError::from)?;
            let found = store_jobs::get_with_chunks_after(
                &mut *conn,
                caller.tenant(),
                id,
                (attempt, seq),
                PAGE,
            )
            .await?;
            conn.done();
            let (job, chunks) = found.ok_or_else(missing)?;
            (job, Some(chunks))
        }
        _ => (
            store_jobs::get(&state.pool, caller.tenant(), id)
                .await?
                .ok_or_else(missing)?,
            None,
        ),
    };
    let Some((watch, follows)) = watch else {
        return plain(state, job, request).await;
    };
    if request.is_plain_only() {
        return Err(ApiError::invalid_query(
            "`stream` and `timestamps` apply to the plain log; SSE carries both streams, each `log` \
             event with its time in `at`",
        ));
    }
    let resume = resume?;
    // A client resuming after the final `exit` event has everything: 204 tells an EventSource
    // to stop reconnecting (the SSE specification's way to end a stream for good).
    if resume == Some(Position::End) && job.state.is_terminal() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // `tail` picks where a fresh stream starts: before the chunk holding the first wanted line,
    // with the bytes before that line cut from it.
    let mut start = Start {
        at: resume.unwrap_or(Position::START),
        cut: None,
        since: request.filter.since,
    };
    if let (None, Some(lines)) = (resume, request.tail) {
        let filter = logs::ChunkFilter {
            since: request.filter.since,
            ..logs::ChunkFilter::default()
        };
        if let Some((seq, offset)) =
            logs::tail_start(&state.pool, job.id, job.attempt, filter, lines, PAGE).await?
        {
            start.at = Position::At {
                attempt: job.attempt,
                seq: seq - 1,
            };
            start.cut = Some((job.attempt, seq, offset));
        }
    }
    let tenant = caller.tenant().to_string();
    let streams = state.streams.clone();
    let first = First {
        watch,
        _follows: follows,
        job,
        chunks: first_chunks,
    };
    sse::respond(&streams, state.metrics.clone(), 64, move |tx| {
        follow(state, tenant, first, start, tx)
    })
}

/// The SSE event of a stored chunk: `log` for output, the suite event's own name for a
/// test-suite event (`case_started`, `case_finished`, `build_finished`).
fn log_event(c: &StoredChunk) -> Event {
    let id = Position::At {
        attempt: c.attempt,
        seq: c.seq,
    }
    .id();
    let stream = match c.stream {
        ChunkKind::Output(s) => s.as_str(),
        ChunkKind::Event => {
            return match serde_json::from_slice::<SuiteEvent>(&c.data) {
                Ok(e) => json_event(e.name(), id, &e.data()),
                Err(e) => {
                    // Written by this service: unreadable only if a newer version wrote it.
                    tracing::warn!(error = %e, seq = c.seq, "a stored suite event did not parse");
                    Event::default().comment("an event this server version cannot read")
                }
            };
        }
    };
    let (text, base64) = text_or_base64(c.data.clone());
    let payload = LogEvent {
        stream: stream.into(),
        text,
        base64,
        at: c.stored_at,
    };
    json_event("log", id, &payload)
}

/// Where an SSE stream starts and what it leaves out.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// The position after which events are sent.
    at: Position,
    /// `(attempt, seq, n)`: the first `n` bytes of that chunk are left out (`tail`).
    cut: Option<(i32, i32, usize)>,
    /// Output stored before this time is left out (its positions still pass).
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a stream has when it begins: the job's watch, and the job as read after subscribing.
struct First {
    watch: JobWatch,
    /// Held to the stream's end: a writer here reads the job's final record back for it.
    _follows: AwaitsAnswer,
    job: JobRecord,
    /// The chunks after the stream's start, read with `job` (none: not read yet).
    chunks: Option<Vec<StoredChunk>>,
}

/// Feeds one SSE client until the job's `exit` event or until the client goes away.
async fn follow(
    state: AppState,
    tenant: String,
    first: First,
    start: Start,
    tx: mpsc::Sender<Event>,
) {
    let id = first.job.id;
    if let Err(e) = follow_inner(&state, &tenant, first, start, &tx).await {
        tracing::warn!(job = %id, error = %e, "log stream ended early");
    }
}

/// The stream's loop. Each pass reads the chunks after the position reached and sends them; what
/// else it reads depends on what woke it (see [`super::hub::JobSignal`]):
/// - new output: nothing else — the job is not read again;
/// - the job's completion: its last chunks, then `exit` with the final record as the flush that
///   stored the job's end read it back, when a writer in this process stored it
///   ([`super::hub::Hub::following`]): a live follower does not read its job again. Otherwise
///   the last chunks and the final record, read at once (both reads start after the
///   notification, which came from the transaction that stored the last output with the
///   completion);
/// - another state change, or the timer's recheck (for notifications lost while the LISTEN
///   connection was down): the job, after the chunks; a final state read that way means one more
///   pass for the chunks stored between the two reads, then `exit`.
///
/// The first pass uses the handler's read of the job, made after subscribing and before any chunk
/// read: a final state there means the first chunk reads find all of the output.
async fn follow_inner(
    state: &AppState,
    tenant: &str,
    first: First,
    start: Start,
    tx: &mpsc::Sender<Event>,
) -> Result<(), crate::store::StoreError> {
    let First {
        mut watch,
        _follows,
        job,
        chunks: first_chunks,
    } = first;
    let id = job.id;
    let (mut attempt, mut seq) = match start.at {
        Position::End => return Ok(()),
        Position::At { attempt, seq } => (attempt, seq),
    };
    // The job as last read: before this pass's chunk read, or (see above) alongside it.
    let mut record = job;
    // Whether this pass must read the job after its chunks.
    let mut read_record = false;
    let mut seen_state_changes = watch.subscribed.state_changes;
    let mut last_state: Option<(JobState, i32)> = None;
    let send = |e: Event| async move { tx.send(e).await.is_ok() };
    // Woken by a notification: the reads are shared with the job's other followers woken by it
    // (one query for all of them, `Hub::chunks_after`). The first pass and the timer's rechecks
    // read for themselves.
    let mut notified = false;
    // The writer here did not hand the final record over in time: read it.
    let mut read_end = false;
    // The first chunks, read with the job: they serve the first pass unless a notification came
    // since the subscription (it may have come after that read).
    let mut first_chunks = first_chunks.map(Arc::new);
    loop {
        // Mark the current notification as seen before reading, so none is missed.
        let signal = *watch.rx.borrow_and_update();
        let read_with_job = first_chunks
            .take()
            .filter(|_| signal.version == watch.subscribed.version);
        let shared = notified.then_some(signal.version);
        if signal.state_changes != seen_state_changes {
            seen_state_changes = signal.state_changes;
            read_record = true;
        }
        let chunks = state
            .hub
            .chunks_after(&state.pool, id, shared, (attempt, seq), PAGE);
        let chunks = if signal.finished && !record.state.is_terminal() {
            match state.hub.final_record(id) {
                Taken::Answer(answer) if !read_end => {
                    record = answer.0.clone();
                    chunks.await?
                }
                Taken::Pending if !read_end => {
                    // Woken by the commit's NOTIFY before the writer here handed the record
                    // over: it comes with the next wake-up.
                    notified = tokio::select! {
                        _ = watch.rx.changed() => true,
                        _ = tokio::time::sleep(RECHECK) => {
                            read_end = true;
                            false
                        }
                        _ = tx.closed() => return Ok(()),
                    };
                    continue;
                }
                _ => {
                    let (chunks, job) =
                        tokio::join!(chunks, state.hub.job(&state.pool, tenant, id, shared));
                    let Some(job) = job? else {
                        return Ok(());
                    };
                    record = job;
                    chunks?
                }
            }
        } else if let Some(chunks) = read_with_job {
            chunks
        } else {
            chunks.await?
        };
        for c in chunks.iter() {
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
            if start
                .since
                .is_some_and(|since| c.stored_at.is_none_or(|t| t < since))
            {
                continue;
            }
            let cut = match start.cut {
                Some((a, s, n)) if (a, s) == (c.attempt, c.seq) => n,
                _ => 0,
            };
            if cut >= c.data.len() {
                continue;
            }
            let event = if cut == 0 {
                log_event(c)
            } else {
                let mut rest = c.clone();
                rest.data.drain(..cut);
                log_event(&rest)
            };
            if !send(event).await {
                return Ok(());
            }
        }
        if chunks.len() as i64 == PAGE {
            continue;
        }
        if record.state.is_terminal() {
            // Read before this pass's chunks (or alongside them, after its completion was
            // announced): everything was sent.
            let _ = send(exit_event(&record)).await;
            return Ok(());
        }
        if read_record {
            read_record = false;
            let Some(job) = state.hub.job(&state.pool, tenant, id, shared).await? else {
                return Ok(());
            };
            record = job;
            if record.state.is_terminal() {
                // Output may have been stored between the chunk read and this one: one more
                // pass, reading for ourselves (a shared read of this notification may predate
                // what this read found).
                notified = false;
                continue;
            }
        }
        // A state the client has not been told, unless the chunks went past it (the handler's
        // read predates them).
        let current = (record.state, record.attempt);
        if record.attempt >= attempt && last_state != Some(current) {
            last_state = Some(current);
            let pos = if record.state == JobState::Running && record.attempt > attempt {
                attempt = record.attempt;
                seq = 0;
                Position::At { attempt, seq }
            } else {
                Position::At { attempt, seq }
            };
            let ev = StateEvent {
                state: record.state,
                attempt: record.attempt,
            };
            if !send(json_event("state", pos.id(), &ev)).await {
                return Ok(());
            }
        }
        notified = tokio::select! {
            _ = watch.rx.changed() => true,
            _ = tokio::time::sleep(RECHECK) => {
                read_record = true;
                false
            }
            _ = tx.closed() => return Ok(()),
        };
    }
}

fn exit_event(job: &JobRecord) -> Event {
    let ev = ExitEvent {
        state: job.state,
        attempt: job.attempt,
        outcome: job.outcome.clone().map(OutcomeView::from),
        usage: job.usage.clone(),
    };
    json_event("exit", format!("{}.end", job.attempt), &ev)
}

/// The stored output of the job's latest attempt, streamed page by page: the chunks stored when
/// the request came, as `request` selects them.
async fn plain(
    state: AppState,
    job: JobRecord,
    request: PlainRequest,
) -> Result<Response, ApiError> {
    let mut filter = request.filter;
    let through = logs::last_seq(&state.pool, job.id, job.attempt).await?;
    filter.through_seq = Some(through);
    let (after, mut skip) = match request.tail {
        None => (0, 0),
        Some(lines) => {
            match logs::tail_start(&state.pool, job.id, job.attempt, filter, lines, PAGE).await? {
                None => (0, 0),
                Some((seq, offset)) => (seq - 1, offset),
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut after = after;
        let mut stamper = request.timestamps.then(LineStamper::default);
        loop {
            match logs::attempt_chunks_after(&state.pool, job.id, job.attempt, after, filter, PAGE)
                .await
            {
                Ok(chunks) => {
                    let n = chunks.len() as i64;
                    for mut c in chunks {
                        after = c.seq;
                        if skip > 0 {
                            c.data.drain(..skip.min(c.data.len()));
                            skip = 0;
                        }
                        let data = match (&mut stamper, c.stream) {
                            (_, ChunkKind::Event) => continue,
                            (Some(s), ChunkKind::Output(stream)) => {
                                s.stamp(stream, c.stored_at, &c.data)
                            }
                            (None, _) => c.data,
                        };
                        if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
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
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
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
