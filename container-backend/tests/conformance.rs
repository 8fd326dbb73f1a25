//! The backend conformance suite (`runtime_core::conformance`) against the container backend,
//! with busybox-static guests; and proof that the suite fails a backend that ignores the output
//! cap. Root only; a missing prerequisite fails (never skips).

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::sync::Arc;
use std::time::Duration;

use container_support::*;
use runtime_core::ExecRequest;
use runtime_core::conformance::{Crash, Guests, Support, Target};

/// Where the guests' own files (and the job's input files) go.
const WORKDIR: &str = "/conformance";

struct ContainerGuests {
    _env: TestEnv,
    image: String,
}

impl ContainerGuests {
    /// `sh -c script`, in [`WORKDIR`].
    fn sh(&self, script: &str) -> ExecRequest {
        let mut r = sh(&self.image, script);
        r.container.workdir = Some(WORKDIR.into());
        r
    }

    /// `argv` as the entrypoint, in [`WORKDIR`].
    fn exec(&self, argv: &[&str]) -> ExecRequest {
        let mut r = request(&self.image, &[]);
        r.container.entrypoint = Some(argv.iter().map(|s| s.to_string()).collect());
        r.container.workdir = Some(WORKDIR.into());
        r
    }
}

impl Guests for ContainerGuests {
    fn write_and_exit(&self, stdout: &[u8], stderr: &[u8], code: i32) -> ExecRequest {
        // Arbitrary bytes, in volume, do not fit in an argv: they come in as files.
        let mut r = self.sh(&format!(
            "cat .stdout.bin && cat .stderr.bin >&2 && exit {code}; exit 99"
        ));
        r.files = vec![
            file(".stdout.bin", stdout, None),
            file(".stderr.bin", stderr, None),
        ];
        r
    }

    fn kill_self(&self, stderr: &[u8], signal: i32) -> Support<ExecRequest> {
        let mut r = self.sh(&format!("cat .stderr.bin >&2; kill -{signal} $$; exit 99"));
        r.files = vec![file(".stderr.bin", stderr, None)];
        Support::Yes(r)
    }

    fn trap(&self, _stderr: &[u8]) -> Support<Crash> {
        Support::NotApplicable(
            "native code has no traps; a fault is a real signal (check killed_by_a_signal)",
        )
    }

    fn echo_stdin(&self) -> ExecRequest {
        self.exec(&["cat"])
    }

    fn print_args(&self, args: &[String]) -> (ExecRequest, Vec<u8>) {
        let mut r = self.exec(&["/bin/sh", "-c", r#"printf '%s\0' "$0" "$@""#, "prog"]);
        r.args = args.to_vec();
        (r, b"prog\0".to_vec())
    }

    fn print_env(&self) -> ExecRequest {
        // cat's own environment: exactly what the backend passed to execve.
        self.exec(&["cat", "/proc/self/environ"])
    }

    fn env_added_by_backend(&self) -> &'static [&'static str] {
        // The image's Env (PATH here), HOSTNAME, and HOME from /etc/passwd.
        &["PATH", "HOSTNAME", "HOME"]
    }

    fn input_file_path(&self, name: &str) -> String {
        format!("{WORKDIR}/{name}")
    }

    fn cat(&self, path: &str) -> ExecRequest {
        self.exec(&["cat", path])
    }

    fn spin(&self) -> ExecRequest {
        self.sh("while :; do :; done")
    }

    fn sleep(&self, duration: Duration) -> ExecRequest {
        self.sh(&format!("sleep {}", duration.as_secs_f64()))
    }

    fn yes(&self) -> ExecRequest {
        self.exec(&["yes"])
    }

    fn tick(&self) -> ExecRequest {
        self.sh("while :; do echo tick; sleep 0.01; done")
    }

    fn bursts(&self, first: &str, pause: Duration, second: &str) -> ExecRequest {
        self.sh(&format!(
            "echo {first}; sleep {}; echo {second}",
            pause.as_secs_f64()
        ))
    }

    fn concurrency(&self) -> usize {
        8
    }

    fn min_memory_peak(&self) -> u64 {
        // The cgroup's peak: at least a page of the job's processes.
        4096
    }
}

async fn target() -> Target {
    let env = TestEnv::new();
    let image = env.busybox("conformance", &[], default_config()).await;
    let backend = env.backend.clone();
    Target {
        backend,
        guests: Arc::new(ContainerGuests { _env: env, image }),
    }
}

runtime_core::conformance_suite!(target);
