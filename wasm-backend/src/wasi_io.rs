//! The guest's output: stdout/stderr streamed live into the job's [`OutputSink`] (the job's
//! root directory is [`crate::jobdir`]).
//!
//! WASI preview 1 writes, and a component's `wasi:cli/stdout` stream, go through a preview 2
//! [`OutputStream`]: `check_write` (a permit),
//! `write` (must not block), `flush`, and `ready` (wait until the stream can take more). Here
//! `write` starts sending the bytes to the sink and `ready` waits for the send to finish, so every
//! `fd_write` returns only once its bytes are in the pipeline (backpressure from a slow consumer
//! reaches the guest, and nothing is buffered until the end). When the sink reports the cap, the
//! stream fails with a trap carrying [`OutputLimitExceeded`], which stops the guest.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use runtime_core::{OutputLimitExceeded, OutputSink, Stream};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Largest write a stream accepts at once (WASI p1 hands over at most 4 KiB per call anyway).
const WRITE_PERMIT: usize = 64 * 1024;

type SendFuture = Pin<Box<dyn Future<Output = Result<(), OutputLimitExceeded>> + Send>>;

fn send(sink: &OutputSink, stream: Stream, data: Bytes) -> SendFuture {
    let sink = sink.clone();
    Box::pin(async move { sink.write(stream, &data).await })
}

fn limit_trap(e: OutputLimitExceeded) -> StreamError {
    StreamError::Trap(wasmtime::Error::new(e))
}

/// One of the job's output streams, as WASI sees it.
#[derive(Clone)]
pub(crate) struct SinkOutput {
    sink: OutputSink,
    stream: Stream,
}

impl SinkOutput {
    pub(crate) fn new(sink: OutputSink, stream: Stream) -> Self {
        Self { sink, stream }
    }
}

impl IsTerminal for SinkOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SinkOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(SinkStream {
            sink: self.sink.clone(),
            stream: self.stream,
            state: State::Idle,
        })
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(SinkAsyncWrite {
            sink: self.sink.clone(),
            stream: self.stream,
            pending: Mutex::new(None),
        })
    }
}

enum State {
    /// Ready for a write.
    Idle,
    /// Bytes on their way to the sink. The future is kept here (not in `ready`) so that a `ready`
    /// dropped half-way (e.g. by `poll_oneoff` returning for another event) loses nothing.
    Sending(SendFuture),
    /// The cap was reached: every further operation traps.
    Failed(OutputLimitExceeded),
}

struct SinkStream {
    sink: OutputSink,
    stream: Stream,
    state: State,
}

impl OutputStream for SinkStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match &self.state {
            State::Failed(e) => Err(limit_trap(*e)),
            State::Sending(_) => Err(StreamError::trap(
                "write without a permit: the previous write is still in flight",
            )),
            State::Idle if bytes.is_empty() => Ok(()),
            State::Idle => {
                self.state = State::Sending(send(&self.sink, self.stream, bytes));
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Completion is awaited by `ready`, which WASI calls after every flush.
        match &self.state {
            State::Failed(e) => Err(limit_trap(*e)),
            _ => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match &self.state {
            State::Idle => Ok(WRITE_PERMIT),
            State::Sending(_) => Ok(0),
            State::Failed(e) => Err(limit_trap(*e)),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for SinkStream {
    async fn ready(&mut self) {
        if let State::Sending(fut) = &mut self.state {
            self.state = match fut.as_mut().await {
                Ok(()) => State::Idle,
                Err(e) => State::Failed(e),
            };
        }
    }
}

/// The same stream as a tokio [`AsyncWrite`] (used by WASI preview 3 paths; preview 1 uses
/// [`SinkStream`]).
struct SinkAsyncWrite {
    sink: OutputSink,
    stream: Stream,
    /// The write in flight and the length it reports when done. A `Mutex` only to be `Sync`; it
    /// is reached through `&mut self`, never contended.
    pending: Mutex<Option<(SendFuture, usize)>>,
}

impl AsyncWrite for SinkAsyncWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let pending = this
            .pending
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (fut, len) = match pending {
            Some(in_flight) => in_flight,
            None => pending.insert((
                send(&this.sink, this.stream, Bytes::copy_from_slice(buf)),
                buf.len(),
            )),
        };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                let len = *len;
                *pending = None;
                Poll::Ready(result.map(|()| len).map_err(io::Error::other))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
