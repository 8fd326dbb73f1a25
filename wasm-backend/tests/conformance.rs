//! The backend conformance suite (`runtime_core::conformance`) against the Wasm backend, with WAT
//! guests; and proof that the suite fails a backend that ignores the output cap.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use runtime_core::ExecRequest;
use runtime_core::conformance::{Crash, Guests, Support, Target};

/// A module with fd_write, fd_read, proc_exit and poll_oneoff, enough memory for `data` at 65536,
/// the `$write(fd, ptr, len)` and `$sleep(ns)` helpers of `common::guest`, and `body` in `_start`.
fn module(body: &str, data: &[u8]) -> Vec<u8> {
    let pages = 2 + data.len().div_ceil(65536);
    wat(&format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 65536) "{data}")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)) (then (unreachable))))
  (func $sleep (param $ns i64)
    (i64.store (i32.const 128) (i64.const 42))
    (i32.store8 (i32.const 136) (i32.const 0))
    (i32.store (i32.const 144) (i32.const 1))
    (i64.store (i32.const 152) (local.get $ns))
    (i64.store (i32.const 160) (i64.const 0))
    (i32.store16 (i32.const 168) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 128) (i32.const 256) (i32.const 1) (i32.const 320))))
  (func (export "_start") {body}))
"#,
        data = wat_string(data)
    ))
}

/// Prints argv (or, with `environ`, the environment): each entry NUL-terminated.
const ARGS_ECHO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 8192)))
    (i32.store (i32.const 16) (i32.const 8192))
    (i32.store (i32.const 20) (i32.load (i32.const 4)))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"#;

/// Copies stdin to stdout, 100 bytes at a time.
const CAT_STDIN: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $again
      (i32.store (i32.const 0) (i32.const 4096))
      (i32.store (i32.const 4) (i32.const 100))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)) (then (unreachable)))
      (if (i32.load (i32.const 8))
        (then
          (i32.store (i32.const 4) (i32.load (i32.const 8)))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
          (br $again))))))
"#;

struct WasmGuests {
    store: Arc<MapStore>,
    _cache: tempfile::TempDir,
}

impl WasmGuests {
    fn request(&self, module: Vec<u8>) -> ExecRequest {
        request(&self.store.add(module))
    }
}

/// `(call $write fd 65536+offset len)` when `len > 0`.
fn write_call(fd: u32, offset: usize, len: usize) -> String {
    if len == 0 {
        String::new()
    } else {
        format!(
            "(call $write (i32.const {fd}) (i32.const {}) (i32.const {len}))",
            65536 + offset
        )
    }
}

impl Guests for WasmGuests {
    fn write_and_exit(&self, stdout: &[u8], stderr: &[u8], code: i32) -> ExecRequest {
        let body = format!(
            "{} {} (call $proc_exit (i32.const {code}))",
            write_call(1, 0, stdout.len()),
            write_call(2, stdout.len(), stderr.len())
        );
        self.request(module(&body, &[stdout, stderr].concat()))
    }

    fn kill_self(&self, _stderr: &[u8], _signal: i32) -> Support<ExecRequest> {
        Support::NotApplicable(
            "a Wasm guest has no signals to send itself; a trap is its `signaled` (check \
             a_trap_is_signaled; every trap kind in wasm-backend/tests/jobs.rs)",
        )
    }

    fn trap(&self, stderr: &[u8]) -> Support<Crash> {
        let body = format!("{} unreachable", write_call(2, 0, stderr.len()));
        Support::Yes(Crash {
            request: self.request(module(&body, stderr)),
            signal: 6,
            detail: "unreachable",
        })
    }

    fn echo_stdin(&self) -> ExecRequest {
        self.request(wat(CAT_STDIN))
    }

    fn print_args(&self, args: &[String]) -> (ExecRequest, Vec<u8>) {
        let mut request = self.request(wat(ARGS_ECHO));
        request.args = args.to_vec();
        (request, b"main.wasm\0".to_vec())
    }

    fn print_env(&self) -> ExecRequest {
        let env_echo = ARGS_ECHO
            .replace("args_sizes_get", "environ_sizes_get")
            .replace("args_get", "environ_get");
        self.request(wat(&env_echo))
    }

    fn env_added_by_backend(&self) -> &'static [&'static str] {
        &[]
    }

    fn input_file_path(&self, name: &str) -> String {
        // Relative to the preopened input directory, whatever its guest name.
        name.to_owned()
    }

    fn cat(&self, path: &str) -> ExecRequest {
        self.request(cat_input(path))
    }

    fn spin(&self) -> ExecRequest {
        self.request(module("(loop $l (br $l))", b""))
    }

    fn sleep(&self, duration: Duration) -> ExecRequest {
        let body = format!("(call $sleep (i64.const {}))", duration.as_nanos());
        self.request(module(&body, b""))
    }

    fn yes(&self) -> ExecRequest {
        let data = b"y\n".repeat(500);
        let body = format!("(loop $l {} (br $l))", write_call(1, 0, data.len()));
        self.request(module(&body, &data))
    }

    fn tick(&self) -> ExecRequest {
        let body = format!(
            "(loop $l {} (call $sleep (i64.const 10000000)) (br $l))",
            write_call(1, 0, 5)
        );
        self.request(module(&body, b"tick\n"))
    }

    fn bursts(&self, first: &str, pause: Duration, second: &str) -> ExecRequest {
        let (first, second) = (format!("{first}\n"), format!("{second}\n"));
        let body = format!(
            "{} (call $sleep (i64.const {})) {}",
            write_call(1, 0, first.len()),
            pause.as_nanos(),
            write_call(1, first.len(), second.len())
        );
        self.request(module(&body, format!("{first}{second}").as_bytes()))
    }

    fn concurrency(&self) -> usize {
        // More than the backend's 16 instance slots: the extra jobs wait for one.
        40
    }

    fn min_memory_peak(&self) -> u64 {
        // The guests' linear memory is at least two pages.
        2 * 65536
    }
}

async fn target() -> Target {
    let store = MapStore::new();
    let (backend, cache) = backend(store.clone());
    Target {
        backend: Arc::new(backend),
        guests: Arc::new(WasmGuests {
            store,
            _cache: cache,
        }),
    }
}

runtime_core::conformance_suite!(target);
