//! Artifacts end to end on real PostgreSQL (docs/artifacts.md): a Wasm job's files listed with
//! their SHA-256 and downloaded byte for byte, its symlink and hard link skipped, a file over the
//! per-file cap cut and flagged, bad patterns refused, another tenant's job a 404, the CLI writing
//! them below a directory, a test suite's case files under `cases/NAME/`; the store's fence,
//! retention, and a failed store ending the attempt `internal_error`. The guest is
//! `tests/guests/artifacts.rs`, built here for `wasm32-wasip1` (installed by
//! `scripts/setup-test.sh`).

mod common;

use std::time::Duration;

use common::Harness;
use nekton::api::types::{ArtifactList, Job, JobSpec, JobState};
use nekton::store::artifacts::{self, Inserted, NewArtifact, NewSkipped};
use nekton::store::queue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The guest, built once per test binary.
fn guest() -> Vec<u8> {
    common::guests::rust_guest("artifacts")
}

/// What the guest writes: path → bytes (the three regular files below `out/`).
fn expected_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut x: u32 = 0x9e37_79b9;
    let big: Vec<u8> = (0..2_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    vec![
        ("out/a.txt", b"alpha\n".to_vec()),
        ("out/c.txt", "gamma ".repeat(1000).into_bytes()),
        ("out/sub/b.bin", big),
    ]
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn spec(digest: &str, patterns: &[&str]) -> JobSpec {
    JobSpec {
        artifacts: patterns.iter().map(|p| p.to_string()).collect(),
        ..Harness::spec(digest)
    }
}

async fn run(h: &Harness, spec: &JobSpec) -> Job {
    let job = h.submit(spec).await;
    let job = h.wait_finished(job.id, TIMEOUT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    job
}

async fn download(http: &reqwest::Client, base: &str, id: Uuid, path: &str) -> reqwest::Response {
    http.get(format!("{base}/v1/jobs/{id}/artifacts/{path}"))
        .send()
        .await
        .expect("download")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jobs_files_are_listed_and_downloaded_and_its_links_skipped() {
    let h = Harness::start().await;
    let digest = h.push(guest()).await;
    let job = run(&h, &spec(&digest, &["out/**"])).await;

    // The listing: exactly the three regular files, with the digests of their bytes.
    let list = h.client.list_artifacts(job.id).await.expect("listing");
    assert_eq!(list.attempt, 1);
    let want = expected_files();
    let got: Vec<(&str, u64, u64, bool, &str)> = list
        .artifacts
        .iter()
        .map(|a| {
            (
                a.path.as_str(),
                a.size,
                a.stored_bytes,
                a.truncated,
                a.sha256.as_str(),
            )
        })
        .collect();
    let want_rows: Vec<(&str, u64, u64, bool, String)> = want
        .iter()
        .map(|(p, d)| (*p, d.len() as u64, d.len() as u64, false, sha256(d)))
        .collect();
    assert_eq!(
        got,
        want_rows
            .iter()
            .map(|(p, s, st, t, h)| (*p, *s, *st, *t, h.as_str()))
            .collect::<Vec<_>>()
    );
    assert!(list.artifacts.iter().all(|a| a.mode & 0o600 == 0o600));
    // The symlink and the hard link are skipped, each with its reason.
    let skipped: Vec<(&str, &str)> = list
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, "out/hard");
    assert!(skipped[0].1.contains("hard link"), "{skipped:?}");
    assert_eq!(skipped[1].0, "out/link");
    assert!(skipped[1].1.contains("symlink"), "{skipped:?}");

    // Downloads: byte for byte, with their length and digest (the 2.5 MB one spans chunks).
    for (path, data) in &want {
        let r = download(&h.http, &h.base, job.id, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let headers = r.headers().clone();
        assert_eq!(
            headers["content-type"], "application/octet-stream",
            "{path}"
        );
        assert_eq!(
            headers["content-length"].to_str().unwrap(),
            data.len().to_string()
        );
        assert_eq!(headers["x-nekton-sha256"].to_str().unwrap(), sha256(data));
        assert!(
            headers["repr-digest"]
                .to_str()
                .unwrap()
                .starts_with("sha-256=:")
        );
        assert!(headers.get("x-nekton-truncated").is_none(), "{path}");
        let body = r.bytes().await.unwrap();
        assert!(body.as_ref() == data.as_slice(), "{path}: the bytes differ");
    }
    // Through the typed client too.
    let d = h.client.artifact(job.id, "out/sub/b.bin").await.unwrap();
    assert_eq!(d.sha256.as_deref(), Some(sha256(&want[2].1).as_str()));
    assert!(!d.truncated);

    // A path that is not an artifact (a skipped one included): 404 saying so.
    for missing in ["out/link", "out/nope.txt", "out"] {
        let r = download(&h.http, &h.base, job.id, missing).await;
        assert_eq!(r.status(), 404, "{missing}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no artifact"),
            "{body}"
        );
    }

    // Another tenant: 404 for both, like the job itself.
    let other = h.tenant_token("other", &["jobs:read"]).await;
    let (_, other_http) = h.clients_for(&other);
    let r = other_http
        .get(format!("{}/v1/jobs/{}/artifacts", h.base, job.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = download(&other_http, &h.base, job.id, "out/a.txt").await;
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("alpha"));

    // Bad patterns never reach a worker: 422 naming the pattern.
    for bad in [json!(["../etc/passwd"]), json!(["a//b"]), json!(["[x"])] {
        let r = h
            .http
            .post(format!("{}/v1/jobs", h.base))
            .json(&json!({"module": digest, "artifacts": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["field"], "artifacts[0]", "{body}");
    }

    // The CLI: a table, one file to stdout, and everything below a directory.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nekton"))
            .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
            .args(["jobs", "artifacts", "--server", &h.base])
            .args(args)
            .output()
            .unwrap()
    };
    let id = job.id.to_string();
    let out = cli(&[&id]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("PATH"), "{table}");
    assert!(
        lines.iter().any(|l| l.starts_with("out/a.txt")
            && l.contains(&sha256(b"alpha\n"))
            && l.ends_with("no")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("out/link") && l.contains("symlink")),
        "{table}"
    );
    let out = cli(&[&id, "out/a.txt"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"alpha\n");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("saved");
    let out = cli(&[&id, "-o", target.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (path, data) in &want {
        let written = std::fs::read(target.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(written == *data, "{path} differs");
    }
    let names: Vec<String> = std::fs::read_dir(target.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "only the artifacts are written: {names:?}");
    // A symlink planted in the directory is not followed: that file fails, the rest is written.
    let planted = tempfile::tempdir().unwrap();
    let again = dir.path().join("again");
    std::fs::create_dir_all(again.join("out")).unwrap();
    std::os::unix::fs::symlink(planted.path().join("x"), again.join("out/a.txt")).unwrap();
    let out = cli(&[&id, "-o", again.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symlink"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(planted.path()).unwrap().count(), 0);
    assert_eq!(
        std::fs::read(again.join("out/c.txt")).unwrap(),
        want[1].1.as_slice()
    );

    // An absolute pattern is listed with its `/`; downloads work with or without it.
    let abs = run(&h, &spec(&digest, &["/out/a.txt"])).await;
    let list = h.client.list_artifacts(abs.id).await.unwrap();
    assert_eq!(
        list.artifacts
            .iter()
            .map(|a| a.path.as_str())
            .collect::<Vec<_>>(),
        ["/out/a.txt"]
    );
    let r = download(&h.http, &h.base, abs.id, "out/a.txt").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"alpha\n");
    let mut d = h.client.artifact(abs.id, "/out/a.txt").await.unwrap();
    let mut body = Vec::new();
    use futures::StreamExt;
    while let Some(c) = d.body.next().await {
        body.extend_from_slice(&c.unwrap());
    }
    assert_eq!(body, b"alpha\n");

    // A job without artifacts: an empty listing.
    let plain = run(&h, &Harness::spec(&digest)).await;
    let list = h.client.list_artifacts(plain.id).await.unwrap();
    assert_eq!(
        list,
        ArtifactList {
            attempt: 1,
            artifacts: vec![],
            skipped: vec![]
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_over_the_per_file_cap_is_cut_and_flagged() {
    let h = Harness::start_with(|o| o.policy.artifact_file_bytes = 100_000).await;
    let digest = h.push(guest()).await;
    let job = run(&h, &spec(&digest, &["out/sub/*", "out/a.txt"])).await;
    let list = h.client.list_artifacts(job.id).await.unwrap();
    let want = expected_files();
    let big = &want[2].1;
    assert_eq!(list.artifacts.len(), 2, "{list:?}");
    let a = &list.artifacts[0];
    assert_eq!(
        (a.path.as_str(), a.size, a.stored_bytes, a.truncated),
        ("out/a.txt", 6, 6, false)
    );
    let b = &list.artifacts[1];
    assert_eq!(
        (b.path.as_str(), b.size, b.stored_bytes, b.truncated),
        ("out/sub/b.bin", 2_500_000, 100_000, true)
    );
    assert_eq!(b.sha256, sha256(&big[..100_000]));
    let r = download(&h.http, &h.base, job.id, "out/sub/b.bin").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-nekton-truncated"], "true");
    assert_eq!(r.headers()["x-nekton-size"], "2500000");
    assert_eq!(r.headers()["content-length"], "100000");
    let body = r.bytes().await.unwrap();
    assert!(
        body.as_ref() == &big[..100_000],
        "the first bytes, as stored"
    );

    // A 2 GiB artifact is cut at the cap and flagged (and its sha256 is of what was kept).
    let huge = JobSpec {
        args: vec!["huge".into()],
        ..spec(&digest, &["huge.bin"])
    };
    let job = run(&h, &huge).await;
    let list = h.client.list_artifacts(job.id).await.unwrap();
    assert_eq!(list.artifacts.len(), 1, "{list:?}");
    let a = &list.artifacts[0];
    assert_eq!(
        (a.path.as_str(), a.size, a.stored_bytes, a.truncated),
        ("huge.bin", 2 << 30, 100_000, true)
    );
    assert_eq!(a.sha256, sha256(&[0u8; 100_000]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suites_case_artifacts_are_under_cases_name() {
    let h = Harness::start().await;
    let digest = h.push(guest()).await;
    let r = h
        .http
        .post(format!("{}/v1/jobs", h.base))
        .json(&json!({
            "module": digest,
            "artifacts": ["out/a.txt", "out/link"],
            "tests": {"cases": [
                {"name": "one", "expect": {"stdout": "wrote\n"}},
                {"name": "two", "expect": {"stdout": "wrote\n"}},
            ]}
        }))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let job: Job = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let job = h.wait_finished(job.id, TIMEOUT).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let list = h.client.list_artifacts(job.id).await.unwrap();
    let paths: Vec<&str> = list.artifacts.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, ["cases/one/out/a.txt", "cases/two/out/a.txt"]);
    let skipped: Vec<&str> = list.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, ["cases/one/out/link", "cases/two/out/link"]);
    let r = download(&h.http, &h.base, job.id, "cases/two/out/a.txt").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"alpha\n");
}

/// A failed store does not lose the job: the attempt ends `internal_error` (an infrastructure
/// failure, so retried while attempts remain; here there is one) with a detail that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_store_ends_the_attempt_as_an_internal_error() {
    let h = Harness::start().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_artifacts() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON job_artifacts \
         FOR EACH STATEMENT EXECUTE FUNCTION refuse_artifacts();",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let digest = h.push(guest()).await;
    let job = h
        .submit(&JobSpec {
            max_attempts: Some(1),
            ..spec(&digest, &["out/a.txt"])
        })
        .await;
    let job = h.wait_finished(job.id, TIMEOUT).await;
    assert_eq!(job.state, JobState::Error, "{job:?}");
    let outcome = job.outcome.expect("an outcome");
    assert_eq!(outcome.reason, "internal_error");
    let detail = outcome.detail.unwrap_or_default();
    assert!(
        detail.contains("exited with code 0") && detail.contains("could not be stored"),
        "{detail}"
    );
    assert_eq!(h.count("job_artifacts").await, 0);
    assert_eq!(h.count("artifact_chunks").await, 0);
}

/// The store directly: fenced to the running attempt and worker, chunked, deleted by retention.
#[tokio::test]
async fn the_store_is_fenced_chunked_and_pruned() {
    let db = nekton::testing::TestDb::new().await;
    nekton::store::migrate(&db.pool).await.unwrap();
    let pool = &db.pool;
    let tenant = nekton::store::tenants::get_tenant(pool, "default")
        .await
        .unwrap()
        .expect("the default tenant");
    let id = Uuid::now_v7();
    let new = nekton::store::jobs::NewJob {
        id,
        queue: "default".into(),
        priority: 0,
        max_attempts: 1,
        labels: json!({}),
        program: "sha256:test".into(),
        spec: json!({"module": "sha256:test"}),
        spec_hash: vec![1],
        required_module: None,
        idempotency_key: None,
        traceparent: None,
    };
    nekton::store::jobs::submit(
        &nekton::store::Warm::new(pool.clone()),
        &tenant,
        new,
        Some("default"),
        None,
        nekton::store::jobs::SubmitCommit::Flushed,
    )
    .await
    .unwrap();
    let worker = Uuid::now_v7();
    let claimed = queue::claim(pool, worker, "default", 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    let data: Vec<u8> = (0..(2 * artifacts::CHUNK_BYTES + 7))
        .map(|i| (i % 251) as u8)
        .collect();
    let file = NewArtifact {
        path: "big",
        size: data.len() as u64,
        data: &data,
        truncated: false,
        sha256: Sha256::digest(&data).into(),
        mode: 0o100644,
    };
    let skipped = [NewSkipped {
        path: "",
        reason: "the walk stopped",
    }];
    // Another worker, or another attempt: nothing stored.
    for (w, attempt) in [(Uuid::now_v7(), 1), (worker, 2)] {
        assert_eq!(
            artifacts::insert(pool, id, attempt, w, &[file], &skipped)
                .await
                .unwrap(),
            Inserted::NotOurs
        );
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_artifacts")
            .fetch_one(pool)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        artifacts::insert(pool, id, 1, worker, &[file], &skipped)
            .await
            .unwrap(),
        Inserted::Stored
    );
    let (files, skipped_back) = artifacts::list(pool, id, 1).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].stored_bytes, data.len() as u64);
    assert_eq!(files[0].mode, 0o644, "permission bits only");
    assert_eq!(skipped_back[0].reason, "the walk stopped");
    let mut back = Vec::new();
    let mut seq = 0;
    while let Some(piece) = artifacts::chunk(pool, id, 1, files[0].idx, seq)
        .await
        .unwrap()
    {
        assert!(piece.len() <= artifacts::CHUNK_BYTES);
        back.extend(piece);
        seq += 1;
    }
    assert_eq!(seq, 3, "2 MiB + 7 bytes is three chunks");
    assert!(back == data);

    // Retention deletes them with the job.
    queue::complete(
        pool,
        worker,
        &[queue::Completion {
            job_id: id,
            attempt: 1,
            state: JobState::Succeeded,
            retry_after: None,
            reason: nekton::model::OutcomeReason::Exited,
            exit_code: Some(0),
            signal: None,
            detail: None,
            usage: nekton::model::Usage::default(),
            tests: None,
        }],
    )
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '8 days' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        queue::prune(pool, Duration::from_secs(7 * 86400), 100)
            .await
            .unwrap(),
        1
    );
    for table in ["job_artifacts", "job_artifacts_skipped", "artifact_chunks"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} after retention");
    }
}
