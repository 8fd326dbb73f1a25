//! `nekton test SUITE.yaml`: runs a test suite as one job, prints a live table of its cases and
//! exits 0 only when every case was accepted; `--junit FILE` writes the JUnit XML report CI
//! systems read.
//!
//! The suite file is a job spec with a `tests` section (the API's `JobSpec`), in YAML or JSON,
//! with conveniences the CLI resolves before submitting, all relative to the suite file's
//! directory: a file entry may give `from: PATH` instead of `content` (sent as base64), a case
//! `stdin_from:` and `expect: {stdout_from:}`, and a `module` (the job's, `tests.build.module`,
//! `tests.checker.module`) may be a local `.wasm` file, uploaded first.
//!
//! The JUnit writer is a few lines over a string with XML escaping (the report has one fixed
//! shape): not worth an XML crate.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use clap::Args;
use futures::StreamExt as _;
use serde_json::Value;

use super::client::{Client, LogStreamEvent};
use super::commands::{EXIT_SERVICE_ERROR, ServerArgs, exit_code_for};
use crate::api::types::{CaseList, CaseResult, JobSpec, JobState, Verdict};
use crate::grading::{BuildResult, SuiteEvent};

/// `nekton test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The suite: a job spec with a `tests` section, in YAML (`.yaml`, `.yml`) or JSON. A file
    /// entry may say `from: PATH` instead of `content`, a case `stdin_from: PATH` and
    /// `expect: {stdout_from: PATH}`; a `module` may be a local `.wasm` file (uploaded first).
    /// Paths are relative to the suite file.
    #[arg(value_name = "SUITE")]
    pub suite: PathBuf,
    /// Also write a JUnit XML report of the cases to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

pub async fn test(args: TestArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    let text = std::fs::read_to_string(&args.suite)
        .with_context(|| format!("cannot read the suite {}", args.suite.display()))?;
    let mut value = parse_suite_text(&args.suite, &text)?;
    let dir = args
        .suite
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    resolve_local(&mut value, &dir, &client).await?;
    let spec: JobSpec = serde_json::from_value(value)
        .with_context(|| format!("{} is not a job spec", args.suite.display()))?;
    let Some(tests) = &spec.tests else {
        bail!(
            "{} has no `tests` section: a suite is a job spec with `tests: {{cases: [...]}}`",
            args.suite.display()
        );
    };
    let names: Vec<String> = tests.cases.iter().map(|c| c.name.clone()).collect();
    let job = client
        .submit(&spec, None)
        .await
        .context("submitting the suite failed")?;
    eprintln!("nekton: suite job {} ({} cases)", job.id, names.len());

    let table = Table::new(&names);
    table.header();
    let mut events = Box::pin(client.follow_logs(job.id, None));
    let mut exit = None;
    while let Some(ev) = events.next().await {
        match ev.with_context(|| {
            format!(
                "the suite goes on on the server: see `nekton jobs get {}`",
                job.id
            )
        })? {
            // The build's output: the compiler's messages, as written.
            LogStreamEvent::Log { bytes, .. } => {
                eprint!("{}", String::from_utf8_lossy(&bytes));
            }
            LogStreamEvent::Suite { event, .. } => match *event {
                SuiteEvent::BuildFinished(b) => table.build(&b),
                SuiteEvent::CaseFinished(c) => table.row(&c),
                SuiteEvent::CaseStarted(_) => {}
            },
            LogStreamEvent::Exit { event, .. } => {
                exit = Some(event);
                break;
            }
            LogStreamEvent::State { .. } => {}
        }
    }
    let Some(exit) = exit else {
        bail!(
            "the event stream of job {} ended early; the suite goes on: see `nekton jobs get {}`",
            job.id,
            job.id
        );
    };
    let outcome = exit.outcome.as_ref();
    match outcome.and_then(|o| o.tests.as_ref()) {
        Some(s) => println!(
            "{} of {} passed, score {}/{}",
            s.passed, s.total, s.score, s.max_score
        ),
        None => {
            if let Some(o) = outcome {
                eprintln!(
                    "nekton: job {} {}: {}{}",
                    job.id,
                    exit.state.as_str(),
                    o.reason,
                    o.detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    if let Some(path) = &args.junit {
        let list: CaseList = serde_json::from_value(
            client
                .call_json(
                    reqwest::Method::GET,
                    &format!("v1/jobs/{}/cases", job.id),
                    None,
                )
                .await
                .context("reading the cases for the JUnit report failed")?,
        )
        .context("the server's case list did not parse")?;
        let name = args
            .suite
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "suite".into());
        std::fs::write(path, junit_xml(&name, &job.id.to_string(), &list))
            .with_context(|| format!("cannot write the JUnit report {}", path.display()))?;
    }
    Ok(match (exit.state, outcome.map(|o| o.reason.as_str())) {
        (JobState::Succeeded, _) => 0,
        (_, Some("tests_failed" | "compile_error")) => 1,
        (state, _) if state.is_terminal() => exit_code_for(state, outcome).max(1),
        _ => EXIT_SERVICE_ERROR,
    })
}

/// A suite file's text as JSON: YAML unless the name ends in `.json`.
fn parse_suite_text(path: &Path, text: &str) -> Result<Value> {
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).with_context(|| format!("{} is not valid JSON", path.display()))
    } else {
        serde_yaml_ng::from_str(text)
            .with_context(|| format!("{} is not valid YAML", path.display()))
    }
}

/// Replaces the CLI's `from` conveniences with content, and local modules with digests.
async fn resolve_local(value: &mut Value, dir: &Path, client: &Client) -> Result<()> {
    let Some(job) = value.as_object_mut() else {
        bail!("a suite file holds one job spec (a mapping with `module` or `image` and `tests`)");
    };
    resolve_module(job.get_mut("module"), dir, client).await?;
    resolve_files(job.get_mut("files"), dir)?;
    if let Some(tests) = job.get_mut("tests").and_then(Value::as_object_mut) {
        for step in ["build", "checker"] {
            if let Some(s) = tests.get_mut(step).and_then(Value::as_object_mut) {
                resolve_module(s.get_mut("module"), dir, client).await?;
                resolve_files(s.get_mut("files"), dir)?;
            }
        }
        if let Some(cases) = tests.get_mut("cases").and_then(Value::as_array_mut) {
            for case in cases.iter_mut().filter_map(Value::as_object_mut) {
                resolve_files(case.get_mut("files"), dir)?;
                if let Some(from) = case.remove("stdin_from") {
                    let path = from_path(&from, dir, "stdin_from")?;
                    case.insert("stdin".into(), b64(&path)?);
                    case.insert("stdin_encoding".into(), "base64".into());
                }
                if let Some(expect) = case.get_mut("expect").and_then(Value::as_object_mut)
                    && let Some(from) = expect.remove("stdout_from")
                {
                    let path = from_path(&from, dir, "expect.stdout_from")?;
                    expect.insert("stdout".into(), b64(&path)?);
                    expect.insert("stdout_encoding".into(), "base64".into());
                }
            }
        }
    }
    Ok(())
}

fn from_path(v: &Value, dir: &Path, what: &str) -> Result<PathBuf> {
    let p = v
        .as_str()
        .ok_or_else(|| anyhow!("`{what}` must be a file path"))?;
    Ok(dir.join(p))
}

fn b64(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into())
}

fn resolve_files(files: Option<&mut Value>, dir: &Path) -> Result<()> {
    let Some(files) = files.and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for f in files.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(from) = f.remove("from") {
            let path = from_path(&from, dir, "from")?;
            f.insert("content".into(), b64(&path)?);
            f.insert("encoding".into(), "base64".into());
        }
    }
    Ok(())
}

/// A `module` that is not a digest is a local Wasm file: uploaded, replaced by its digest.
async fn resolve_module(module: Option<&mut Value>, dir: &Path, client: &Client) -> Result<()> {
    let Some(m) = module else { return Ok(()) };
    let Some(s) = m.as_str() else { return Ok(()) };
    if s.starts_with("sha256:") {
        return Ok(());
    }
    let path = dir.join(s);
    // `.wat` is assembled here, like `nekton run` does.
    let wasm = super::commands::read_local_module(&path).await?;
    let digest = client
        .push_module(wasm)
        .await
        .with_context(|| format!("uploading {} failed", path.display()))?
        .digest;
    *m = digest.into();
    Ok(())
}

/// The live table: one row per finished case.
struct Table {
    width: usize,
}

impl Table {
    fn new(names: &[String]) -> Self {
        Table {
            width: names
                .iter()
                .map(|n| n.chars().count())
                .max()
                .unwrap_or(4)
                .clamp(4, 40),
        }
    }

    fn header(&self) {
        println!(
            "{:<w$}  {:<13}  {:>9}  {:>10}  DETAIL",
            "CASE",
            "VERDICT",
            "TIME",
            "MEMORY",
            w = self.width
        );
    }

    fn build(&self, b: &BuildResult) {
        let time = b.usage.wall_ms.map(ms).unwrap_or_default();
        if b.succeeded {
            println!("build: ok ({time})");
        } else {
            println!(
                "build: failed ({}){}",
                b.reason,
                b.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
        }
    }

    fn row(&self, c: &CaseResult) {
        let (time, memory) = match &c.usage {
            Some(u) => (
                u.wall_ms.map(ms).unwrap_or_default(),
                u.memory_peak_bytes
                    .or(u.wasm_memory_peak_bytes)
                    .map(bytes)
                    .unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        println!(
            "{:<w$}  {:<13}  {:>9}  {:>10}  {}",
            c.name,
            c.verdict.as_str(),
            time,
            memory,
            case_detail(c),
            w = self.width
        );
    }
}

fn case_detail(c: &CaseResult) -> String {
    if let Some(d) = &c.difference {
        return format!(
            "line {}: expected {:?}, got {:?}{}",
            d.line,
            d.expected,
            d.actual,
            d.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    match (&c.detail, &c.checker_message) {
        (Some(d), Some(m)) => format!("{d}: {m}"),
        (Some(d), None) => d.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => String::new(),
    }
}

fn ms(v: u64) -> String {
    if v < 10_000 {
        format!("{v} ms")
    } else {
        format!("{:.1} s", v as f64 / 1000.0)
    }
}

fn bytes(v: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if v < 1024 * 1024 {
        format!("{} KiB", v / 1024)
    } else {
        format!("{:.1} MiB", v as f64 / MIB)
    }
}

/// Text for XML: `&<>"'` escaped, characters XML 1.0 cannot hold dropped.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML report of a suite's cases: one `<testsuite>` (named after the suite file), a
/// `<testcase>` per case (and one named `build` when the suite has a build step). A case that
/// was not accepted is a `<failure>` whose type is its verdict; `checker_error` is an `<error>`
/// (the judge failed, not the program); `skipped` is `<skipped>`. Its stdout and stderr (cut as
/// the API keeps them) are the case's `<system-out>` and `<system-err>`.
pub fn junit_xml(suite: &str, job: &str, list: &CaseList) -> String {
    let results: Vec<&CaseResult> = list
        .cases
        .iter()
        .filter_map(|c| c.result.as_ref())
        .collect();
    let count = |f: &dyn Fn(Verdict) -> bool| results.iter().filter(|r| f(r.verdict)).count();
    let build_failed = list.build.as_ref().is_some_and(|b| !b.succeeded);
    let failures = count(&|v| {
        !matches!(
            v,
            Verdict::Accepted | Verdict::Skipped | Verdict::CheckerError
        )
    }) + usize::from(build_failed);
    let errors = count(&|v| v == Verdict::CheckerError);
    let skipped = list.cases.len() - results.len() + count(&|v| v == Verdict::Skipped);
    let tests = list.cases.len() + usize::from(list.build.is_some());
    let secs = |ms: Option<u64>| format!("{:.3}", ms.unwrap_or(0) as f64 / 1000.0);
    let total_ms: u64 = results
        .iter()
        .filter_map(|r| r.usage.as_ref().and_then(|u| u.wall_ms))
        .sum::<u64>()
        + list
            .build
            .as_ref()
            .and_then(|b| b.usage.wall_ms)
            .unwrap_or(0);
    let suite = xml_escape(suite);
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="nekton" tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{}">"#,
        secs(Some(total_ms))
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="{suite}" tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{}">"#,
        secs(Some(total_ms))
    );
    let _ = writeln!(
        x,
        r#"    <properties><property name="nekton.job" value="{}"/></properties>"#,
        xml_escape(job)
    );
    if let Some(b) = &list.build {
        let _ = write!(
            x,
            r#"    <testcase name="build" classname="{suite}" time="{}">"#,
            secs(b.usage.wall_ms)
        );
        if !b.succeeded {
            let _ = write!(
                x,
                r#"<failure type="compile_error" message="{}">{}</failure>"#,
                xml_escape(b.detail.as_deref().unwrap_or(&b.reason)),
                xml_escape(&b.output.text)
            );
        }
        let _ = writeln!(x, "</testcase>");
    }
    for c in &list.cases {
        let name = xml_escape(&c.name);
        let Some(r) = &c.result else {
            let _ = writeln!(
                x,
                r#"    <testcase name="{name}" classname="{suite}" time="0.000"><skipped message="not run"/></testcase>"#
            );
            continue;
        };
        let _ = write!(
            x,
            r#"    <testcase name="{name}" classname="{suite}" time="{}">"#,
            secs(r.usage.as_ref().and_then(|u| u.wall_ms))
        );
        let message = xml_escape(&case_detail(r));
        let kind = r.verdict.as_str();
        match r.verdict {
            Verdict::Accepted => {}
            Verdict::Skipped => {
                let _ = write!(x, r#"<skipped message="{message}"/>"#);
            }
            Verdict::CheckerError => {
                let _ = write!(x, r#"<error type="{kind}" message="{message}"/>"#);
            }
            _ => {
                let body = match &r.difference {
                    Some(d) => format!(
                        "line {}\nexpected: {}\nactual:   {}",
                        d.line, d.expected, d.actual
                    ),
                    None => String::new(),
                };
                let _ = write!(
                    x,
                    r#"<failure type="{kind}" message="{message}">{}</failure>"#,
                    xml_escape(&body)
                );
            }
        }
        if !r.stdout.text.is_empty() {
            let _ = write!(x, "<system-out>{}</system-out>", xml_escape(&r.stdout.text));
        }
        if !r.stderr.text.is_empty() {
            let _ = write!(x, "<system-err>{}</system-err>", xml_escape(&r.stderr.text));
        }
        let _ = writeln!(x, "</testcase>");
    }
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grading::{CappedText, CaseState, CaseStatus, Difference};

    fn result(name: &str, verdict: Verdict) -> CaseStatus {
        CaseStatus {
            index: 0,
            name: name.into(),
            state: CaseState::Finished,
            result: Some(CaseResult {
                index: 0,
                name: name.into(),
                verdict,
                weight: 1,
                detail: Some("why <here> & \"there\"".into()),
                exit_code: Some(0),
                signal: None,
                difference: (verdict == Verdict::WrongAnswer).then(|| Difference {
                    line: 2,
                    expected: "5".into(),
                    actual: "4\u{1}".into(),
                    note: None,
                }),
                checker_message: None,
                usage: None,
                stdout: CappedText {
                    text: "out".into(),
                    truncated: false,
                },
                stderr: CappedText::default(),
            }),
        }
    }

    #[test]
    fn the_junit_report_counts_and_escapes() {
        let list = CaseList {
            attempt: 1,
            build: None,
            cases: vec![
                result("ok", Verdict::Accepted),
                result("wa", Verdict::WrongAnswer),
                result("tle", Verdict::TimeLimit),
                result("judge", Verdict::CheckerError),
                result("later", Verdict::Skipped),
            ],
        };
        let x = junit_xml("my <suite>", "j1", &list);
        assert!(x.contains(
            r#"<testsuite name="my &lt;suite&gt;" tests="5" failures="2" errors="1" skipped="1""#
        ));
        assert!(
            x.contains(
                r#"<failure type="wrong_answer" message="line 2: expected &quot;5&quot;, got &quot;4\u{1}&quot;">line 2"#
            ),
            "{x}"
        );
        assert!(x.contains(r#"<failure type="time_limit" message="why &lt;here&gt;"#));
        assert!(x.contains(
            r#"<error type="checker_error" message="why &lt;here&gt; &amp; &quot;there&quot;"/>"#
        ));
        assert!(x.contains("expected: 5\nactual:   4</failure>"), "{x}");
        assert!(x.contains("<system-out>out</system-out>"));
        assert!(!x.contains('\u{1}'));
    }

    #[test]
    fn yaml_and_json_suites_read_the_same() {
        let yaml = "module: sha256:00\ntests:\n  cases:\n    - name: a\n      stdin: \"1\"\n";
        let json = r#"{"module": "sha256:00", "tests": {"cases": [{"name": "a", "stdin": "1"}]}}"#;
        assert_eq!(
            parse_suite_text(Path::new("s.yaml"), yaml).unwrap(),
            parse_suite_text(Path::new("s.json"), json).unwrap()
        );
        assert!(
            parse_suite_text(Path::new("s.yml"), "a: [")
                .unwrap_err()
                .to_string()
                .contains("not valid YAML")
        );
    }
}
