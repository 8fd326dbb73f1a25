//! Shared helpers for the wasm-backend integration tests: an in-memory module store, WAT guests,
//! and a job runner that collects output.

#![allow(dead_code)]

pub mod component_wat;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_core::{CancellationToken, ExecRequest, InputFile, Limits, ModuleStore, Program};
use wasm_backend::{WasmBackend, WasmConfig, module_digest};

/// A module store backed by a map, counting how often it is asked.
#[derive(Default)]
pub struct MapStore {
    modules: Mutex<HashMap<String, Vec<u8>>>,
    calls: AtomicUsize,
    /// Delay before answering (to make concurrent first loads overlap).
    pub delay: Mutex<Option<Duration>>,
    /// When set, every load fails as an unreachable store with this reason.
    pub unavailable: Mutex<Option<String>>,
}

impl MapStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stores `bytes` under their digest and returns it.
    pub fn add(&self, bytes: Vec<u8>) -> String {
        let digest = module_digest(&bytes);
        self.modules.lock().unwrap().insert(digest.clone(), bytes);
        digest
    }

    /// Stores `bytes` under an arbitrary digest (to simulate a corrupt store).
    pub fn add_as(&self, digest: &str, bytes: Vec<u8>) {
        self.modules
            .lock()
            .unwrap()
            .insert(digest.to_owned(), bytes);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl ModuleStore for MapStore {
    async fn load(&self, digest: &str) -> Result<Vec<u8>, runtime_core::ModuleStoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(reason) = self.unavailable.lock().unwrap().clone() {
            return Err(runtime_core::ModuleStoreError::Unavailable(reason));
        }
        let delay = *self.delay.lock().unwrap();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.modules
            .lock()
            .unwrap()
            .get(digest)
            .cloned()
            .ok_or_else(|| runtime_core::ModuleStoreError::Missing(format!("no module {digest}")))
    }
}

pub fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("test WAT must parse")
}

pub fn config(cache_dir: &Path) -> WasmConfig {
    WasmConfig {
        cache_dir: cache_dir.to_path_buf(),
        max_concurrent_instances: 16,
        max_memory_bytes_per_instance: 1 << 30,
        ..WasmConfig::default()
    }
}

/// A backend over a fresh cache directory (kept alive by the returned guard).
pub fn backend(store: Arc<MapStore>) -> (WasmBackend, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = WasmBackend::new(config(dir.path()), store).expect("backend");
    (backend, dir)
}

pub fn limits() -> Limits {
    Limits {
        wall_time: Duration::from_secs(10),
        cpu_time: None,
        memory_bytes: 64 << 20,
        fuel: None,
        output_bytes: 1 << 20,
        pids: None,
        disk_bytes: None,
    }
}

pub fn request(digest: &str) -> ExecRequest {
    ExecRequest {
        job_id: "test-job".into(),
        program: Program::WasmModule {
            digest: digest.to_owned(),
        },
        args: vec![],
        env: vec![],
        stdin: vec![],
        files: vec![],
        limits: limits(),
        container: Default::default(),
        chain: Default::default(),
        artifacts: Default::default(),
        wasm: Default::default(),
    }
}

pub fn file(path: &str, content: &[u8]) -> InputFile {
    InputFile {
        path: path.into(),
        content: content.to_vec(),
        mode: None,
    }
}

/// Asserts that no job's file is left under `scratch` (a backend's `scratch_dir`): only the
/// backend's `nekton-wasm-jobs-*` directory, holding empty directories kept for later jobs.
pub fn assert_no_job_files(scratch: &Path) {
    for pool in std::fs::read_dir(scratch).unwrap() {
        let pool = pool.unwrap().path();
        let name = pool.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("nekton-wasm-jobs-") && pool.is_dir(),
            "unexpected {pool:?} in the scratch directory"
        );
        for dir in std::fs::read_dir(&pool).unwrap() {
            let dir = dir.unwrap().path();
            assert!(dir.is_dir(), "{dir:?} is not a job directory");
            let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
            assert!(left.is_empty(), "a job left {left:?} in {dir:?}");
        }
    }
}

/// The runner every backend's tests share (`runtime_core::conformance`): runs a request with a
/// fresh sink and collects what the job wrote.
pub use runtime_core::conformance::{Finished, run as run_with};

pub async fn run(backend: &WasmBackend, request: ExecRequest) -> Finished {
    run_with(backend, request, CancellationToken::new()).await
}

/// Writes `hello, world\n` to stdout and returns from `_start`.
pub const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello, world\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// Adds the hello module to `store` and checks that `backend` runs it correctly.
pub async fn assert_hello_works(backend: &WasmBackend, store: &MapStore) {
    let digest = store.add(wat(HELLO));
    let done = run(backend, request(&digest)).await;
    assert!(
        done.report.outcome.is_success(),
        "hello failed: {:?}",
        done.report.outcome
    );
    assert_eq!(done.stdout, b"hello, world\n");
}

/// A guest that runs `body` inside `_start`, with fd_write, proc_exit and poll_oneoff imported,
/// one page of memory, and `data` at offset 1024.
pub fn guest(body: &str, data: &str) -> Vec<u8> {
    wat(&format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{data}")
  ;; write(fd, ptr, len): one iovec at 0, nwritten at 8; traps the guest if the write fails
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)) (then (unreachable))))
  ;; sleep(ns) with a relative monotonic clock subscription at 128, event at 256
  (func $sleep (param $ns i64)
    (i64.store (i32.const 128) (i64.const 42))        ;; userdata
    (i32.store8 (i32.const 136) (i32.const 0))        ;; tag: clock
    (i32.store (i32.const 144) (i32.const 1))         ;; clock id: monotonic
    (i64.store (i32.const 152) (local.get $ns))       ;; timeout
    (i64.store (i32.const 160) (i64.const 0))         ;; precision
    (i32.store16 (i32.const 168) (i32.const 0))       ;; flags: relative
    (drop (call $poll_oneoff (i32.const 128) (i32.const 256) (i32.const 1) (i32.const 320))))
  (func (export "_start") {body}))
"#
    ))
}

/// Bytes as a WAT string literal.
pub fn wat_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// Opens `path` relative to the first preopen (fd 3: the job's input directory) and copies it to
/// stdout; exits with 20 + errno if the open fails.
pub fn cat_input(path: &str) -> Vec<u8> {
    wat(&format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "{path}")
  (func (export "_start") (local $err i32) (local $fd i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const {len})
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 2000)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 20) (local.get $err)))))
    (local.set $fd (i32.load (i32.const 2000)))
    (loop $again
      (i32.store (i32.const 0) (i32.const 4096))
      (i32.store (i32.const 4) (i32.const 4096))
      (if (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)) (then (unreachable)))
      (if (i32.load (i32.const 8))
        (then
          (i32.store (i32.const 4) (i32.load (i32.const 8)))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
          (br $again))))))
"#,
        path = wat_string(path.as_bytes()),
        len = path.len()
    ))
}

/// ENOSPC in WASI preview 1.
pub const WASI_ENOSPC: i32 = 51;

/// A backend whose jobs' directories are under a scratch directory of their own (returned, with
/// the module cache's).
pub fn scratch_backend(
    store: Arc<MapStore>,
) -> (
    wasm_backend::WasmBackend,
    tempfile::TempDir,
    tempfile::TempDir,
) {
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut config = config(cache.path());
    config.scratch_dir = Some(scratch.path().to_path_buf());
    let backend = wasm_backend::WasmBackend::new(config, store).unwrap();
    (backend, scratch, cache)
}

/// Creates `{path}` under fd 3 (O_CREAT|O_EXCL when `excl`), writes `{chunks}` times 4096 bytes,
/// and exits 0, or with the errno of the first failing call.
pub fn writer(path: &str, chunks: u32, excl: bool) -> Vec<u8> {
    let oflags = if excl { 1 | 4 } else { 1 };
    wat(&format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "{path}")
  (func (export "_start") (local $err i32) (local $fd i32) (local $n i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const {len})
      (i32.const {oflags}) (i64.const 0x1fffffff) (i64.const 0) (i32.const 0) (i32.const 2000)))
    (if (local.get $err) (then (call $proc_exit (local.get $err))))
    (local.set $fd (i32.load (i32.const 2000)))
    (block $done
      (loop $again
        (br_if $done (i32.ge_u (local.get $n) (i32.const {chunks})))
        (i32.store (i32.const 0) (i32.const 8192))
        (i32.store (i32.const 4) (i32.const 4096))
        (local.set $err (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (if (local.get $err) (then (call $proc_exit (local.get $err))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $again)))))
"#,
        len = path.len()
    ))
}
