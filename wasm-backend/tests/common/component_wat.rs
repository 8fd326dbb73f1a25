//! Hand-written WASI 0.2 command components (WAT), for what the Rust `wasm32-wasip2` guest
//! cannot express: exact exit codes (`wasi:cli/exit.exit-with-code`; Rust's `process::exit` gives
//! only 0 or 1 there), and the raw `wasi:filesystem` stream error codes (wasi-libc drops them).
//!
//! [`command`] wraps a core module body in a component that imports stdout/stderr, output
//! streams, the job's preopens, `open-at`, `write-via-stream`, `filesystem-error-code` and
//! `exit-with-code`, lowered for the core module as:
//!
//! - `$write(handle, ptr, len)`: `blocking-write-and-flush` in chunks of at most 4096 bytes;
//!   traps if the stream fails;
//! - `$stdout()`, `$stderr()`: the stream handles; `$exit(code)`: `exit-with-code`;
//! - `$bwf(handle, ptr, len, retptr)`, `$dirs(retptr)`, `$open_at(self, pflags, ptr, len,
//!   oflags, dflags, retptr)`, `$write_via_stream(self, offset, retptr)`, `$fs_error_code(err,
//!   retptr)`: the raw canonical-ABI imports.
//!
//! Memory: bytes 0..1024 are scratch (return areas), `data` starts at 65536, the realloc bump
//! allocator (for `get-directories`) hands out memory from 32768.

/// A command component whose `run` executes `body` (core WAT instructions; it may return with
/// `$exit`), with `data` at 65536.
pub fn command(body: &str, data: &[u8]) -> Vec<u8> {
    let pages = 2 + data.len().div_ceil(65536);
    let data = super::wat_string(data);
    super::wat(&format!(
        r#"
(component $C
  (import "wasi:io/error@0.2.0" (instance $error (export "error" (type (sub resource)))))
  (alias export $error "error" (type $error-t))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer $C $error-t (type $err))
    (export "error" (type $err2 (eq $err)))
    (export "output-stream" (type $os (sub resource)))
    (type $se (variant (case "last-operation-failed" (own $err2)) (case "closed")))
    (export "stream-error" (type $se2 (eq $se)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $os)) (param "contents" (list u8)) (result (result (error $se2)))))))
  (alias export $streams "output-stream" (type $os-t))
  (alias export $streams "[method]output-stream.blocking-write-and-flush" (func $bwf))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer $C $os-t (type $os))
    (export "get-stdout" (func (result (own $os))))))
  (import "wasi:cli/stderr@0.2.0" (instance $stderr
    (alias outer $C $os-t (type $os))
    (export "get-stderr" (func (result (own $os))))))
  (import "wasi:cli/exit@0.2.0" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (import "wasi:filesystem/types@0.2.0" (instance $types
    (alias outer $C $error-t (type $err))
    (alias outer $C $os-t (type $os))
    (export "descriptor" (type $d (sub resource)))
    (type $ec (enum "access" "would-block" "already" "bad-descriptor" "busy" "deadlock" "quota"
      "exist" "file-too-large" "illegal-byte-sequence" "in-progress" "interrupted" "invalid" "io"
      "is-directory" "loop" "too-many-links" "message-size" "name-too-long" "no-device"
      "no-entry" "no-lock" "insufficient-memory" "insufficient-space" "not-directory"
      "not-empty" "not-recoverable" "unsupported" "no-tty" "no-such-device" "overflow"
      "not-permitted" "pipe" "read-only" "invalid-seek" "text-file-busy" "cross-device"))
    (export "error-code" (type $ec2 (eq $ec)))
    (type $pf (flags "symlink-follow"))
    (export "path-flags" (type $pf2 (eq $pf)))
    (type $of (flags "create" "directory" "exclusive" "truncate"))
    (export "open-flags" (type $of2 (eq $of)))
    (type $df (flags "read" "write" "file-integrity-sync" "data-integrity-sync"
      "requested-write-sync" "mutate-directory"))
    (export "descriptor-flags" (type $df2 (eq $df)))
    (export "[method]descriptor.open-at" (func (param "self" (borrow $d))
      (param "path-flags" $pf2) (param "path" string) (param "open-flags" $of2)
      (param "flags" $df2) (result (result (own $d) (error $ec2)))))
    (export "[method]descriptor.write-via-stream" (func (param "self" (borrow $d))
      (param "offset" u64) (result (result (own $os) (error $ec2)))))
    (export "filesystem-error-code" (func (param "err" (borrow $err)) (result (option $ec2))))))
  (alias export $types "descriptor" (type $d-t))
  (import "wasi:filesystem/preopens@0.2.0" (instance $preopens
    (alias outer $C $d-t (type $d))
    (export "get-directories" (func (result (list (tuple (own $d) string)))))))

  (core module $Mem
    (memory (export "memory") {pages})
    (global $next (mut i32) (i32.const 32768))
    ;; A bump allocator (never frees): enough for a few `get-directories` calls.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $at i32)
      (local.set $at (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
      (global.set $next (i32.add (local.get $at) (local.get 3)))
      (local.get $at)))
  (core instance $mem (instantiate $Mem))
  (alias core export $mem "memory" (core memory $m))
  (alias core export $mem "realloc" (core func $realloc))
  (core func $bwf-lo (canon lower (func $bwf) (memory $m)))
  (core func $stdout-lo (canon lower (func $stdout "get-stdout")))
  (core func $stderr-lo (canon lower (func $stderr "get-stderr")))
  (core func $exit-lo (canon lower (func $exit "exit-with-code")))
  (core func $open-at-lo (canon lower (func $types "[method]descriptor.open-at") (memory $m)))
  (core func $wvs-lo (canon lower (func $types "[method]descriptor.write-via-stream") (memory $m)))
  (core func $fec-lo (canon lower (func $types "filesystem-error-code") (memory $m)))
  (core func $dirs-lo (canon lower (func $preopens "get-directories") (memory $m) (realloc $realloc)))

  (core module $Main
    (import "host" "memory" (memory 1))
    (import "host" "bwf" (func $bwf (param i32 i32 i32 i32)))
    (import "host" "stdout" (func $stdout (result i32)))
    (import "host" "stderr" (func $stderr (result i32)))
    (import "host" "exit" (func $exit (param i32)))
    (import "host" "open-at" (func $open_at (param i32 i32 i32 i32 i32 i32 i32)))
    (import "host" "write-via-stream" (func $write_via_stream (param i32 i64 i32)))
    (import "host" "fs-error-code" (func $fs_error_code (param i32 i32)))
    (import "host" "dirs" (func $dirs (param i32)))
    (data (i32.const 65536) "{data}")
    (func $write (param $h i32) (param $ptr i32) (param $len i32) (local $n i32)
      (block $done
        (loop $more
          (br_if $done (i32.eqz (local.get $len)))
          (local.set $n (select (i32.const 4096) (local.get $len)
            (i32.gt_u (local.get $len) (i32.const 4096))))
          (call $bwf (local.get $h) (local.get $ptr) (local.get $n) (i32.const 16))
          (if (i32.load8_u (i32.const 16)) (then (unreachable)))
          (local.set $ptr (i32.add (local.get $ptr) (local.get $n)))
          (local.set $len (i32.sub (local.get $len) (local.get $n)))
          (br $more))))
    (func (export "run") (result i32) {body} (i32.const 0)))
  (core instance $main (instantiate $Main (with "host" (instance
    (export "memory" (memory $m))
    (export "bwf" (func $bwf-lo))
    (export "stdout" (func $stdout-lo))
    (export "stderr" (func $stderr-lo))
    (export "exit" (func $exit-lo))
    (export "open-at" (func $open-at-lo))
    (export "write-via-stream" (func $wvs-lo))
    (export "fs-error-code" (func $fec-lo))
    (export "dirs" (func $dirs-lo))))))
  (func $run (result (result)) (canon lift (core func $main "run")))
  (instance $runinst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $runinst)))
"#
    ))
}

/// Writes `stdout` to stdout, then `stderr` to stderr, then exits with `code` through
/// `exit-with-code`; with `trap`, traps (`unreachable`) instead of exiting.
pub fn write_and_exit(stdout: &[u8], stderr: &[u8], code: u8, trap: bool) -> Vec<u8> {
    let (out, err) = (stdout.len(), stderr.len());
    let end = if trap {
        "(unreachable)".to_owned()
    } else {
        format!("(call $exit (i32.const {code}))")
    };
    let body = format!(
        "(call $write (call $stdout) (i32.const 65536) (i32.const {out}))
         (call $write (call $stderr) (i32.const {}) (i32.const {err}))
         {end}",
        65536 + out
    );
    command(&body, &[stdout, stderr].concat())
}

/// `wasi:filesystem` `error-code::insufficient-space`.
pub const INSUFFICIENT_SPACE: u8 = 23;

/// Creates `/big` in the first preopen and writes it through `write-via-stream` in chunks of
/// 4096 bytes until `mib` MiB are written or a write fails. A failed write's stream error is
/// asked for its `filesystem-error-code`; the component exits with `100 + code` (so
/// `insufficient-space` is 123), 98 if the error has no code, 97 if the stream closed, 96 if
/// `open-at` failed, 95 if there is no preopen, and 0 when everything was written.
pub fn fill(mib: u32) -> Vec<u8> {
    let chunks = u64::from(mib) * 256;
    let body = format!(
        r#"(local $dir i32) (local $stream i32) (local $n i64)
        (call $dirs (i32.const 32))
        (if (i32.eqz (i32.load (i32.const 36))) (then (call $exit (i32.const 95)) (return (i32.const 0))))
        (local.set $dir (i32.load (i32.load (i32.const 32))))
        ;; open-at(dir, no symlink-follow, "big", create|truncate, write)
        (call $open_at (local.get $dir) (i32.const 0) (i32.const 65536) (i32.const 3)
          (i32.const 9) (i32.const 2) (i32.const 48))
        (if (i32.load8_u (i32.const 48)) (then (call $exit (i32.const 96)) (return (i32.const 0))))
        (call $write_via_stream (i32.load (i32.const 52)) (i64.const 0) (i32.const 64))
        (if (i32.load8_u (i32.const 64)) (then (call $exit (i32.const 96)) (return (i32.const 0))))
        (local.set $stream (i32.load (i32.const 68)))
        (block $done
          (loop $more
            (br_if $done (i64.ge_u (local.get $n) (i64.const {chunks})))
            (call $bwf (local.get $stream) (i32.const 69632) (i32.const 4096) (i32.const 80))
            (if (i32.load8_u (i32.const 80))
              (then
                ;; closed
                (if (i32.load8_u (i32.const 84)) (then (call $exit (i32.const 97)) (return (i32.const 0))))
                ;; last-operation-failed(error): ask for its filesystem error code
                (call $fs_error_code (i32.load (i32.const 88)) (i32.const 96))
                (if (i32.eqz (i32.load8_u (i32.const 96))) (then (call $exit (i32.const 98)) (return (i32.const 0))))
                (call $exit (i32.add (i32.const 100) (i32.load8_u (i32.const 97))))
                (return (i32.const 0))))
            (local.set $n (i64.add (local.get $n) (i64.const 1)))
            (br $more)))
        (call $exit (i32.const 0))"#
    );
    let mut data = b"big".to_vec();
    data.resize(4096, 0);
    data.extend(std::iter::repeat_n(7u8, 4096));
    command(&body, &data)
}
