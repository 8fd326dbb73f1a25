//! `POST /v1/jobs?wait=SECS`: a submission answered once its job has finished, with the final
//! record and the output in the one answer — the synchronous call a grader or an agent makes for
//! a short job, without a second request to follow the job.
//!
//! The wait subscribes to the job's notifications (the [`Hub`](super::hub::Hub)) before the
//! submission commits, so a job that finishes at once is not missed, and re-reads the job on a
//! timer as every follower does (notifications are hints). It holds one of the process's stream
//! permits (`--max-streams`) like an SSE stream; without one the request is refused before
//! anything is stored. A job that has not finished when the wait runs out is answered as it is
//! then (`queued` or `running`); a client that goes away does not stop its job.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use utoipa::IntoParams;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::hub::{AwaitsAnswer, JobWatch, Taken};
use super::types::{Job, JobOutput, StreamOutput};
use crate::metrics::SourceLabels;
use crate::model::{ChunkKind, JobRecord, OutputStream};
use crate::store::jobs::OutputChunk;
use crate::store::{jobs as store_jobs, logs, queue::ANSWER_CHUNKS};

/// The longest wait a submission may ask for.
pub const MAX_WAIT_SECS: u32 = 60;
/// A waiting submission re-reads its job this often even without a notification.
const RECHECK: Duration = Duration::from_secs(1);
/// Chunks read per query while collecting the output (the first page as the flush that answers
/// reads it).
const PAGE: i64 = ANSWER_CHUNKS;

/// Query parameters of `POST /v1/jobs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubmitParams {
    /// Answer when the job has finished, waiting at most this many seconds (1–60): the answer
    /// then carries the final record and the latest attempt's `output` (up to 1 MiB per stream).
    /// A job still unfinished when the wait runs out is answered as it is then (`queued` or
    /// `running`, no `output`): follow it with `GET /v1/jobs/{id}/logs`. The job runs either
    /// way, whether or not the client stays. Without `wait` the answer comes once the job is
    /// queued.
    #[param(minimum = 1, maximum = 60, example = 10)]
    pub wait: Option<u32>,
}

impl SubmitParams {
    /// The wait asked for, checked (400 naming `wait` when out of range).
    pub fn wait(&self) -> Result<Option<Duration>, ApiError> {
        match self.wait {
            None => Ok(None),
            Some(s) if (1..=MAX_WAIT_SECS).contains(&s) => Ok(Some(Duration::from_secs(s.into()))),
            Some(s) => Err(ApiError::invalid_query(format!(
                "wait={s} is out of range: give 1–{MAX_WAIT_SECS} seconds (longer jobs: submit, \
                 then follow GET /v1/jobs/{{id}}/logs)"
            ))
            .with_field("wait")),
        }
    }
}

/// A submission's wait for its job, begun before the job is stored.
pub struct Wait {
    watch: JobWatch,
    /// A worker in this process that finishes the job reads its answer back for this request.
    awaits: AwaitsAnswer,
    until: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Wait {
    /// Takes a stream permit (503 without one: nothing is stored then) and subscribes to job
    /// `id`, which is about to be submitted.
    pub fn begin(state: &AppState, id: Uuid, wait: Duration) -> Result<Self, ApiError> {
        let permit = super::sse::stream_permit(&state.streams, &state.metrics)?;
        Ok(Self {
            watch: state.hub.watch_job(id),
            awaits: state.hub.awaiting(id),
            until: Instant::now() + wait,
            _permit: permit,
        })
    }

    /// The same wait for job `id` instead (an idempotent replay answers with an earlier
    /// request's job). Its changes are watched from now on; the timer's re-reads cover the
    /// moment in between.
    pub fn of(self, state: &AppState, id: Uuid) -> Self {
        if self.watch.id() == id {
            return self;
        }
        Self {
            watch: state.hub.watch_job(id),
            awaits: state.hub.awaiting(id),
            ..self
        }
    }

    /// The answer: `job` (as the submission stored or found it) once it is final, with its
    /// output; or, when the wait runs out first, the job as last read.
    pub async fn finish(
        self,
        state: &AppState,
        tenant: &str,
        mut job: JobRecord,
    ) -> Result<Job, ApiError> {
        // The permit is held until the answer is ready.
        let Wait {
            mut watch,
            awaits: _awaits,
            until,
            _permit,
        } = self;
        let rx = &mut watch.rx;
        let mut seen = watch.subscribed;
        loop {
            if job.state.is_terminal() {
                return answer(state, tenant, job.id).await;
            }
            let version = tokio::select! {
                _ = tokio::time::sleep_until(until) => {
                    // The job as it is now (a claim sends no notification: the record read
                    // last may still say `queued`); finished at the last moment, it is answered
                    // whole.
                    let now = reread(state, tenant, job.id, None).await?;
                    if now.state.is_terminal() {
                        return answer(state, tenant, now.id).await;
                    }
                    // The submission may have committed without its flush
                    // (`SubmitCommit::Deferred`); an answer that names an unfinished job
                    // waits for one. (A final state read above was stored by a commit that
                    // flushed, after the submission's.)
                    store_jobs::flush_wal(&state.pool).await?;
                    return Ok(Job::from(now));
                }
                _ = tokio::time::sleep(RECHECK) => None,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The hub is gone (the process is stopping): fall back to the timer.
                        tokio::time::sleep(RECHECK.min(until.saturating_duration_since(Instant::now())))
                            .await;
                        None
                    } else {
                        let signal = *rx.borrow_and_update();
                        let read = signal.finished || signal.state_changes != seen.state_changes;
                        seen = signal;
                        if !read {
                            // New output only: the job's state did not change.
                            continue;
                        }
                        if signal.finished {
                            // As the flush that stored the job's end read it back, when a
                            // worker here did; else the final record and the output, read
                            // together.
                            match state.hub.take_answer(job.id) {
                                // Woken by the commit's NOTIFY before the writer here handed
                                // the answer over: it comes with the next wake-up.
                                Taken::Pending => continue,
                                Taken::Answer(answer) => {
                                    let (job, first) = std::sync::Arc::unwrap_or_clone(answer);
                                    crate::timeline!(job.id, "api.woken");
                                    return complete(state, "flush", job, first).await;
                                }
                                Taken::Read => {
                                    crate::timeline!(job.id, "api.woken");
                                    return answer(state, tenant, job.id).await;
                                }
                            }
                        }
                        Some(signal.version)
                    }
                }
            };
            job = reread(state, tenant, job.id, version).await?;
        }
    }
}

async fn reread(
    state: &AppState,
    tenant: &str,
    id: Uuid,
    version: Option<u64>,
) -> Result<JobRecord, ApiError> {
    state
        .hub
        .job(&state.pool, tenant, id, version)
        .await?
        .ok_or_else(|| deleted(id))
}

/// The final answer: the job's final record and the output of its latest attempt, read together
/// (one statement for the record and the first page of output; more pages only for output past
/// it).
async fn answer(state: &AppState, tenant: &str, id: Uuid) -> Result<Job, ApiError> {
    let (job, first) = store_jobs::get_with_output(&state.pool, tenant, id, PAGE)
        .await?
        .ok_or_else(|| deleted(id))?;
    complete(state, "read", job, first).await
}

/// The answer of `job` as read with its first page of output (`first`, up to [`PAGE`] chunks),
/// from `source` (`read` after the commit, or the `flush` that stored it): further pages are
/// read for output past the first.
async fn complete(
    state: &AppState,
    source: &str,
    job: JobRecord,
    first: Vec<OutputChunk>,
) -> Result<Job, ApiError> {
    let id = job.id;
    if !job.state.is_terminal() {
        // Announced as finished but read otherwise: cannot happen (a final state never
        // changes); answered as read rather than with output of an unfinished attempt.
        return Ok(Job::from(job));
    }
    let mut output = Collected::default();
    let mut full = first.len() as i64 == PAGE;
    let mut after = first.last().map_or(0, |c| c.seq);
    for c in &first {
        output.add(c.stream, &c.data);
    }
    // Further pages, until the output ends or both streams have more than the answer carries.
    while full && !output.both_cut() {
        let page = logs::attempt_chunks_after(
            &state.pool,
            id,
            job.attempt,
            after,
            logs::ChunkFilter::default(),
            PAGE,
        )
        .await?;
        full = page.len() as i64 == PAGE;
        for c in &page {
            after = c.seq;
            if let ChunkKind::Output(stream) = c.stream {
                output.add(stream, &c.data);
            }
        }
    }
    state
        .metrics
        .wait_answers
        .get_or_create(&SourceLabels {
            source: source.into(),
        })
        .inc();
    let mut answer = Job::from(job);
    answer.output = Some(JobOutput {
        stdout: StreamOutput::new(output.stdout),
        stderr: StreamOutput::new(output.stderr),
    });
    Ok(answer)
}

fn deleted(id: Uuid) -> ApiError {
    ApiError::not_found(format!("job {id} was deleted while the request waited"))
}

/// The output an answer carries: each stream up to one byte past [`JobOutput::LIMIT`] (that
/// byte tells [`StreamOutput::new`] the stream was cut).
#[derive(Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Collected {
    fn add(&mut self, stream: OutputStream, data: &[u8]) {
        let out = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        let room = (JobOutput::LIMIT + 1).saturating_sub(out.len());
        out.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn both_cut(&self) -> bool {
        self.stdout.len() > JobOutput::LIMIT && self.stderr.len() > JobOutput::LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_one_to_sixty_seconds() {
        let wait = |w| SubmitParams { wait: w }.wait();
        assert_eq!(wait(None).unwrap(), None);
        assert_eq!(wait(Some(1)).unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(wait(Some(60)).unwrap(), Some(Duration::from_secs(60)));
        for bad in [0, 61, u32::MAX] {
            let e = wait(Some(bad)).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn output_is_text_when_utf8_else_base64_and_cut_at_the_limit() {
        let o = StreamOutput::new(b"hello\n".to_vec());
        assert_eq!(
            (o.text.as_deref(), o.base64.as_deref(), o.truncated),
            (Some("hello\n"), None, false)
        );
        let o = StreamOutput::new(vec![0xff, 0x00, 0x41]);
        assert_eq!(o.text, None);
        assert_eq!(o.base64.as_deref(), Some("/wBB"));
        assert_eq!(o.bytes().unwrap(), vec![0xff, 0x00, 0x41]);
        // One byte past the limit: cut and flagged.
        let o = StreamOutput::new(vec![b'a'; JobOutput::LIMIT + 1]);
        assert_eq!(o.text.as_ref().map(String::len), Some(JobOutput::LIMIT));
        assert!(o.truncated);
        // A cut inside a character: the bytes are carried exactly, as base64.
        let mut bytes = vec![b'a'; JobOutput::LIMIT - 1];
        bytes.extend_from_slice("é".as_bytes());
        let o = StreamOutput::new(bytes);
        assert!(o.truncated && o.text.is_none());
        let carried = o.bytes().unwrap();
        assert_eq!(carried.len(), JobOutput::LIMIT);
        assert_eq!(carried[JobOutput::LIMIT - 1], "é".as_bytes()[0]);
        // Empty output is empty text.
        let o = StreamOutput::new(Vec::new());
        assert_eq!((o.text.as_deref(), o.truncated), (Some(""), false));
    }
}
