//! Test suites in containers, end to end: an image with a C compiler (tcc and the C library,
//! taken from this host: `apt-get install tcc`, done by scripts/setup-test.sh) in a local
//! registry; the suite's build compiles `tests/guests/solver.c` and `checker.c` once, and 20
//! cases run on the build's result, each made to get one verdict. Root only (namespaces,
//! overlayfs, cgroups); a missing prerequisite fails with its name.

mod common;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;
#[path = "../../image-store/tests/image_support/tcc.rs"]
mod tcc;

use std::path::Path;
use std::time::Duration;

use common::Harness;
use image_store::media_types;
use image_support::{
    Layer, Pusher, Registry, TarBuilder, busybox_rootfs_tar, config_json, host_arch, require_root,
};
use nekton::api::types::{Job, JobState, Verdict};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(180);
/// A layer with tcc and what it and the programs it builds need at run time, from this host
/// (the file list is shared with `load-tests grading`).
fn tcc_layer() -> Vec<u8> {
    let entries = tcc::tcc_entries().unwrap_or_else(|e| panic!("{e}"));
    let mut t = TarBuilder::new();
    for entry in &entries {
        match entry {
            tcc::Entry::Dir { path, mode } => t.dir(path, *mode),
            tcc::Entry::File { path, data, mode } => t.file(path, data, *mode),
            tcc::Entry::Symlink { path, target } => t.symlink(path, target),
        };
    }
    t.finish()
}

struct Env {
    _registry: Registry,
    h: Harness,
    image: String,
    _tmp: tempfile::TempDir,
}

impl Env {
    async fn start() -> Self {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::start(tmp.path());
        let host = registry.host();
        let pusher = Pusher::new(&host);
        let layers = vec![
            Layer::gzip(&busybox_rootfs_tar()),
            Layer::gzip(&tcc_layer()),
        ];
        let config = config_json(&host_arch(), &layers, &["sh"]);
        pusher
            .image("tcc", "1", &layers, &config, media_types::OCI_CONFIG)
            .await;
        let h = Harness::start_with(|o| o.images.insecure_registries = vec![host.clone()]).await;
        Env {
            image: format!("{host}/tcc:1"),
            _registry: registry,
            h,
            _tmp: tmp,
        }
    }

    async fn submit(&self, body: &Value) -> Job {
        let job = self.h.submit_json(body).await;
        self.h.wait_finished(job.id, WAIT).await
    }

    async fn log(&self, id: uuid::Uuid) -> String {
        self.h
            .http
            .get(format!("{}/v1/jobs/{id}/logs", self.h.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn source(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/guests")
            .join(name),
    )
    .unwrap()
}

fn case(name: &str, stdin: &str, stdout: &str) -> Value {
    json!({"name": name, "stdin": stdin, "expect": {"stdout": stdout}, "compare": {"mode": "trim"}})
}

/// The job: the sources in /work, cases run `./prog` (through `sh -c`, so a case can also run a
/// shell command).
fn job(image: &str, build: &[&str], cases: Vec<Value>, checker: bool) -> Value {
    let mut tests = json!({"build": {"command": build}, "cases": cases, "parallelism": 4});
    if checker {
        tests["checker"] = json!({"command": ["./checker"]});
    }
    json!({
        "image": image,
        "workdir": "/work",
        "entrypoint": ["/bin/sh", "-c"],
        "args": ["./prog"],
        "files": [
            {"path": "solver.c", "content": source("solver.c")},
            {"path": "checker.c", "content": source("checker.c")},
        ],
        "limits": {"wall_time_ms": 10000, "cpu_time_ms": 5000, "memory_bytes": 256 << 20,
                   "output_bytes": 65536},
        "tests": tests,
    })
}

const BUILD: &[&str] = &[
    "sh",
    "-c",
    "tcc -o prog solver.c && tcc -o checker checker.c && echo built >> builds.log && echo compiled",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_c_suite_builds_once_and_each_case_gets_its_verdict() {
    let env = Env::start().await;
    use Verdict::*;
    let cases: Vec<(Value, Verdict)> = vec![
        (case("sum", "sum 1 2 3", "6\n"), Accepted),
        (
            case("sum-trailing-space", "sum 10 20", "30   \n\n"),
            Accepted,
        ),
        (
            case("sum-big", "sum 1000000000000 1", "1000000000001"),
            Accepted,
        ),
        (case("wrong", "sum 2 2", "5\n"), WrongAnswer),
        (case("wrong-line-2", "sum 2 2", "4\nmore\n"), WrongAnswer),
        (
            json!({"name": "tokens", "stdin": "perm a b", "expect": {"stdout": "b\n  a"},
                   "compare": {"mode": "tokens"}}),
            Accepted,
        ),
        (
            json!({"name": "float", "stdin": "div 1 3", "expect": {"stdout": "0.3333333"},
                   "compare": {"mode": "float", "abs_tolerance": 1e-6}}),
            Accepted,
        ),
        (
            json!({"name": "float-wrong", "stdin": "div 2 3", "expect": {"stdout": "0.6"},
                   "compare": {"mode": "float", "abs_tolerance": 1e-6}}),
            WrongAnswer,
        ),
        (
            json!({"name": "cpu-time", "stdin": "loop", "expect": {"stdout": ""},
                   "compare": {"mode": "exact"}, "limits": {"cpu_time_ms": 500}}),
            TimeLimit,
        ),
        (
            json!({"name": "wall-time", "args": ["busybox sleep 10"], "expect": {"stdout": ""},
                   "compare": {"mode": "exact"}, "limits": {"wall_time_ms": 500}}),
            TimeLimit,
        ),
        (
            json!({"name": "memory", "stdin": "alloc", "expect": {"stdout": ""},
                   "compare": {"mode": "exact"}, "limits": {"memory_bytes": 32 << 20}}),
            MemoryLimit,
        ),
        (case("crash", "crash", ""), RuntimeError),
        (case("exit-3", "exit 3", ""), RuntimeError),
        (
            json!({"name": "exit-3-expected", "stdin": "exit 3", "expect": {"exit_code": 3},
                   "compare": {"mode": "trim"}}),
            Accepted,
        ),
        (case("flood", "flood", ""), OutputLimit),
        (
            json!({"name": "perm", "stdin": "perm a b c", "expect": {"stdout": "a b c\n"},
                   "weight": 5}),
            Accepted,
        ),
        (
            json!({"name": "perm-wrong", "stdin": "sum 1 1", "expect": {"stdout": "a b c\n"}}),
            WrongAnswer,
        ),
        (case("fresh-1", "write scratch.txt", "fresh"), Accepted),
        (case("fresh-2", "write scratch.txt", "fresh"), Accepted),
        (
            json!({"name": "built-once", "args": ["cat builds.log"],
                   "expect": {"stdout": "built\n"}, "compare": {"mode": "exact"}}),
            Accepted,
        ),
    ];
    assert_eq!(cases.len(), 20);
    let body = job(
        &env.image,
        BUILD,
        cases.iter().map(|(c, _)| c.clone()).collect(),
        true,
    );
    let done = env.submit(&body).await;
    let list = env.h.cases(done.id).await;
    let build = list.build.clone().expect("the build's result");
    assert!(build.succeeded, "{build:?}");
    let got: Vec<(String, Verdict)> = list
        .cases
        .iter()
        .map(|c| {
            let r = c
                .result
                .as_ref()
                .unwrap_or_else(|| panic!("{} did not finish", c.name));
            (c.name.clone(), r.verdict)
        })
        .collect();
    let want: Vec<(String, Verdict)> = cases
        .iter()
        .map(|(c, v)| (c["name"].as_str().unwrap().to_string(), *v))
        .collect();
    let details: Vec<String> = list
        .cases
        .iter()
        .map(|c| format!("{}: {:?}", c.name, c.result.as_ref().map(|r| &r.detail)))
        .collect();
    assert_eq!(got, want, "{details:#?}");

    let by_name = |n: &str| {
        list.cases
            .iter()
            .find(|c| c.name == n)
            .and_then(|c| c.result.clone())
            .unwrap()
    };
    let d = by_name("wrong").difference.expect("a difference");
    assert_eq!(
        (d.line, d.expected.as_str(), d.actual.as_str()),
        (1, "5", "4")
    );
    let d = by_name("wrong-line-2").difference.expect("a difference");
    assert_eq!(
        (d.line, d.expected.as_str(), d.actual.as_str()),
        (2, "more", "")
    );
    assert_eq!(by_name("crash").signal, Some(11));
    assert_eq!(
        by_name("crash").detail.as_deref(),
        Some("killed by signal 11 (SIGSEGV)")
    );
    assert_eq!(
        by_name("perm").checker_message.as_deref(),
        Some("ok: a permutation of the 3 expected tokens")
    );
    assert!(by_name("flood").stdout.truncated);
    // Each case has its own bill.
    let mem = by_name("memory").usage.unwrap();
    assert!(
        mem.memory_peak_bytes.is_some_and(|m| m >= 16 << 20),
        "{mem:?}"
    );
    // The compiler ran once: one line in builds.log (the `built-once` case), one `compiled` in
    // the job's log.
    assert_eq!(env.log(done.id).await, "compiled\n");
    assert_eq!(build.output.text, "compiled\n");

    let outcome = done.outcome.expect("an outcome");
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(outcome.reason, "tests_failed");
    let summary = outcome.tests.expect("a summary");
    assert_eq!((summary.passed, summary.total), (10, 20));
    assert_eq!((summary.score, summary.max_score), (14, 24));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compile_error_ends_the_job_with_the_compilers_message() {
    let env = Env::start().await;
    let mut body = job(
        &env.image,
        &["sh", "-c", "tcc -o prog broken.c"],
        vec![case("a", "sum 1", "1"), case("b", "sum 2", "2")],
        false,
    );
    body["files"] = json!([{"path": "broken.c", "content": "int main(void) { return 0 }\n"}]);
    let done = env.submit(&body).await;
    assert_eq!(done.state, JobState::Failed);
    let outcome = done.outcome.expect("an outcome");
    assert_eq!(outcome.reason, "compile_error", "{outcome:?}");
    let build = outcome.tests.unwrap().build.expect("the build");
    assert!(!build.succeeded);
    assert_eq!(build.exit_code, Some(1));
    assert!(
        build.output.text.contains("broken.c:1: error"),
        "{}",
        build.output.text
    );
    for c in env.h.cases(done.id).await.cases {
        let r = c.result.expect("finished as skipped");
        assert_eq!((r.verdict, r.usage), (Verdict::Skipped, None), "{}", c.name);
    }
}
