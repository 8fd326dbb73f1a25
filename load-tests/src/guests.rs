//! The WASI preview 1 guests the benchmarks run, written in WAT and assembled at run time.

use anyhow::{Context as _, Result, ensure};

/// What [`hello`] writes to stdout.
pub const HELLO_OUTPUT: &[u8] = b"hello, world\n";

/// The hello-world job: writes [`HELLO_OUTPUT`] to stdout with one `fd_write`, exits 0.
pub fn hello() -> Result<Vec<u8>> {
    wat::parse_str(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello, world\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .context("assembling the hello guest")
}

/// Bytes in the repeated block of [`sized`]'s output.
pub const SIZED_BLOCK: usize = 4096;

/// The block [`sized`] writes over and over: lines of 63 characters of the base64 alphabet
/// (xorshift, so the figures do not depend on a compressible output) and a `\n`.
pub fn sized_block() -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..SIZED_BLOCK)
        .map(|i| {
            if i % 64 == 63 {
                b'\n'
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ALPHABET[(x % 64) as usize]
            }
        })
        .collect()
}

/// What [`sized`]`(bytes)` writes to stdout: [`sized_block`] repeated, cut at `bytes`.
pub fn sized_output(bytes: usize) -> Vec<u8> {
    sized_block().iter().copied().cycle().take(bytes).collect()
}

/// A job that writes exactly `bytes` bytes to stdout ([`sized_output`]) in writes of up to
/// [`SIZED_BLOCK`] bytes (partial writes are continued), then exits 0; exits 2 if a write fails.
pub fn sized(bytes: u64) -> Result<Vec<u8>> {
    let data: String = sized_block()
        .iter()
        .map(|b| match b {
            b'\n' => "\\0a".to_string(),
            _ => (*b as char).to_string(),
        })
        .collect();
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const {SIZED_BLOCK}) "{data}")
  (func (export "_start") (local $left i64) (local $pos i32) (local $len i32) (local $done i32)
    (local.set $left (i64.const {bytes}))
    (block $end (loop $next
      (br_if $end (i64.eqz (local.get $left)))
      ;; len = min(left, BLOCK - pos)
      (local.set $len (i32.sub (i32.const {SIZED_BLOCK}) (local.get $pos)))
      (if (i64.lt_u (local.get $left) (i64.extend_i32_u (local.get $len)))
        (then (local.set $len (i32.wrap_i64 (local.get $left)))))
      (i32.store (i32.const 0) (i32.add (i32.const {SIZED_BLOCK}) (local.get $pos)))
      (i32.store (i32.const 4) (local.get $len))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 2))))
      (local.set $done (i32.load (i32.const 8)))
      (if (i32.eqz (local.get $done)) (then (call $proc_exit (i32.const 2))))
      (local.set $left (i64.sub (local.get $left) (i64.extend_i32_u (local.get $done))))
      (local.set $pos (i32.rem_u (i32.add (local.get $pos) (local.get $done)) (i32.const {SIZED_BLOCK})))
      (br $next)))))"#
    );
    wat::parse_str(text).context("assembling the sized-output guest")
}

/// Bytes of a record's header: 16 hex digits of the realtime clock in ns, a space, 8 hex digits
/// of the record's sequence number, a space.
pub const RECORD_HEADER: usize = 26;
/// Where the log writer keeps its record buffer in linear memory (one 64 KiB page in all).
const BUF: usize = 4096;
/// Largest record the log writer supports (the buffer must fit in its single page).
pub const MAX_RECORD: usize = 65536 - BUF;

/// A guest that writes `records` records of `size` bytes to stdout, each with one `fd_write`
/// (partial writes are completed), sleeping `pause_ms` after each when non-zero. A record is
/// [`RECORD_HEADER`] bytes — the WASI realtime clock (`clock_time_get`, clock 0) read just before
/// the write, as 16 hex digits of nanoseconds since the epoch, a space, the record number as 8 hex
/// digits, a space — then filler from the base64 alphabet (xorshift, so PostgreSQL's compression
/// cannot flatter the figures) and a final `\n`. Exits 2 if a write fails.
pub fn log_writer(records: u32, size: usize, pause_ms: u64) -> Result<Vec<u8>> {
    ensure!(
        (RECORD_HEADER + 1..=MAX_RECORD).contains(&size),
        "a record must be {} to {MAX_RECORD} bytes, not {size}",
        RECORD_HEADER + 1
    );
    let last = BUF + size - 1;
    let seq_at = BUF + 17;
    let sleep = if pause_ms > 0 {
        format!("(call $sleep (i64.const {pause_ms}))")
    } else {
        String::new()
    };
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "0123456789abcdef")
  (data (i32.const 64) "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
  ;; hex(v, dst, n): the low n nibbles of v as n lowercase hex digits at dst
  (func $hex (param $v i64) (param $dst i32) (param $n i32) (local $k i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $k) (local.get $n)))
      (i32.store8 (i32.add (local.get $dst) (local.get $k))
        (i32.load8_u (i32.add (i32.const 32)
          (i32.wrap_i64 (i64.and
            (i64.shr_u (local.get $v)
              (i64.extend_i32_u (i32.mul (i32.sub (i32.sub (local.get $n) (i32.const 1)) (local.get $k)) (i32.const 4))))
            (i64.const 15))))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $l))))
  ;; sleep(ms): a relative monotonic-clock subscription at 1024, event at 1104, nevents at 1200
  (func $sleep (param $ms i64)
    (i64.store (i32.const 1024) (i64.const 0))
    (i32.store8 (i32.const 1032) (i32.const 0))
    (i32.store (i32.const 1040) (i32.const 1))
    (i64.store (i32.const 1048) (i64.mul (local.get $ms) (i64.const 1000000)))
    (i64.store (i32.const 1056) (i64.const 0))
    (i32.store16 (i32.const 1064) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 1024) (i32.const 1104) (i32.const 1) (i32.const 1200))))
  ;; write the whole record buffer, completing partial writes; iovec at 0..8, nwritten at 8
  (func $write_record (local $off i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $off) (i32.const {size})))
      (i32.store (i32.const 0) (i32.add (i32.const {BUF}) (local.get $off)))
      (i32.store (i32.const 4) (i32.sub (i32.const {size}) (local.get $off)))
      (if (i32.ne (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 0))
        (then (call $proc_exit (i32.const 2))))
      (local.set $off (i32.add (local.get $off) (i32.load (i32.const 8))))
      (br $l))))
  (func (export "_start") (local $i i32) (local $j i32) (local $x i32)
    (local.set $x (i32.const 2463534242))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $j) (i32.const {size})))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
      (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
      (i32.store8 (i32.add (i32.const {BUF}) (local.get $j))
        (i32.load8_u (i32.add (i32.const 64) (i32.and (local.get $x) (i32.const 63)))))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br $l)))
    (i32.store8 (i32.const {space1}) (i32.const 32))
    (i32.store8 (i32.const {space2}) (i32.const 32))
    (i32.store8 (i32.const {last}) (i32.const 10))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (i32.const {records})))
      (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 16)))
      (call $hex (i64.load (i32.const 16)) (i32.const {BUF}) (i32.const 16))
      (call $hex (i64.extend_i32_u (local.get $i)) (i32.const {seq_at}) (i32.const 8))
      (call $write_record)
      {sleep}
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))))"#,
        space1 = BUF + 16,
        space2 = BUF + 25,
    );
    wat::parse_str(&text).context("assembling the log-writer guest")
}

/// Checks the record stream a [`log_writer`] guest produced, as it arrives in arbitrary pieces,
/// and collects each record's write-to-receive latency.
#[derive(Debug)]
pub struct RecordChecker {
    size: usize,
    /// Bytes of the current record seen so far.
    pos: usize,
    header: [u8; RECORD_HEADER],
    next_seq: u64,
    /// Bytes received in all.
    pub bytes: u64,
    /// Records with a malformed header, an unexpected sequence number or no final newline.
    pub malformed: u64,
    /// First malformation, for the report.
    pub first_problem: Option<String>,
    /// Per record: receive time minus the guest's write time, in ns.
    pub latencies_ns: Vec<i64>,
    /// The guest's clock at its first and last record (ns since the epoch).
    pub first_write_ns: Option<u64>,
    pub last_write_ns: Option<u64>,
}

impl RecordChecker {
    pub fn new(size: usize, expected_records: usize) -> Self {
        Self {
            size,
            pos: 0,
            header: [0; RECORD_HEADER],
            next_seq: 0,
            bytes: 0,
            malformed: 0,
            first_problem: None,
            latencies_ns: Vec::with_capacity(expected_records),
            first_write_ns: None,
            last_write_ns: None,
        }
    }

    /// Complete records seen.
    pub fn records(&self) -> u64 {
        self.next_seq
    }

    /// True if the stream ended on a record boundary.
    pub fn at_boundary(&self) -> bool {
        self.pos == 0
    }

    fn problem(&mut self, what: String) {
        self.malformed += 1;
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }

    /// Feeds bytes received at `recv_ns` (realtime clock, ns since the epoch).
    pub fn feed(&mut self, mut data: &[u8], recv_ns: i64) {
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            if self.pos < RECORD_HEADER {
                let take = (RECORD_HEADER - self.pos).min(data.len());
                self.header[self.pos..self.pos + take].copy_from_slice(&data[..take]);
                self.pos += take;
                data = &data[take..];
                if self.pos == RECORD_HEADER {
                    self.header_done(recv_ns);
                }
                continue;
            }
            // Body: skip to the record's last byte, which must be a newline.
            let last = self.size - 1;
            if self.pos < last {
                let take = (last - self.pos).min(data.len());
                self.pos += take;
                data = &data[take..];
                continue;
            }
            if data[0] != b'\n' {
                self.problem(format!(
                    "record {} does not end with a newline",
                    self.next_seq
                ));
            }
            data = &data[1..];
            self.pos = 0;
            self.next_seq += 1;
        }
    }

    fn header_done(&mut self, recv_ns: i64) {
        let h = self.header;
        let parse = |digits: &[u8]| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
        };
        let (ts, seq) = (parse(&h[..16]), parse(&h[17..25]));
        match (ts, seq, h[16], h[25]) {
            (Some(ts), Some(seq), b' ', b' ') => {
                if seq != self.next_seq & 0xffff_ffff {
                    self.problem(format!(
                        "record {} carries sequence number {seq}",
                        self.next_seq
                    ));
                }
                self.first_write_ns.get_or_insert(ts);
                self.last_write_ns = Some(ts);
                self.latencies_ns
                    .push(recv_ns.saturating_sub(i64::try_from(ts).unwrap_or(i64::MAX)));
            }
            _ => self.problem(format!(
                "record {} has a malformed header {:?}",
                self.next_seq,
                String::from_utf8_lossy(&h)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: u64, seq: u32, size: usize) -> Vec<u8> {
        let mut r = format!("{ts:016x} {seq:08x} ").into_bytes();
        r.resize(size - 1, b'A');
        r.push(b'\n');
        r
    }

    #[test]
    fn guests_assemble() {
        hello().unwrap();
        sized(0).unwrap();
        sized(10 << 20).unwrap();
        log_writer(10, 4096, 0).unwrap();
        log_writer(10, 1024, 10).unwrap();
        assert!(log_writer(1, 10, 0).is_err());
        assert!(log_writer(1, MAX_RECORD + 1, 0).is_err());
    }

    #[test]
    fn sized_output_repeats_the_block() {
        let block = sized_block();
        assert_eq!(block.len(), SIZED_BLOCK);
        assert_eq!(block[63], b'\n');
        assert!(
            block[..63]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+/".contains(b))
        );
        let out = sized_output(2 * SIZED_BLOCK + 5);
        assert_eq!(out.len(), 2 * SIZED_BLOCK + 5);
        assert_eq!(&out[SIZED_BLOCK..2 * SIZED_BLOCK], &block[..]);
        assert_eq!(&out[2 * SIZED_BLOCK..], &block[..5]);
    }

    #[test]
    fn checker_accepts_records_split_anywhere() {
        let size = 64;
        let stream: Vec<u8> = (0..5u32)
            .flat_map(|i| record(1000 + u64::from(i), i, size))
            .collect();
        for piece in [1, 7, 26, 64, 100, 1000] {
            let mut c = RecordChecker::new(size, 5);
            for part in stream.chunks(piece) {
                c.feed(part, 2000);
            }
            assert_eq!(c.records(), 5, "piece {piece}");
            assert_eq!(c.malformed, 0, "piece {piece}: {:?}", c.first_problem);
            assert!(c.at_boundary());
            assert_eq!(c.latencies_ns, vec![1000, 999, 998, 997, 996]);
            assert_eq!(c.first_write_ns, Some(1000));
            assert_eq!(c.last_write_ns, Some(1004));
        }
    }

    #[test]
    fn checker_flags_gaps_and_damage() {
        let size = 64;
        let mut c = RecordChecker::new(size, 3);
        c.feed(&record(1, 0, size), 5);
        c.feed(&record(1, 2, size), 5);
        assert_eq!(c.malformed, 1);
        let mut bad = record(1, 2, size);
        bad[3] = b'x';
        c.feed(&bad, 5);
        assert_eq!(c.malformed, 2);
        let mut no_nl = record(1, 3, size);
        no_nl[size - 1] = b'A';
        c.feed(&no_nl, 5);
        assert_eq!(c.malformed, 3);
        c.feed(&record(1, 4, size)[..10], 5);
        assert!(!c.at_boundary());
    }
}
