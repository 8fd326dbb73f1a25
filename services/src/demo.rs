//! The demo job `nekton serve --demo` runs: a tiny WASI program, submitted through the real HTTP
//! API like any client would, with its live output and its bill printed.

use std::io::Write as _;

use anyhow::Context as _;
use futures::StreamExt as _;

use crate::api::types::{JobSpec, LimitsSpec};
use crate::cli::{Client, LogStreamEvent};

/// The demo program: prints a greeting, its arguments' count and a line per environment variable
/// it was given, then exits 0.
pub const DEMO_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "Hello from a nekton Wasm job: sandboxed in wasmtime, metered, streamed live.\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 77))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// The demo module's bytes.
pub fn demo_module() -> anyhow::Result<Vec<u8>> {
    wat::parse_str(DEMO_WAT).context("assembling the demo module")
}

/// Uploads the demo module, runs it as a job through the API at `server`, prints its output and
/// record. Returns an error unless the job succeeded.
pub async fn run_demo(server: &str, token: Option<&str>) -> anyhow::Result<()> {
    let client = Client::with_token(server, token)?;
    let module = client.push_module(demo_module()?).await?;
    let spec = JobSpec {
        module: Some(module.digest.clone()),
        limits: Some(LimitsSpec {
            wall_time_ms: Some(5_000),
            fuel: Some(1_000_000),
            ..Default::default()
        }),
        labels: [("demo".to_string(), "true".to_string())].into(),
        ..Default::default()
    };
    let job = client.submit(&spec, None).await?;
    println!("demo: submitted job {} (module {})", job.id, module.digest);
    let mut events = Box::pin(client.follow_logs(job.id, None));
    let mut out = std::io::stdout();
    while let Some(ev) = events.next().await {
        match ev? {
            LogStreamEvent::Log { bytes, .. } => {
                out.write_all(b"demo | ")?;
                out.write_all(&bytes)?;
                out.flush()?;
            }
            LogStreamEvent::Exit { .. }
            | LogStreamEvent::State { .. }
            | LogStreamEvent::Suite { .. } => {}
        }
    }
    let done = client.get_job(job.id).await?;
    println!(
        "demo: job record:\n{}",
        serde_json::to_string_pretty(&done)?
    );
    anyhow::ensure!(
        done.state == crate::api::types::JobState::Succeeded,
        "the demo job ended {:?}, not succeeded",
        done.state
    );
    println!(
        "demo: succeeded. Try: nekton run examples/hello.wat  |  nekton jobs ls  |  curl -s -H \"Authorization: Bearer $(cat STATE_DIR/admin.token)\" {server}/v1/jobs/{}",
        job.id
    );
    println!(
        "demo: the web console: {server}{}#/jobs/{} (paste the admin token when asked)",
        crate::api::console::PATH,
        job.id
    );
    Ok(())
}
