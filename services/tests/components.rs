//! WASI 0.2 components end to end: uploaded with `POST /v1/modules` like core modules, run with
//! `POST /v1/jobs`, their stdin, output, exit code, bill and cancel read back from the API. The
//! guest is `wasm-backend/tests/guests/component.rs`, built here for `wasm32-wasip2` (installed
//! by `scripts/setup-test.sh`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::Harness;
use nekton::api::types::JobSpec;

const TIMEOUT: Duration = Duration::from_secs(60);

#[path = "../../wasm-backend/tests/guests/build_component.rs"]
mod build;

fn build_component() -> Vec<u8> {
    build::build_component(Path::new(env!("CARGO_TARGET_TMPDIR")), "services")
}

async fn stdout_of(h: &Harness, id: uuid::Uuid) -> String {
    h.http
        .get(format!("{}/v1/jobs/{id}/logs?stream=stdout", h.base))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("stdout of the job")
        .text()
        .await
        .expect("stdout text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_runs_through_the_api_like_a_module() {
    let h = Harness::start().await;
    let digest = h.push(build_component()).await;

    // stdin to stdout, exit 0, with a bill.
    let spec = JobSpec {
        module: Some(digest.clone()),
        args: vec!["cat".into()],
        stdin: Some("through the API\n".into()),
        ..Default::default()
    };
    let id = h.submit(&spec).await.id;
    let job = h.wait_finished(id, TIMEOUT).await;
    let outcome = job.outcome.expect("an outcome");
    assert_eq!(
        (outcome.reason.as_str(), outcome.exit_code),
        ("exited", Some(0)),
        "{outcome:?}"
    );
    assert_eq!(stdout_of(&h, id).await, "through the API\n");
    let usage = job.usage.expect("a bill");
    assert!(usage.fuel_consumed.is_some_and(|f| f > 0), "{usage:?}");
    assert!(
        usage.wasm_memory_peak_bytes.is_some_and(|m| m > 0),
        "{usage:?}"
    );
    assert_eq!(usage.stdout_bytes, 16);

    // A nonzero exit code.
    let spec = JobSpec {
        module: Some(digest.clone()),
        args: vec!["exit".into(), "1".into()],
        ..Default::default()
    };
    let id = h.submit(&spec).await.id;
    let outcome = h
        .wait_finished(id, TIMEOUT)
        .await
        .outcome
        .expect("an outcome");
    assert_eq!(
        (outcome.reason.as_str(), outcome.exit_code),
        ("exited", Some(1)),
        "{outcome:?}"
    );

    // Cancelled while it runs.
    let spec = JobSpec {
        module: Some(digest.clone()),
        args: vec!["ticks".into()],
        ..Default::default()
    };
    let id = h.submit(&spec).await.id;
    h.wait_running(id, TIMEOUT).await;
    h.client.cancel(id).await.expect("cancel");
    let outcome = h
        .wait_finished(id, TIMEOUT)
        .await
        .outcome
        .expect("an outcome");
    assert_eq!(outcome.reason.as_str(), "cancelled", "{outcome:?}");

    // A component that wants the network is refused at upload, saying why.
    let sockets = wat::parse_str(
        r#"(component
  (import "wasi:sockets/tcp@0.2.0" (instance))
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $r (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $r)))"#,
    )
    .unwrap();
    let response = h
        .http
        .post(format!("{}/v1/modules", h.base))
        .header("content-type", "application/wasm")
        .body(sockets)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status().as_u16(), 422);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("wasi:sockets/tcp") && body.contains("network"),
        "{body}"
    );
}
