//! Log lines with their times: what `GET /v1/jobs/{id}/logs?timestamps=true` sends and what
//! `nekton jobs logs --timestamps -f` prints from the stream's `log` events, the same way.

use chrono::{DateTime, Utc};

use super::OutputStream;

/// What a stored log chunk holds: output of one stream (fd 1 or 2), or a test-suite event
/// (fd 3: one JSON [`crate::grading::SuiteEvent`]), numbered in one sequence so events keep
/// their place among the output and a reader resumes both from one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    Output(OutputStream),
    Event,
}

impl ChunkKind {
    /// The fd number stored in `log_chunks.stream`.
    pub const EVENT_FD: i16 = 3;

    pub fn as_fd(self) -> i16 {
        match self {
            Self::Output(s) => s.as_fd(),
            Self::Event => Self::EVENT_FD,
        }
    }

    pub fn from_fd(fd: i16) -> Option<Self> {
        match fd {
            Self::EVENT_FD => Some(Self::Event),
            fd => OutputStream::from_fd(fd).map(Self::Output),
        }
    }
}

/// Puts a time at the start of each line of output. Each stream has its own line state, so a
/// line split over chunks gets one time, from its first chunk, even when the other stream's
/// chunks come between.
#[derive(Debug)]
pub struct LineStamper {
    /// Whether the next byte of stdout / stderr starts a line.
    at_line_start: [bool; 2],
}

impl Default for LineStamper {
    fn default() -> Self {
        LineStamper {
            at_line_start: [true, true],
        }
    }
}

impl LineStamper {
    /// `data`, a chunk of `stream` stored at `at`, with `TIME ` before each line that starts in
    /// it: RFC 3339 in UTC with microseconds, or `-` for output stored without a time.
    pub fn stamp(
        &mut self,
        stream: OutputStream,
        at: Option<DateTime<Utc>>,
        data: &[u8],
    ) -> Vec<u8> {
        let stamp = match at {
            Some(t) => format!(
                "{} ",
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            None => "- ".to_string(),
        };
        let start = &mut self.at_line_start[usize::from(stream == OutputStream::Stderr)];
        let mut out = Vec::with_capacity(data.len() + stamp.len() * 2);
        for line in data.split_inclusive(|b| *b == b'\n') {
            if *start {
                out.extend_from_slice(stamp.as_bytes());
            }
            out.extend_from_slice(line);
            *start = line.ends_with(b"\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn timestamps_start_each_line_once_per_stream() {
        let at = |s| Some(Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, s).unwrap());
        let mut st = LineStamper::default();
        let mut stamp = |stream, t, data: &str| {
            String::from_utf8(st.stamp(stream, t, data.as_bytes())).unwrap()
        };
        let t1 = "2026-12-04T10:00:01.000000Z";
        let t2 = "2026-12-04T10:00:02.000000Z";
        assert_eq!(
            stamp(OutputStream::Stdout, at(1), "a\nb"),
            format!("{t1} a\n{t1} b")
        );
        // stderr between the halves of stdout's line `b...`: its own line state.
        assert_eq!(
            stamp(OutputStream::Stderr, at(2), "e\n"),
            format!("{t2} e\n")
        );
        assert_eq!(
            stamp(OutputStream::Stdout, at(2), "c\nd\n"),
            format!("c\n{t2} d\n")
        );
        assert_eq!(stamp(OutputStream::Stdout, None, "old\n"), "- old\n");
        assert_eq!(stamp(OutputStream::Stdout, at(1), ""), "");
    }
}
