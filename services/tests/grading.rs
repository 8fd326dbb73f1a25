//! Test-suite jobs end to end on the Wasm backend: every verdict from one suite, a checker with
//! many right answers, the event stream and `GET /v1/jobs/{id}/cases`, fuel-determinism over ten
//! runs, a failed build, bad suites refused with 422. The program under test and the checker are
//! `tests/guests/solver.rs` and `checker.rs`, built here for `wasm32-wasip1` (installed by
//! `scripts/setup-test.sh`).

mod common;

use std::time::Duration;

use common::Harness;
use nekton::api::types::{JobState, Verdict};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(120);

fn guest(name: &str) -> Vec<u8> {
    common::guests::rust_guest(name)
}

/// A case judged by its own `trim` comparison.
fn case(name: &str, stdin: &str, stdout: &str) -> Value {
    json!({"name": name, "stdin": stdin, "expect": {"stdout": stdout}, "compare": {"mode": "trim"}})
}

/// The Wasm suite: each case is made to get one verdict.
fn wasm_suite(solver: &str, checker: &str) -> Value {
    json!({
        "module": solver,
        "limits": {"fuel": 50_000_000, "memory_bytes": 64 << 20, "output_bytes": 65536},
        "tests": {
            "checker": {"module": checker, "command": []},
            "cases": [
                case("sum", "sum 1 2 3", "6\n"),
                case("sum-trailing-space", "sum 10 20", "30   \n\n"),
                case("wrong", "sum 2 2", "5\n"),
                {"name": "float", "stdin": "div 1 3", "expect": {"stdout": "0.3333333"},
                 "compare": {"mode": "float", "abs_tolerance": 1e-6}},
                {"name": "float-wrong", "stdin": "div 2 3", "expect": {"stdout": "0.6"},
                 "compare": {"mode": "float", "abs_tolerance": 1e-6}},
                case("time", "loop", ""),
                {"name": "memory", "stdin": "alloc", "expect": {"stdout": ""},
                 "compare": {"mode": "exact"}, "limits": {"memory_bytes": 16 << 20}},
                case("crash", "crash", ""),
                case("exit-3", "exit 3", ""),
                {"name": "exit-3-expected", "stdin": "exit 3", "expect": {"exit_code": 3}},
                case("flood", "flood", ""),
                {"name": "perm", "stdin": "perm a b c", "expect": {"stdout": "a b c\n"}, "weight": 5},
                {"name": "perm-wrong", "stdin": "sum 1 1", "expect": {"stdout": "a b c\n"}},
            ]
        }
    })
}

fn expected_verdicts() -> Vec<(&'static str, Verdict)> {
    use Verdict::*;
    vec![
        ("sum", Accepted),
        ("sum-trailing-space", Accepted),
        ("wrong", WrongAnswer),
        ("float", Accepted),
        ("float-wrong", WrongAnswer),
        ("time", TimeLimit),
        ("memory", MemoryLimit),
        ("crash", RuntimeError),
        ("exit-3", RuntimeError),
        ("exit-3-expected", Accepted),
        ("flood", OutputLimit),
        ("perm", Accepted),
        ("perm-wrong", WrongAnswer),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wasm_suite_gives_each_case_its_verdict() {
    let h = Harness::start().await;
    let solver = h.push(guest("solver")).await;
    let checker = h.push(guest("checker")).await;
    let job = h.submit_json(&wasm_suite(&solver, &checker)).await;
    let job = h.wait_finished(job.id, TIMEOUT).await;

    let list = h.cases(job.id).await;
    let got: Vec<(String, Verdict)> = list
        .cases
        .iter()
        .map(|c| {
            let r = c.result.as_ref().expect("every case finished");
            (c.name.clone(), r.verdict)
        })
        .collect();
    let want: Vec<(String, Verdict)> = expected_verdicts()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    assert_eq!(got, want);

    let by_name = |n: &str| {
        list.cases
            .iter()
            .find(|c| c.name == n)
            .and_then(|c| c.result.clone())
            .unwrap()
    };
    // The first differing line, both sides.
    let wrong = by_name("wrong");
    let d = wrong.difference.expect("a difference");
    assert_eq!(
        (d.line, d.expected.as_str(), d.actual.as_str()),
        (1, "5", "4")
    );
    assert_eq!(wrong.stdout.text, "4\n");
    // The checker's message, and its rejection.
    assert_eq!(
        by_name("perm").checker_message.as_deref(),
        Some("ok: a permutation of the 3 expected tokens")
    );
    assert_eq!(
        by_name("perm-wrong").checker_message.as_deref(),
        Some("not a permutation of the expected tokens")
    );
    assert!(by_name("crash").detail.unwrap_or_default().len() > 3);
    assert_eq!(
        by_name("exit-3").detail.as_deref(),
        Some("exit code 3, expected 0")
    );
    assert!(by_name("flood").stdout.truncated);
    // Every case that ran has its own bill with fuel.
    for c in &list.cases {
        let usage = c.result.as_ref().unwrap().usage.clone().expect("a bill");
        assert!(
            usage.fuel_consumed.is_some_and(|f| f > 0),
            "{}: {usage:?}",
            c.name
        );
    }
    assert_eq!(
        by_name("time").usage.unwrap().fuel_consumed,
        Some(50_000_000),
        "the time limit is the fuel budget, used to the last unit"
    );

    // The summary: passed/total, the score by weight.
    assert!(job.suite, "the record says it is a suite");
    assert_eq!(job.state, JobState::Failed);
    let outcome = job.outcome.expect("an outcome");
    assert_eq!(outcome.reason, "tests_failed");
    let summary = outcome.tests.expect("a summary");
    assert_eq!((summary.passed, summary.total), (5, 13));
    assert_eq!((summary.score, summary.max_score), (9, 17));
    assert_eq!(summary.verdicts.get("wrong_answer"), Some(&3));

    // The event stream: a case_started and a case_finished per case, in order, then exit.
    let sse = h
        .http
        .get(format!("{}/v1/jobs/{}/logs", h.base, job.id))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.iter().filter(|e| **e == "case_started").count(), 13);
    assert_eq!(events.iter().filter(|e| **e == "case_finished").count(), 13);
    assert_eq!(events.last(), Some(&"exit"));
    let first_finished = sse
        .lines()
        .skip_while(|l| *l != "event: case_finished")
        .find_map(|l| l.strip_prefix("data: "))
        .expect("case_finished data");
    let first: Value = serde_json::from_str(first_finished).unwrap();
    assert_eq!(
        (first["name"].as_str(), first["verdict"].as_str()),
        (Some("sum"), Some("accepted"))
    );
    // The plain log has no events in it.
    let plain = h
        .http
        .get(format!("{}/v1/jobs/{}/logs", h.base, job.id))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!plain.contains("case_"), "{plain}");
}

/// With `fuel`, verdicts and fuel figures are the same on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_runs_of_a_fuel_suite_agree_exactly() {
    let h = Harness::start().await;
    let solver = h.push(guest("solver")).await;
    let checker = h.push(guest("checker")).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(h.submit_json(&wasm_suite(&solver, &checker)).await.id);
    }
    let mut runs: Vec<Vec<(String, Verdict, Option<u64>)>> = Vec::new();
    for id in ids {
        h.wait_finished(id, TIMEOUT).await;
        let list = h.cases(id).await;
        runs.push(
            list.cases
                .into_iter()
                .map(|c| {
                    let r = c.result.expect("finished");
                    (c.name, r.verdict, r.usage.and_then(|u| u.fuel_consumed))
                })
                .collect(),
        );
    }
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run, &runs[0], "run {i} differs from run 0");
    }
    assert!(runs[0].iter().all(|(_, _, fuel)| fuel.is_some()));
}

/// A failed build ends the job `compile_error` with the build's output, and no case runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_build_is_a_compile_error_and_runs_no_case() {
    let h = Harness::start().await;
    let solver = h.push(guest("solver")).await;
    // The "compiler" is the solver asked for an unknown command: it prints to stderr, exits 2.
    let body = json!({
        "module": solver,
        "stdin": "",
        "tests": {
            "build": {"module": solver, "command": []},
            "cases": [case("a", "sum 1", "1"), case("b", "sum 2", "2")]
        }
    });
    let job = h.submit_json(&body).await;
    let job = h.wait_finished(job.id, TIMEOUT).await;
    assert_eq!(job.state, JobState::Failed);
    let outcome = job.outcome.expect("an outcome");
    assert_eq!(outcome.reason, "compile_error", "{outcome:?}");
    let summary = outcome.tests.expect("a summary");
    let build = summary.build.expect("the build's result");
    assert!(!build.succeeded);
    assert_eq!(build.exit_code, Some(2));
    assert_eq!(build.output.text, "unknown command \"\"\n");
    assert_eq!(summary.passed, 0);
    assert_eq!(summary.verdicts.get("skipped"), Some(&2));
    let list = h.cases(job.id).await;
    assert!(list.cases.iter().all(|c| {
        let r = c.result.as_ref().unwrap();
        r.verdict == Verdict::Skipped && r.usage.is_none()
    }));
    // The compiler's message is in the job's log as well.
    let log = h
        .http
        .get(format!("{}/v1/jobs/{}/logs", h.base, job.id))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(log, "unknown command \"\"\n");
}

/// A Wasm build's files are where every case starts; a case's writes are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wasm_cases_start_from_the_build_and_never_see_each_other() {
    let h = Harness::start().await;
    let solver = h.push(guest("solver")).await;
    let body = json!({
        "module": solver,
        "tests": {
            "build": {"module": solver, "command": ["write", "built.txt"]},
            "parallelism": 2,
            "cases": [
                case("sees-the-build", "cat built.txt", "mine"),
                case("fresh-1", "write scratch.txt", "fresh"),
                case("fresh-2", "write scratch.txt", "fresh"),
                case("fresh-3", "write scratch.txt", "fresh"),
                case("build-file-is-there", "write built.txt", "seen"),
            ]
        }
    });
    let job = h
        .wait_finished(h.submit_json(&body).await.id, TIMEOUT)
        .await;
    let list = h.cases(job.id).await;
    for c in &list.cases {
        let r = c.result.as_ref().unwrap();
        assert_eq!(r.verdict, Verdict::Accepted, "{}: {r:?}", c.name);
    }
    let build = list.build.expect("the build's result");
    assert!(build.succeeded, "{build:?}");
    assert_eq!(build.output.text, "fresh\n");
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.outcome);
}

/// `stop_on_first_failure` skips what follows the first failure; all accepted is `succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_on_first_failure_and_an_all_accepted_suite() {
    let h = Harness::start().await;
    let solver = h.push(guest("solver")).await;
    let body = json!({
        "module": solver,
        "tests": {
            "stop_on_first_failure": true,
            "cases": [case("ok", "sum 1", "1"), case("bad", "sum 1", "2"), case("after", "sum 3", "3")]
        }
    });
    let job = h
        .wait_finished(h.submit_json(&body).await.id, TIMEOUT)
        .await;
    let verdicts: Vec<Verdict> = h
        .cases(job.id)
        .await
        .cases
        .into_iter()
        .map(|c| c.result.unwrap().verdict)
        .collect();
    assert_eq!(
        verdicts,
        [Verdict::Accepted, Verdict::WrongAnswer, Verdict::Skipped]
    );

    let all = json!({
        "module": solver,
        "tests": {"parallelism": 3, "cases": [
            case("a", "sum 1", "1"), case("b", "sum 1 1", "2"), case("c", "sum 1 2", "3"),
            case("d", "sum 2 2", "4")
        ]}
    });
    let job = h.wait_finished(h.submit_json(&all).await.id, TIMEOUT).await;
    assert_eq!(job.state, JobState::Succeeded);
    let outcome = job.outcome.unwrap();
    assert_eq!(
        (outcome.reason.as_str(), outcome.exit_code),
        ("exited", Some(0))
    );
    assert_eq!(outcome.tests.unwrap().passed, 4);
}

/// Bad suites are refused with 422 naming the field; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_suites_are_refused_with_the_field() {
    let h = Harness::start().await;
    let solver = h.push(guest("solver")).await;
    let missing = format!("sha256:{}", "0".repeat(64));
    for (suite, field) in [
        (json!({"cases": []}), "tests.cases"),
        (
            json!({"cases": [{"name": "a"}, {"name": "a"}]}),
            "tests.cases[1].name",
        ),
        (json!({"cases": [{"name": "a/b"}]}), "tests.cases[0].name"),
        (
            json!({"cases": [{"name": "a"}], "parallelism": 0}),
            "tests.parallelism",
        ),
        (
            json!({"cases": [{"name": "a", "compare": {"mode": "float", "abs_tolerance": -1}}]}),
            "tests.cases[0].compare",
        ),
        (
            json!({"cases": [{"name": "a", "limits": {"pids": 3}}]}),
            "tests.cases[0].limits.pids",
        ),
        (
            json!({"cases": [{"name": "a"}], "build": {"command": ["cc"]}}),
            "tests.build.module",
        ),
        (
            json!({"cases": [{"name": "a"}], "build": {"module": missing}}),
            "tests.build.module",
        ),
        (
            json!({"cases": [{"name": "a", "stdin": "***", "stdin_encoding": "base64"}]}),
            "tests.cases[0].stdin",
        ),
    ] {
        let r = h
            .http
            .post(format!("{}/v1/jobs", h.base))
            .json(&json!({"module": solver, "tests": suite}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{suite}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{suite}: {body}");
    }
    assert_eq!(h.count("jobs").await, 0);
    // A job that is not a suite has no cases.
    let plain = h
        .submit_json(&json!({"module": solver, "stdin": "sum 1"}))
        .await;
    assert!(!plain.suite);
    let r = h
        .http
        .get(format!("{}/v1/jobs/{}/cases", h.base, plain.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a test suite")
    );
}

/// `nekton test SUITE.yaml`: a live table, exit 1 when a case fails, a JUnit report a parser
/// reads with one testcase per case and the failures typed by verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nekton_test_prints_the_table_and_writes_junit() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("solver.wasm"), guest("solver")).unwrap();
    std::fs::write(dir.path().join("three.in"), "sum 1 2").unwrap();
    std::fs::write(dir.path().join("three.out"), "3\n").unwrap();
    let suite = dir.path().join("adder.yaml");
    std::fs::write(
        &suite,
        "module: solver.wasm\n\
         limits: {fuel: 10000000}\n\
         tests:\n\
         \x20 cases:\n\
         \x20   - {name: one, stdin: sum 1, expect: {stdout: \"1\"}}\n\
         \x20   - {name: three, stdin_from: three.in, expect: {stdout_from: three.out}}\n\
         \x20   - {name: wrong, stdin: sum 2 2, expect: {stdout: \"5\"}}\n\
         \x20   - {name: spin, stdin: loop}\n",
    )
    .unwrap();
    let junit = dir.path().join("report.xml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nekton"))
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["test", "--server", &h.base, "--junit"])
        .arg(&junit)
        .arg(&suite)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("CASE "), "{stdout}");
    let verdict_of = |name: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no row for {name} in\n{stdout}"))
    };
    assert_eq!(verdict_of("one"), "accepted");
    assert_eq!(verdict_of("three"), "accepted");
    assert_eq!(verdict_of("wrong"), "wrong_answer");
    assert_eq!(verdict_of("spin"), "time_limit");
    assert!(
        stdout.contains(r#"line 1: expected "5", got "4""#),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"2 of 4 passed, score 2/4"));

    let xml = std::fs::read_to_string(&junit).expect("the JUnit report");
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suite_el = root
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite");
    assert_eq!(suite_el.attribute("name"), Some("adder"));
    assert_eq!(suite_el.attribute("tests"), Some("4"));
    assert_eq!(suite_el.attribute("failures"), Some("2"));
    let cases: Vec<(String, Option<String>)> = suite_el
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|c| {
            (
                c.attribute("name").unwrap().to_string(),
                c.children()
                    .find(|n| n.has_tag_name("failure"))
                    .and_then(|f| f.attribute("type").map(String::from)),
            )
        })
        .collect();
    assert_eq!(
        cases,
        [
            ("one".to_string(), None),
            ("three".to_string(), None),
            ("wrong".to_string(), Some("wrong_answer".to_string())),
            ("spin".to_string(), Some("time_limit".to_string())),
        ]
    );

    // All accepted: exit 0.
    let ok = dir.path().join("ok.json");
    std::fs::write(
        &ok,
        r#"{"module": "solver.wasm", "tests": {"cases": [{"name": "a", "stdin": "sum 4", "expect": {"stdout": "4"}}]}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nekton"))
        .env("NEKTON_TOKEN", h.admin_token.as_deref().unwrap())
        .args(["test", "--server", &h.base])
        .arg(&ok)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
