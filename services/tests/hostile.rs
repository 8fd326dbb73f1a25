//! Hostile container jobs through the API, where the stored record matters: several at once
//! beside an honest job, each with the verdict, exit/signal and usage the record must show; then
//! the worker still takes jobs. The full suite is `container-backend/tests/hostile.rs`; the C probes
//! come from `container-backend/tests/hostile/*.c`. Root only; a missing prerequisite fails.

mod common;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;
#[path = "../../container-backend/tests/probe_support/mod.rs"]
mod probe_support;

use std::time::Duration;

use common::Harness;
use image_store::media_types;
use image_support::{
    Layer, Pusher, Registry, busybox_rootfs_tar, config_json, host_arch, require_root,
};
use nekton::api::types::{Job, JobSpec, JobState, LimitsSpec};
use nekton::cli::StdStream;

const WAIT: Duration = Duration::from_secs(120);

fn sh(image: &str, script: &str, limits: Option<LimitsSpec>) -> JobSpec {
    JobSpec {
        image: Some(image.to_string()),
        args: vec!["sh".into(), "-c".into(), script.into()],
        limits,
        ..Default::default()
    }
}

async fn output(h: &Harness, job: &Job, stream: StdStream) -> String {
    let bytes = h
        .client
        .plain_log_bytes(job.id, Some(stream))
        .await
        .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_jobs_get_the_right_records_and_the_worker_keeps_working() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path());
    let host = registry.host();
    let pusher = Pusher::new(&host);
    let h = Harness::start_with(|o| o.images.insecure_registries = vec![host.clone()]).await;
    let layers = vec![
        Layer::gzip(&busybox_rootfs_tar()),
        Layer::gzip(&probe_support::probes_layer()),
    ];
    let config = config_json(&host_arch(), &layers, &["sh"]);
    pusher
        .image("hostile", "1", &layers, &config, media_types::OCI_CONFIG)
        .await;
    let image = format!("{host}/hostile:1");

    let limits = |f: &dyn Fn(&mut LimitsSpec)| {
        let mut l = LimitsSpec::default();
        f(&mut l);
        Some(l)
    };
    let specs = [
        // Forbidden syscalls: the job itself succeeds; each call failed.
        sh(&image, "/probe/probe syscalls", None),
        // kill -9 -1 kills only its own processes.
        sh(
            &image,
            "sleep 1000 & sleep 0.1; kill -9 -1; echo survived",
            None,
        ),
        // Another ABI's syscall: killed by SIGSYS.
        sh(&image, "exec /probe/probe int80", None),
        // A fork bomb: held at its pids limit, stopped at its wall limit.
        sh(
            &image,
            "exec /probe/probe bomb",
            limits(&|l| {
                l.pids = Some(32);
                l.wall_time_ms = Some(2000);
            }),
        ),
        // NULs without end: cut at output_bytes, flagged.
        sh(
            &image,
            "cat /dev/zero",
            limits(&|l| l.output_bytes = Some(1 << 20)),
        ),
        // A setuid-root binary run as uid 1000.
        JobSpec {
            user: Some("1000:1000".into()),
            ..sh(&image, "/probe/probe-suid ids", None)
        },
        // The honest job.
        sh(&image, "echo honest; sleep 0.5; echo done", None),
    ];
    let mut submitted = Vec::new();
    for s in &specs {
        submitted.push(h.submit(s).await);
    }
    let mut jobs = Vec::new();
    for j in &submitted {
        jobs.push(h.wait_finished(j.id, WAIT).await);
    }
    let reason = |j: &Job| {
        j.outcome
            .as_ref()
            .map(|o| o.reason.to_string())
            .unwrap_or_default()
    };

    let j = &jobs[0];
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.outcome);
    let out = output(&h, j, StdStream::Stdout).await;
    for line in [
        "unshare_user=EPERM",
        "clone_user=EPERM",
        "clone3_user=ENOSYS",
        "keyctl=EPERM",
        "bpf=EPERM",
        "userfaultfd=EPERM",
        "io_uring_setup=EPERM",
        "mount=EPERM",
        "ptrace_traceme=EPERM",
        "pthread_create=OK",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }

    let j = &jobs[1];
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.outcome);
    assert_eq!(output(&h, j, StdStream::Stdout).await, "survived\n");
    assert_eq!(
        j.usage.as_ref().unwrap().pids_limit_hit,
        Some(false),
        "{:?}",
        j.usage
    );

    let j = &jobs[2];
    assert_eq!(j.state, JobState::Failed);
    let o = j.outcome.as_ref().unwrap();
    assert_eq!(
        (o.reason.as_str(), o.signal),
        ("signaled", Some(libc::SIGSYS))
    );

    let j = &jobs[3];
    assert_eq!(j.state, JobState::Failed, "{:?}", j.outcome);
    assert_eq!(reason(j), "wall_timeout", "{:?}", j.outcome);
    assert_eq!(
        j.usage.as_ref().unwrap().pids_peak,
        Some(32),
        "{:?}",
        j.usage
    );
    // The bill says the limit was hit, through the API.
    assert_eq!(
        j.usage.as_ref().unwrap().pids_limit_hit,
        Some(true),
        "{:?}",
        j.usage
    );

    let j = &jobs[4];
    assert_eq!(j.state, JobState::Failed, "{:?}", j.outcome);
    assert_eq!(reason(j), "output_limit", "{:?}", j.outcome);
    let u = j.usage.as_ref().unwrap();
    assert_eq!(
        (u.stdout_bytes, u.stdout_truncated),
        (1 << 20, true),
        "{u:?}"
    );
    let bytes = h
        .client
        .plain_log_bytes(j.id, Some(StdStream::Stdout))
        .await
        .unwrap();
    assert_eq!(bytes.len(), 1 << 20);
    assert!(bytes.iter().all(|&b| b == 0));

    let j = &jobs[5];
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.outcome);
    assert_eq!(
        output(&h, j, StdStream::Stdout).await,
        "uid=1000 euid=1000 gid=1000 egid=1000\n"
    );

    let j = &jobs[6];
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.outcome);
    assert_eq!(output(&h, j, StdStream::Stdout).await, "honest\ndone\n");

    // The worker still takes jobs.
    let j = h.submit(&sh(&image, "echo after", None)).await;
    let j = h.wait_finished(j.id, WAIT).await;
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.outcome);
    assert_eq!(output(&h, &j, StdStream::Stdout).await, "after\n");
}
