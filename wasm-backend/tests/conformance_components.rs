//! The backend conformance suite (`runtime_core::conformance`) against the Wasm backend with WASI
//! 0.2 components as guests: every check `conformance.rs` runs with core modules, here with
//! components, so a component's output, stdin, args, env, files, exit codes, traps, wall time,
//! cancels, streaming and bill are proven by the same checks as a core module's.
//!
//! The guests are the Rust `wasm32-wasip2` command `guests/component.rs` (built at test time,
//! like `components.rs` does), and, where an exact exit code or exact bytes are needed, the WAT
//! components of `common::component_wat` (`exit-with-code`: Rust's `process::exit` gives only 0
//! or 1 on wasip2).

mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use runtime_core::ExecRequest;
use runtime_core::conformance::{Crash, Guests, Support, Target};

#[path = "guests/build_component.rs"]
mod build;

/// The Rust test component, built once per test binary.
fn rust_component() -> Vec<u8> {
    static BUILT: OnceLock<Vec<u8>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build::build_component(Path::new(env!("CARGO_TARGET_TMPDIR")), "conformance")
        })
        .clone()
}

struct ComponentGuests {
    store: Arc<MapStore>,
    /// The Rust component's digest.
    rust: String,
}

impl ComponentGuests {
    /// The Rust component with these arguments.
    fn rust(&self, args: &[&str]) -> ExecRequest {
        let mut request = request(&self.rust);
        request.args = args.iter().map(|a| a.to_string()).collect();
        request
    }

    fn wat(&self, component: Vec<u8>) -> ExecRequest {
        request(&self.store.add(component))
    }
}

impl Guests for ComponentGuests {
    fn write_and_exit(&self, stdout: &[u8], stderr: &[u8], code: i32) -> ExecRequest {
        let code = u8::try_from(code).expect("the suite's exit codes are 0..=125");
        self.wat(component_wat::write_and_exit(stdout, stderr, code, false))
    }

    fn kill_self(&self, _stderr: &[u8], _signal: i32) -> Support<ExecRequest> {
        Support::NotApplicable(
            "a component has no signals to send itself; a trap is its `signaled` (check \
             a_trap_is_signaled)",
        )
    }

    fn trap(&self, stderr: &[u8]) -> Support<Crash> {
        Support::Yes(Crash {
            request: self.wat(component_wat::write_and_exit(b"", stderr, 0, true)),
            signal: 6,
            detail: "unreachable",
        })
    }

    fn echo_stdin(&self) -> ExecRequest {
        self.rust(&["cat"])
    }

    fn print_args(&self, args: &[String]) -> (ExecRequest, Vec<u8>) {
        // The mode comes from the environment, so that the arguments are only the job's.
        let mut request = request(&self.rust);
        request.args = args.to_vec();
        request.env = vec![("MODE".into(), "argv".into())];
        (request, b"main.wasm\0".to_vec())
    }

    fn print_env(&self) -> ExecRequest {
        self.rust(&["env"])
    }

    fn env_added_by_backend(&self) -> &'static [&'static str] {
        &[]
    }

    fn input_file_path(&self, name: &str) -> String {
        // The job's directory is the preopen at `/`.
        format!("/{name}")
    }

    fn cat(&self, path: &str) -> ExecRequest {
        self.rust(&["cat-file", path])
    }

    fn spin(&self) -> ExecRequest {
        self.rust(&["spin"])
    }

    fn sleep(&self, duration: Duration) -> ExecRequest {
        self.rust(&["sleep", &duration.as_millis().to_string()])
    }

    fn yes(&self) -> ExecRequest {
        self.rust(&["yes"])
    }

    fn tick(&self) -> ExecRequest {
        self.rust(&["tick"])
    }

    fn bursts(&self, first: &str, pause: Duration, second: &str) -> ExecRequest {
        self.rust(&["bursts", first, &pause.as_millis().to_string(), second])
    }

    fn concurrency(&self) -> usize {
        // More than the backend's 16 instance slots: the extra jobs wait for one.
        40
    }

    fn min_memory_peak(&self) -> u64 {
        // The WAT components' linear memory is at least two pages.
        2 * 65536
    }
}

/// Every check gets its own backend, over one module cache directory: the Rust component (2.5 MB)
/// is compiled once, not once per check. Its contents are the same on every run (the guests are
/// deterministic), so it is kept under the target directory.
async fn target() -> Target {
    let store = MapStore::new();
    let rust = store.add(rust_component());
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-components-cache");
    let backend = wasm_backend::WasmBackend::new(config(&cache), store.clone()).expect("backend");
    Target {
        backend: Arc::new(backend),
        guests: Arc::new(ComponentGuests { store, rust }),
    }
}

runtime_core::conformance_suite!(target);
