//! Bounded, live output from a job to the worker's log pipeline.
//!
//! A backend writes stdout/stderr bytes through an [`OutputSink`] as the job produces them. The sink
//! keeps at most `cap` bytes per stream, counts what it kept, marks a stream truncated when more was
//! offered, and forwards the kept bytes, in order, over a bounded channel (so a job that writes
//! faster than the service can store waits instead of growing the worker's memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The small integer stored with log chunks (1 = stdout, 2 = stderr, like file descriptors).
    pub fn as_fd(self) -> i16 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    pub fn from_fd(fd: i16) -> Option<Self> {
        match fd {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }

    /// Parses the name [`Stream::as_str`] gives (`stdout` or `stderr`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes a job wrote to one stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: Stream,
    pub data: Bytes,
}

/// Returned by [`OutputSink::write`] when the stream's cap was reached: the prefix that fit was
/// kept, the rest dropped, and the stream is marked truncated. The backend should stop the job with
/// `OutcomeReason::OutputLimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job wrote more than {cap} bytes to {stream}", stream = .stream.as_str())]
pub struct OutputLimitExceeded {
    pub stream: Stream,
    pub cap: u64,
}

/// What the sink kept, per stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputStats {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Default)]
struct StreamCounter {
    offered: AtomicU64,
    truncated: AtomicBool,
}

struct Inner {
    tx: mpsc::Sender<OutputChunk>,
    cap: u64,
    stdout: StreamCounter,
    stderr: StreamCounter,
}

/// The writing end of a job's output. Cheap to clone; all clones share the counters.
#[derive(Clone)]
pub struct OutputSink {
    inner: Arc<Inner>,
}

impl OutputSink {
    /// A sink keeping at most `cap` bytes per stream, and the receiver the worker drains.
    /// `buffer` is the number of chunks in flight before writers wait.
    pub fn channel(cap: u64, buffer: usize) -> (Self, mpsc::Receiver<OutputChunk>) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let inner = Inner {
            tx,
            cap,
            stdout: StreamCounter::default(),
            stderr: StreamCounter::default(),
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    fn counter(&self, stream: Stream) -> &StreamCounter {
        match stream {
            Stream::Stdout => &self.inner.stdout,
            Stream::Stderr => &self.inner.stderr,
        }
    }

    /// Reserves room for `len` bytes on `stream`; returns how many of them may be kept.
    fn reserve(&self, stream: Stream, len: usize) -> (usize, Result<(), OutputLimitExceeded>) {
        let counter = self.counter(stream);
        let cap = self.inner.cap;
        let len = len as u64;
        let before = counter.offered.fetch_add(len, Ordering::Relaxed);
        let room = cap.saturating_sub(before);
        if len <= room {
            (len as usize, Ok(()))
        } else {
            counter.truncated.store(true, Ordering::Relaxed);
            (room as usize, Err(OutputLimitExceeded { stream, cap }))
        }
    }

    /// Writes bytes from an async context, waiting while the pipeline is full.
    pub async fn write(&self, stream: Stream, data: &[u8]) -> Result<(), OutputLimitExceeded> {
        let (keep, verdict) = self.reserve(stream, data.len());
        if keep > 0 {
            let chunk = OutputChunk {
                stream,
                data: Bytes::copy_from_slice(&data[..keep]),
            };
            // A closed receiver means the worker no longer wants output (the job is being torn
            // down); dropping the bytes is then correct.
            let _ = self.inner.tx.send(chunk).await;
        }
        verdict
    }

    /// Writes bytes from a blocking thread (never call this from an async task).
    pub fn write_blocking(&self, stream: Stream, data: &[u8]) -> Result<(), OutputLimitExceeded> {
        let (keep, verdict) = self.reserve(stream, data.len());
        if keep > 0 {
            let chunk = OutputChunk {
                stream,
                data: Bytes::copy_from_slice(&data[..keep]),
            };
            let _ = self.inner.tx.blocking_send(chunk);
        }
        verdict
    }

    /// The per-stream cap this sink enforces.
    pub fn cap(&self) -> u64 {
        self.inner.cap
    }

    /// Bytes kept and truncation flags so far.
    pub fn stats(&self) -> OutputStats {
        let cap = self.inner.cap;
        let kept = |c: &StreamCounter| c.offered.load(Ordering::Relaxed).min(cap);
        OutputStats {
            stdout_bytes: kept(&self.inner.stdout),
            stderr_bytes: kept(&self.inner.stderr),
            stdout_truncated: self.inner.stdout.truncated.load(Ordering::Relaxed),
            stderr_truncated: self.inner.stderr.truncated.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_and_fds_round_trip() {
        for s in [Stream::Stdout, Stream::Stderr] {
            assert_eq!(Stream::parse(s.as_str()), Some(s));
            assert_eq!(Stream::parse(&s.to_string()), Some(s));
            assert_eq!(Stream::from_fd(s.as_fd()), Some(s));
        }
        assert_eq!(Stream::parse("stdin"), None);
        assert_eq!(Stream::from_fd(0), None);
    }

    #[tokio::test]
    async fn keeps_bytes_in_order_up_to_the_cap_and_flags_truncation() {
        let (sink, mut rx) = OutputSink::channel(10, 16);
        sink.write(Stream::Stdout, b"hello ").await.unwrap();
        let err = sink.write(Stream::Stdout, b"world!!").await.unwrap_err();
        assert_eq!(
            err,
            OutputLimitExceeded {
                stream: Stream::Stdout,
                cap: 10
            }
        );
        sink.write(Stream::Stderr, b"e").await.unwrap();
        // Past the cap nothing more is kept.
        assert!(sink.write(Stream::Stdout, b"x").await.is_err());
        drop(sink.clone());
        let stats = sink.stats();
        assert_eq!(
            stats,
            OutputStats {
                stdout_bytes: 10,
                stderr_bytes: 1,
                stdout_truncated: true,
                stderr_truncated: false
            }
        );
        drop(sink);
        let mut got = Vec::new();
        while let Some(c) = rx.recv().await {
            got.push((c.stream, c.data.to_vec()));
        }
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, b"hello ".to_vec()),
                (Stream::Stdout, b"worl".to_vec()),
                (Stream::Stderr, b"e".to_vec()),
            ]
        );
    }

    #[test]
    fn bytes_survive_as_bytes() {
        let (sink, mut rx) = OutputSink::channel(100, 4);
        sink.write_blocking(Stream::Stdout, &[0, 0xff, 0xfe, b'\n'])
            .unwrap();
        let c = rx.try_recv().unwrap();
        assert_eq!(&c.data[..], &[0, 0xff, 0xfe, b'\n']);
    }
}
