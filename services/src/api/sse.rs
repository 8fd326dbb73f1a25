//! What the API's two SSE streams (a job's log, a batch's completions) share: reading the
//! `Last-Event-ID` of a reconnecting client, JSON events, and the response itself — a `retry:`
//! first, keep-alives, and a feeder task counted in the `sse_clients` gauge while it runs.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;

/// The `retry:` sent to SSE clients: how long an EventSource waits before reconnecting.
pub const RECONNECT: Duration = Duration::from_secs(1);

/// The `Last-Event-ID` a reconnecting client sent, read by `parse`: `None` without one, a 400
/// naming the header when it is not an id this stream sends (`expected` says what those look
/// like).
pub fn last_event_id<T>(
    headers: &HeaderMap,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    let Some(raw) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    parse(raw).map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidHeader,
            format!("Last-Event-ID `{raw}` is not an id this stream sent ({expected})"),
        )
        .with_field("Last-Event-ID")
    })
}

/// An event named `name` with id `id` whose data is `payload` as JSON.
pub fn json_event<T: serde::Serialize>(name: &str, id: impl Into<String>, payload: &T) -> Event {
    Event::default()
        .event(name)
        .id(id.into())
        .data(serde_json::to_string(payload).unwrap_or_default())
}

/// A permit of `streams` for one long-lived request (an event stream, a waiting submission); with
/// none left, 503 with `Retry-After: 1`, counted in `nekton_sse_refused_total`.
pub fn stream_permit(
    streams: &Arc<Semaphore>,
    metrics: &Metrics,
) -> Result<OwnedSemaphorePermit, ApiError> {
    streams.clone().try_acquire_owned().map_err(|_| {
        metrics.sse_refused.inc();
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "this API process serves as many event streams and waiting submissions as it is \
             configured for (--max-streams); retry in a second, or through another API replica",
        )
        .with_retry_after(1)
    })
}

/// The SSE response whose events `feed` sends (up to `buffered` waiting), run as its own task
/// counted in `metrics.sse_clients`:
/// first a `retry:` (how soon a browser's EventSource reconnects after a dropped connection),
/// then the events, with keep-alives in between. The stream ends when `feed` returns.
///
/// Each stream holds a permit of `streams` (the API process's `max_streams`) while its task runs;
/// with none left the request is refused — 503, `Retry-After: 1` — before anything is spawned,
/// so a crowd of watchers is shed, not served until memory runs out.
pub fn respond<F, Fut>(
    streams: &Arc<Semaphore>,
    metrics: Metrics,
    buffered: usize,
    feed: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permit = stream_permit(streams, &metrics)?;
    let (tx, rx) = mpsc::channel::<Event>(buffered);
    let feeding = feed(tx);
    tokio::spawn(async move {
        metrics.sse_clients.inc();
        feeding.await;
        metrics.sse_clients.dec();
        drop(permit);
    });
    let retry = tokio_stream::once(Event::default().retry(RECONNECT));
    let events = tokio_stream::StreamExt::map(
        tokio_stream::StreamExt::chain(retry, ReceiverStream::new(rx)),
        Ok::<_, Infallible>,
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
