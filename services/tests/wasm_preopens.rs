//! `wasm.preopens` end to end on real PostgreSQL: a Wasm job's directories shown at the guest
//! paths it asks for, in order, read-only where asked (the guest cannot write there, and nothing
//! it tried is left), the job's files below them, `[]` for no directory at all, the default `/`
//! without the field; and the 422s for bad layouts. The guest is `tests/guests/preopens.rs`,
//! built here for `wasm32-wasip1` (installed by `scripts/setup-test.sh`).

mod common;

use std::time::Duration;

use common::Harness;
use nekton::api::types::{Job, JobState};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(120);

async fn run(h: &Harness, body: Value) -> (Job, String) {
    let job = h.submit_json(&body).await;
    let job = h.wait_finished(job.id, TIMEOUT).await;
    let out = h
        .http
        .get(format!("{}/v1/jobs/{}/logs?stream=stdout", h.base, job.id))
        .send()
        .await
        .expect("logs")
        .text()
        .await
        .expect("log text");
    (job, out)
}

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preopens_show_the_jobs_directories_where_and_how_asked() {
    let h = Harness::start().await;
    let digest = h.push(common::guests::rust_guest("preopens")).await;
    let files = json!([
        {"path": "input/a.txt", "content": "alpha"},
        {"path": "top.txt", "content": "top"},
    ]);

    // Two directories: the input read-only at /data, an output directory (made empty) at /out.
    let (job, out) = run(
        &h,
        json!({
            "module": digest,
            "files": files,
            "artifacts": ["**"],
            "wasm": {"preopens": [
                {"guest": "/data", "dir": "input", "mode": "ro"},
                {"guest": "/out", "dir": "out"},
            ]},
            "args": ["preopens", "read:/data/a.txt", "write:/data/new.txt",
                     "write:/out/r.txt", "read:/out/r.txt", "read:/top.txt"],
        }),
    )
    .await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}\n{out}");
    assert_eq!(
        lines(&out),
        [
            "preopens: /data /out",
            "read /data/a.txt: ok alpha",
            "write /data/new.txt: error",
            "write /out/r.txt: ok",
            "read /out/r.txt: ok written",
            // The job's directory itself is not shown: only what the layout names.
            "read /top.txt: error",
        ]
    );
    // The directory as the job left it: the refused write left nothing.
    let list = h.client.list_artifacts(job.id).await.expect("listing");
    let mut paths: Vec<&str> = list.artifacts.iter().map(|a| a.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["input/a.txt", "out/r.txt", "top.txt"]);

    // The whole directory at a name of the job's choice, read-write.
    let (job, out) = run(
        &h,
        json!({
            "module": digest,
            "files": files,
            "wasm": {"preopens": [{"guest": "/work"}]},
            "args": ["preopens", "read:/work/input/a.txt", "write:/work/w.txt"],
        }),
    )
    .await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}\n{out}");
    assert_eq!(
        lines(&out),
        [
            "preopens: /work",
            "read /work/input/a.txt: ok alpha",
            "write /work/w.txt: ok"
        ]
    );

    // No directory at all.
    let (job, out) = run(
        &h,
        json!({
            "module": digest,
            "files": files,
            "wasm": {"preopens": []},
            "args": ["preopens", "read:/top.txt"],
        }),
    )
    .await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}\n{out}");
    assert_eq!(lines(&out), ["preopens: ", "read /top.txt: error"]);

    // Without the field: the job's directory read-write at `/`.
    let (job, out) = run(
        &h,
        json!({
            "module": digest,
            "files": files,
            "args": ["preopens", "read:/input/a.txt", "write:/w.txt", "read:/w.txt"],
        }),
    )
    .await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}\n{out}");
    assert_eq!(
        lines(&out),
        [
            "preopens: /",
            "read /input/a.txt: ok alpha",
            "write /w.txt: ok",
            "read /w.txt: ok written"
        ]
    );

    // A preopen whose directory is one of the job's files: the job's fault, said so.
    let (job, _) = run(
        &h,
        json!({
            "module": digest,
            "files": files,
            "wasm": {"preopens": [{"guest": "/data", "dir": "top.txt"}]},
        }),
    )
    .await;
    let outcome = job.outcome.expect("an outcome");
    assert_eq!(outcome.reason.to_string(), "spec_error", "{outcome:?}");
    let detail = outcome.detail.unwrap_or_default();
    assert!(detail.contains("wasm.preopens[0]"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_layouts_are_refused_naming_the_field() {
    let h = Harness::start().await;
    let module = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (
            json!({"preopens": [{"guest": "data"}]}),
            "wasm.preopens[0].guest",
        ),
        (
            json!({"preopens": [{"guest": "/a/../b"}]}),
            "wasm.preopens[0].guest",
        ),
        (
            json!({"preopens": [{"guest": "/data/"}]}),
            "wasm.preopens[0].guest",
        ),
        (
            json!({"preopens": [{"guest": "/"}, {"guest": "/"}]}),
            "wasm.preopens[1].guest",
        ),
        (
            json!({"preopens": [{"guest": "/d", "dir": "../x"}]}),
            "wasm.preopens[0].dir",
        ),
        (
            json!({"preopens": [{"guest": "/d", "dir": "/etc"}]}),
            "wasm.preopens[0].dir",
        ),
        (
            json!({"preopens": [{"guest": "/d", "dir": ""}]}),
            "wasm.preopens[0].dir",
        ),
        (
            json!({"preopens": (0..17).map(|i| json!({"guest": format!("/d{i}")})).collect::<Vec<_>>()}),
            "wasm.preopens",
        ),
    ];
    for (wasm, field) in cases {
        let r = h
            .http
            .post(format!("{}/v1/jobs", h.base))
            .json(&json!({"module": module, "wasm": wasm}))
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status(), 422, "{wasm}");
        let body: Value = r.json().await.expect("error body");
        assert_eq!(body["error"]["field"], field, "{wasm}: {body}");
    }
    // Unknown fields and modes are refused too (400/422 from the JSON reader).
    for wasm in [
        json!({"preopens": [{"guest": "/", "mode": "rx"}]}),
        json!({"preopen": []}),
    ] {
        let r = h
            .http
            .post(format!("{}/v1/jobs", h.base))
            .json(&json!({"module": module, "wasm": wasm}))
            .send()
            .await
            .expect("submit");
        assert!(r.status().is_client_error(), "{wasm}: {}", r.status());
    }
    // A job that insists on the container runtime cannot have them.
    let r = h
        .http
        .post(format!("{}/v1/jobs", h.base))
        .json(&json!({"image": "busybox", "runtime": "container", "wasm": {"preopens": []}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("error body");
    assert_eq!(body["error"]["field"], "wasm", "{body}");
    assert_eq!(h.count("jobs").await, 0, "a refused job was stored");
}
