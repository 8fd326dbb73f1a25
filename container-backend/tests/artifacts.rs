//! Artifacts of container jobs against the real kernel: files collected from the run's writable
//! layer after the job ended, exact bytes, links refused, caps that never read a whole file.
//! Root only; a missing prerequisite fails (never skips).

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::time::{Duration, Instant};

use container_support::*;
use runtime_core::{Artifact, ArtifactReport, Artifacts, ExecRequest};
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn artifacts(patterns: &[&str], max_file: u64, max_total: u64) -> Artifacts {
    Artifacts {
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        max_file_bytes: max_file,
        max_total_bytes: max_total,
        max_files: 100,
    }
}

fn in_work(mut r: ExecRequest) -> ExecRequest {
    r.container.workdir = Some("/work".into());
    r
}

/// Like `Finished::assert_exited(0)`, without printing the collected bytes.
#[track_caller]
fn exited_0(ran: &Finished) {
    let o = &ran.report.outcome;
    assert_eq!(
        (o.reason, o.exit_code),
        (runtime_core::OutcomeReason::Exited, Some(0)),
        "{o:?}\nstdout: {}\nstderr: {}",
        ran.out(),
        ran.err()
    );
}

/// A report without the bytes: paths, sizes, flags and the skipped entries.
struct Summary<'a>(&'a ArtifactReport);

impl std::fmt::Debug for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<_> = self
            .0
            .files
            .iter()
            .map(|a| (&a.path, a.size, a.data.len(), a.truncated))
            .collect();
        write!(f, "files {files:?}, skipped {:?}", self.0.skipped)
    }
}

fn find<'a>(report: &'a ArtifactReport, path: &str) -> &'a Artifact {
    report
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} not collected: {:?}", Summary(report)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jobs_files_come_back_exactly_and_links_do_not() {
    let env = TestEnv::new();
    let img = env.busybox("artifacts", &[], default_config()).await;
    let a = b"<testsuite name=\"a\" tests=\"3\"/>\n".to_vec();
    let b = b"<testsuite name=\"b\" failures=\"1\">\xff\x00 bytes are bytes</testsuite>".to_vec();
    let bin: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // The job makes its files (from inputs, byte for byte), a symlink to a host path, and a
    // hard link to an image file it did not create (overlayfs copies it up: two links in the
    // writable layer).
    let mut r = in_work(sh(
        &img,
        "mkdir -p reports out/deep/er && cp in/a reports/a.xml && cp in/b reports/b.xml \
         && cp in/bin out/deep/er/data.bin && ln -s /etc/passwd reports/evil.xml \
         && ln /bin/busybox reports/link.xml && echo abs > /tmp/abs.txt && rm -r in \
         && stat -c %h reports/link.xml",
    ));
    r.files = vec![
        file("in/a", &a, None),
        file("in/b", &b, None),
        file("in/bin", &bin, Some(0o600)),
    ];
    r.artifacts = artifacts(
        &["reports/*.xml", "out/**", "/tmp/abs.txt"],
        1 << 20,
        8 << 20,
    );
    let ran = run(&env, r).await;
    exited_0(&ran);
    assert_eq!(
        ran.out(),
        "2\n",
        "the hard link has two names in the container"
    );
    let got = &ran.report.artifacts;
    let paths: Vec<&str> = got.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/tmp/abs.txt",
            "out/deep/er/data.bin",
            "reports/a.xml",
            "reports/b.xml"
        ],
        "{:?}",
        Summary(got)
    );
    for (path, want) in [
        ("reports/a.xml", &a),
        ("reports/b.xml", &b),
        ("out/deep/er/data.bin", &bin),
    ] {
        let f = find(got, path);
        assert_eq!(sha256(&f.data), sha256(want), "{path}");
        assert_eq!(f.size, want.len() as u64, "{path}");
        assert!(!f.truncated, "{path}");
    }
    assert_eq!(find(got, "out/deep/er/data.bin").mode & 0o777, 0o600);
    assert_eq!(find(got, "/tmp/abs.txt").data, b"abs\n");
    let reason = |path: &str| {
        got.skipped
            .iter()
            .find(|s| s.path == path)
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{path} not in skipped: {:?}", Summary(got)))
    };
    assert!(
        reason("reports/evil.xml").contains("symlink"),
        "{:?}",
        Summary(got)
    );
    assert!(
        reason("reports/link.xml").contains("hard link"),
        "{:?}",
        Summary(got)
    );
    assert_eq!(got.skipped.len(), 2, "{:?}", Summary(got));
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_sparse_files_are_cut_at_the_caps_without_being_read() {
    let env = TestEnv::new();
    let img = env.busybox("sparse", &[], default_config()).await;
    // 2 GiB and 1 TiB of holes on a 64 MiB writable layer: reading either whole would take
    // seconds to minutes.
    let mut r = in_work(sh(
        &img,
        "truncate -s 2G big.bin && truncate -s 1099511627776 huge.bin && echo small > small.txt",
    ));
    r.artifacts = artifacts(&["*"], 1 << 20, (3 << 20) / 2);
    let t = Instant::now();
    let ran = run(&env, r).await;
    let took = t.elapsed();
    exited_0(&ran);
    let got = &ran.report.artifacts;
    let big = find(got, "big.bin");
    assert_eq!(big.size, 2 << 30);
    assert_eq!(big.data.len(), 1 << 20, "cut at the per-file cap");
    assert!(big.truncated && big.data.iter().all(|&b| b == 0));
    // Sorted order: big.bin, huge.bin, small.txt; the run's cap (1.5 MiB) leaves huge.bin half
    // a MiB and small.txt nothing — both flagged.
    let huge = find(got, "huge.bin");
    assert_eq!(huge.size, 1 << 40);
    assert_eq!(huge.data.len(), 1 << 19, "cut at the run's cap");
    assert!(huge.truncated);
    let small = find(got, "small.txt");
    assert_eq!(
        (small.size, small.data.len(), small.truncated),
        (6, 0, true)
    );
    assert!(
        took < Duration::from_secs(10),
        "collecting must not read the files: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_case_on_a_base_collects_its_own_writes_only() {
    let env = TestEnv::new();
    let img = env.busybox("case-artifacts", &[], default_config()).await;
    let mut build = in_work(sh(&img, "echo prog > prog && echo old > old"));
    build.chain.keep = true;
    let built = run(&env, build).await;
    exited_0(&built);
    let base = built.report.kept.clone().expect("kept");

    let mut case = in_work(sh(
        &img,
        "echo pass > result.txt && echo more >> prog && rm old",
    ));
    case.chain.base = Some(base.clone());
    case.artifacts = artifacts(&["**"], 1 << 20, 1 << 20);
    let ran = run(&env, case).await;
    exited_0(&ran);
    let got = &ran.report.artifacts;
    let paths: Vec<&str> = got.files.iter().map(|f| f.path.as_str()).collect();
    // The base's untouched files are not the case's; a base file it changed is (copied up).
    assert_eq!(paths, ["prog", "result.txt"], "{:?}", Summary(got));
    assert_eq!(find(got, "prog").data, b"prog\nmore\n");
    // What it deleted is a whiteout in its layer: listed, never read.
    assert_eq!(got.skipped.len(), 1, "{:?}", Summary(got));
    assert_eq!(got.skipped[0].path, "old");
    assert!(
        got.skipped[0].reason.contains("character device"),
        "{:?}",
        Summary(got)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_program_never_ran_collects_nothing() {
    let env = TestEnv::new();
    let img = env.busybox("unstarted", &[], default_config()).await;
    let mut r = request(&img, &["no-such-command"]);
    r.artifacts = artifacts(&["out/*"], 1 << 20, 1 << 20);
    let ran = run(&env, r).await;
    assert_eq!(
        ran.report.outcome.reason,
        runtime_core::OutcomeReason::SpecError
    );
    // The layer exists (the setup got that far) but holds nothing the pattern matches.
    assert!(
        ran.report.artifacts.files.is_empty(),
        "{:?}",
        Summary(&ran.report.artifacts)
    );
}
