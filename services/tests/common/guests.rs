//! Test guests: small WASI preview 1 programs written in WAT, assembled in the test build, and
//! the Rust programs of `tests/guests/` built for `wasm32-wasip1` ([`rust_guest`]).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// `tests/guests/NAME.rs` built for `wasm32-wasip1` (stripped), once per test binary. Fails the
/// test, naming the missing target, when it cannot be built.
pub fn rust_guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(b) = built.get(name) {
        return b.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/guests/{name}.rs"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("guest-{name}-{}.wasm", std::process::id()));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = std::process::Command::new(rustc)
        .args(["--edition", "2021", "-O", "-C", "strip=symbols"])
        .args(["--target", "wasm32-wasip1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run rustc");
    assert!(
        status.success(),
        "cannot build tests/guests/{name}.rs: the wasm32-wasip1 target is needed \
         (`rustup target add wasm32-wasip1`, done by scripts/setup-test.sh)"
    );
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    built.insert(name.to_string(), bytes.clone());
    bytes
}

const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; write(fd, ptr, len) through an iovec at 0..8, nwritten at 8
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; sleep(ms) with a relative monotonic-clock subscription at 1024, event at 1104, nevents at 1200
  (func $sleep (param $ms i64)
    (i64.store (i32.const 1024) (i64.const 0))
    (i32.store8 (i32.const 1032) (i32.const 0))
    (i32.store (i32.const 1040) (i32.const 1))
    (i64.store (i32.const 1048) (i64.mul (local.get $ms) (i64.const 1000000)))
    (i64.store (i32.const 1056) (i64.const 0))
    (i32.store16 (i32.const 1064) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 1024) (i32.const 1104) (i32.const 1) (i32.const 1200))))
"#;

fn module(body: &str) -> Vec<u8> {
    let text = format!("(module {PRELUDE} {body})");
    wat::parse_str(&text).unwrap_or_else(|e| panic!("test guest does not assemble: {e}\n{text}"))
}

/// Prints `hello\n` to stdout and `warn\n` to stderr, exits 0.
pub fn hello() -> Vec<u8> {
    module(
        r#"(data (i32.const 64) "hello\n") (data (i32.const 80) "warn\n")
        (func (export "_start") (call $write (i32.const 1) (i32.const 64) (i32.const 6))
                                 (call $write (i32.const 2) (i32.const 80) (i32.const 5)))"#,
    )
}

/// Prints `bye\n` and exits with `code`.
pub fn exit_with(code: i32) -> Vec<u8> {
    module(&format!(
        r#"(data (i32.const 64) "bye\n")
        (func (export "_start") (call $write (i32.const 1) (i32.const 64) (i32.const 4)) (call $proc_exit (i32.const {code})))"#
    ))
}

/// Spins forever.
pub fn spin() -> Vec<u8> {
    module(r#"(func (export "_start") (loop $l (br $l)))"#)
}

/// Grows memory until the host refuses, then hits `unreachable`.
pub fn memory_bomb() -> Vec<u8> {
    module(
        r#"(func (export "_start")
            (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
            unreachable)"#,
    )
}

/// Copies stdin to stdout.
pub fn cat() -> Vec<u8> {
    module(
        r#"(func (export "_start") (local $n i32)
            (loop $l
              (i32.store (i32.const 16) (i32.const 4096))
              (i32.store (i32.const 20) (i32.const 8192))
              (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
              (local.set $n (i32.load (i32.const 24)))
              (if (i32.gt_u (local.get $n) (i32.const 0))
                (then (call $write (i32.const 1) (i32.const 4096) (local.get $n)) (br $l)))))"#,
    )
}

/// Sleeps `ms` milliseconds, then prints `done\n`.
pub fn sleep_then_print(ms: u64) -> Vec<u8> {
    module(&format!(
        r#"(data (i32.const 64) "done\n")
        (func (export "_start") (call $sleep (i64.const {ms})) (call $write (i32.const 1) (i32.const 64) (i32.const 5)))"#
    ))
}

/// Writes `lines` lines of 64 bytes, one write each: 8 hex digits of the line number, 55 dots,
/// a newline. [`numbered_lines_expected`] gives the bytes.
pub fn numbered_lines(lines: u32) -> Vec<u8> {
    module(&format!(
        r#"(data (i32.const 16) "0123456789abcdef")
        (func $hexline (param $n i32) (local $k i32)
          (block $done (loop $l
            (br_if $done (i32.ge_u (local.get $k) (i32.const 8)))
            (i32.store8 (i32.add (i32.const 100) (local.get $k))
              (i32.load8_u (i32.add (i32.const 16)
                (i32.and (i32.shr_u (local.get $n) (i32.mul (i32.sub (i32.const 7) (local.get $k)) (i32.const 4))) (i32.const 15)))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $l))))
        (func (export "_start") (local $i i32)
          (memory.fill (i32.const 100) (i32.const 46) (i32.const 63))
          (i32.store8 (i32.const 163) (i32.const 10))
          (block $done (loop $l
            (br_if $done (i32.ge_u (local.get $i) (i32.const {lines})))
            (call $hexline (local.get $i))
            (call $write (i32.const 1) (i32.const 100) (i32.const 64))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $l))))"#
    ))
}

pub fn numbered_lines_expected(lines: u32) -> Vec<u8> {
    let dots = ".".repeat(55);
    let mut out = Vec::with_capacity(lines as usize * 64);
    for i in 0..lines {
        out.extend_from_slice(format!("{i:08x}{dots}\n").as_bytes());
    }
    out
}

/// Writes the line pattern, sleeping `pause_ms` between each of `bursts` bursts of `lines` lines
/// (for watching output arrive live).
pub fn slow_writer(bursts: u32, pause_ms: u64) -> Vec<u8> {
    module(&format!(
        r#"(data (i32.const 64) "tick\n")
        (func (export "_start") (local $i i32)
          (block $done (loop $l
            (br_if $done (i32.ge_u (local.get $i) (i32.const {bursts})))
            (call $write (i32.const 1) (i32.const 64) (i32.const 5))
            (call $sleep (i64.const {pause_ms}))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $l))))"#
    ))
}
